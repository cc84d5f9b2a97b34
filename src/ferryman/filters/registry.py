"""RouteSpec -> the route's filters, in nginx's phase order. Built once per worker at
load; filters that keep state across requests get it from `FilterState`, which the
worker builds once (shared-memory zones live there)."""

from __future__ import annotations

from typing import Any, TypeVar

from ferryman.config.schema import LimitConnSpec, LimitReqSpec, RouteSpec
from ferryman.errors import ConfigError
from ferryman.filters.access import AccessFilter, compile_rules
from ferryman.filters.auth import build_auth_filter
from ferryman.filters.base import RequestFilter, SharedZones
from ferryman.filters.conn_limit import LimitConnFilter
from ferryman.filters.rate_limit import LimitReqFilter
from ferryman.filters.zone import LimitZone
from ferryman.proxy.variables import Template

__all__ = ["FilterState", "build_filters"]


class FilterState:
    """Worker-wide state filters share: limit zones by name (filters/zone.py LimitZone),
    made by the master before it forks (workers.py), or by app.build_worker for a
    process alone."""

    def __init__(self, zones: dict[str, Any] | None = None) -> None:
        self.zones: dict[str, Any] = zones or {}
        # Zones marked `shared` keep their state here (cluster/limiter.py), set per
        # worker by app.build_worker when the configuration has a `cluster`.
        self.shared: SharedZones | None = None

    def shared_for(self, kind: str) -> SharedZones | None:
        """`shared` as filter kind `kind` uses it (the cluster counts local fallbacks
        per kind)."""
        return None if self.shared is None else self.shared.for_filter(kind)

    def __repr__(self) -> str:
        return f"FilterState(zones={sorted(self.zones)})"


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
        filters.append(build_auth_filter(spec.auth_basic, f"{where}.auth_basic"))
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
