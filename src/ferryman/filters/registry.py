"""RouteSpec -> the route's filters, in nginx's phase order. Built once per worker at
load; filters that keep state across requests get it from `FilterState`, which the
master builds once per configuration generation, before it forks (shared-memory zones
and the htpasswd files' users live there)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from ferryman.config.schema import Config, LimitConnSpec, LimitReqSpec, RouteSpec
from ferryman.errors import ConfigError
from ferryman.filters.access import AccessFilter, compile_rules
from ferryman.filters.auth import BasicAuthFilter, read_htpasswd
from ferryman.filters.base import RequestFilter, SharedZones
from ferryman.filters.conn_limit import LimitConnFilter
from ferryman.filters.rate_limit import LimitReqFilter
from ferryman.filters.zone import LimitZone, open_zones
from ferryman.proxy.variables import Template

__all__ = ["FilterState", "build_filters", "read_user_files"]

Users = dict[bytes, bytes]


class FilterState:
    """Worker-wide state filters share: limit zones by name (filters/zone.py LimitZone)
    and the users of each htpasswd file by path, made by the master before it forks
    (workers.py), or by app.build_worker for a process alone."""

    def __init__(
        self, zones: dict[str, Any] | None = None, users: dict[str, Users] | None = None
    ) -> None:
        self.zones: dict[str, Any] = zones or {}
        # The master reads every user file once per generation (read_user_files) and
        # its workers use what it checked: a worker that read the file itself would,
        # once the file went bad after the check, fail to start (on a reload's spawn or
        # a restart after a crash) and be restarted again and again, serving nothing.
        self.users: dict[str, Users] = users or {}
        # Zones marked `shared` keep their state here (cluster/limiter.py), set per
        # worker by app.build_worker when the configuration has a `cluster`.
        self.shared: SharedZones | None = None

    def shared_for(self, kind: str) -> SharedZones | None:
        """`shared` as filter kind `kind` uses it (the cluster counts local fallbacks
        per kind)."""
        return None if self.shared is None else self.shared.for_filter(kind)

    @classmethod
    def alone(cls, config: Config, users: dict[str, Users] | None = None) -> FilterState:
        """For a process alone (tests, `check`): zones nobody else maps, same interface;
        `users` as already read (read_user_files), else read when a filter needs them."""
        return cls(open_zones(config.limit_zones, config.source), users)

    def users_in(self, path: str, where: str) -> Users:
        """The users of htpasswd file `path`: as the master read it, or read now (a
        process alone); ConfigError naming `where` and the file's line if it is bad."""
        users = self.users.get(path)
        if users is None:
            users = self.users[path] = read_htpasswd(path, where)
        return users

    def __repr__(self) -> str:
        return f"FilterState(zones={sorted(self.zones)}, users={sorted(self.users)})"


def read_user_files(config: Config) -> dict[str, Users]:
    """Every htpasswd file `config` names (auth_basic in any route, a forward proxy's
    auth), each read and checked once; ConfigError for the first bad one."""
    out: dict[str, Users] = {}

    def walk(routes: Iterable[RouteSpec], where: str) -> None:
        for ri, rs in enumerate(routes):
            here = f"{where}.routes[{ri}]"
            if rs.auth_basic is not None and rs.auth_basic.user_file not in out:
                path = rs.auth_basic.user_file
                out[path] = read_htpasswd(path, f"{here}.auth_basic.user_file")
            walk(rs.routes, here)

    for si, server in enumerate(config.servers):
        where = f"{config.source}: servers[{si}]"
        walk(server.routes, where)
        auth = server.forward.auth if server.forward is not None else None
        if auth is not None and auth.user_file not in out:
            out[auth.user_file] = read_htpasswd(auth.user_file, f"{where}.forward.auth.user_file")
    return out


def build_filters(
    spec: RouteSpec, state: FilterState, where: str, user_vars: frozenset[str]
) -> tuple[RequestFilter, ...]:
    """The filters a route runs, in order: limit_req, limit_conn, access, auth_basic."""
    filters: list[RequestFilter] = []
    # preaccess: limit_req, then limit_conn, so a delayed request holds no connection slot.
    filters.extend(_limit_filters(spec, state, where, user_vars))
    # access (nginx's access phase; `satisfy all`): the address rules, then basic auth,
    # so a client the rules refuse gets 403 without being asked for a password.
    if spec.access:
        rules = compile_rules(spec.access, f"{where}.access")
        filters.append(AccessFilter(rules, spec.deny_status, spec.deny_body.encode("utf-8")))
    if spec.auth_basic is not None:
        auth = spec.auth_basic
        users = state.users_in(auth.user_file, f"{where}.auth_basic.user_file")
        filters.append(BasicAuthFilter(auth.realm, users))
    return tuple(filters)


def _limit_filters(
    spec: RouteSpec, state: FilterState, where: str, user_vars: frozenset[str]
) -> list[RequestFilter]:
    """One filter for all the route's limit_req (nginx weighs them together), one for
    all its limit_conn."""
    out: list[RequestFilter] = []
    if spec.limit_req:
        reqs = [_zone_of(s, "req", state, where, user_vars) for s in spec.limit_req]
        remote = state.shared_for("limit_req")
        out.append(LimitReqFilter(reqs, spec.limit_req_status, spec.limit_dry_run, remote))
    if spec.limit_conn:
        conns = [_zone_of(s, "conn", state, where, user_vars) for s in spec.limit_conn]
        remote = state.shared_for("limit_conn")
        out.append(LimitConnFilter(conns, spec.limit_conn_status, spec.limit_dry_run, remote))
    return out


_Spec = TypeVar("_Spec", LimitReqSpec, LimitConnSpec)


def _zone_of(
    limit: _Spec, kind: str, state: FilterState, where: str, user_vars: frozenset[str]
) -> tuple[_Spec, LimitZone, Template]:
    # The loaders check zone names; this guards configs built in code.
    zone = state.zones.get(limit.zone)
    if not isinstance(zone, LimitZone) or zone.spec.kind != kind:
        raise ConfigError(f"{where}.limit_{kind}", f"no limit_{kind} zone {limit.zone!r}")
    return limit, zone, zone.compile_key(user_vars)
