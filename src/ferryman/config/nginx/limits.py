"""Translate functions for nginx's limit_req and limit_conn modules: the zones
(`limit_req_zone`, `limit_conn_zone`, http level), the limits (`limit_req`,
`limit_conn`) and their `*_status` / `*_dry_run` settings, and the freeze step that
turns a level's effective settings into the route's `limit_*` fields.

Inheritance follows ngx_http_limit_req_merge_conf / ngx_http_limit_conn_merge_conf:
the limits are a list an inner level inherits whole only when it has none of its own;
the status and dry-run switches are inherited unless set. A zone may be defined after
the limits that use it (nginx binds them once the whole file is read), so zone names
are checked at freeze. Knows nothing about how the runtime limits.
"""

from __future__ import annotations

import re
from typing import Any

from ferryman.config.nginx import values
from ferryman.config.nginx.draft import ConfigDraft, Level, Scope
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.schema import LimitConnSpec, LimitReqSpec, LimitZoneSpec
from ferryman.errors import ConfigError

__all__ = [
    "limit_conn",
    "limit_conn_zone",
    "limit_dry_run",
    "limit_req",
    "limit_req_zone",
    "limit_status",
    "limit_zones",
    "route_limits",
]

_ZONE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_RATE = re.compile(r"([0-9]{1,9})(r/s|r/m)?")
# nginx refuses a zone under 8 pages (`zone "x" is too small`).
_MIN_ZONE = 8 * 4096
_STATUS_LOW, _STATUS_HIGH = 400, 599  # ngx_http_limit_*_status_bounds
_MAX_CONN = 65535  # nginx keeps the count in 16 bits
_DEFAULT_STATUS = 503
_KINDS = {"limit_req_zone": "req", "limit_conn_zone": "conn"}


def limit_req_zone(scope: Scope, stmt: Stmt) -> None:
    """`limit_req_zone KEY zone=NAME:SIZE rate=Nr/s|Nr/m` (rate 1r/s if not given)."""
    name, size, rate = None, 0, 1.0
    for arg in stmt.args[1:]:
        if arg.startswith("zone="):
            name, size = _zone_param(stmt, arg)
        elif arg.startswith("rate="):
            rate = _rate(stmt, arg)
        else:
            raise stmt.error(f'invalid parameter "{arg}"')
    _add_zone(scope.config, stmt, name, size, rate)


def limit_conn_zone(scope: Scope, stmt: Stmt) -> None:
    """`limit_conn_zone KEY zone=NAME:SIZE`."""
    name, size = None, 0
    for arg in stmt.args[1:]:
        if not arg.startswith("zone="):
            raise stmt.error(f'invalid parameter "{arg}"')
        name, size = _zone_param(stmt, arg)
    _add_zone(scope.config, stmt, name, size, 0.0)


def _zone_param(stmt: Stmt, arg: str) -> tuple[str, int]:
    name, colon, size_text = arg[5:].partition(":")
    if not colon or not _ZONE_NAME.fullmatch(name):
        raise stmt.error(f'invalid zone size "{arg}"')
    size = values.size(stmt, size_text)
    if size < _MIN_ZONE:
        raise stmt.error(f'zone "{arg}" is too small')
    return name, size


def _rate(stmt: Stmt, arg: str) -> float:
    match = _RATE.fullmatch(arg[5:])
    if match is None or int(match.group(1)) == 0:
        raise stmt.error(f'invalid rate "{arg}"')
    count = int(match.group(1))
    # nginx keeps rate * 1000 / 60 for r/m; the schema keeps requests per second.
    return count / 60 if match.group(2) == "r/m" else float(count)


def _add_zone(draft: ConfigDraft, stmt: Stmt, name: str | None, size: int, rate: float) -> None:
    if name is None:
        raise stmt.error(f'"{stmt.name}" must have "zone" parameter')
    kind = _KINDS[stmt.name]
    for other, other_stmt in draft.limit_zones:
        if other.name != name:
            continue
        if other.kind != kind:
            raise stmt.error(
                f'the shared memory zone "{name}" is already declared for a different use'
            )
        raise stmt.error(
            f'{stmt.name} "{name}" is already bound to key "{other.key}" (at {other_stmt.where})'
        )
    spec = LimitZoneSpec(name=name, key=stmt.args[0], kind=kind, rate=rate, size=size)
    draft.limit_zones.append((spec, stmt))


def limit_req(scope: Scope, stmt: Stmt) -> None:
    """`limit_req zone=NAME [burst=N] [nodelay | delay=N]`; the last of nodelay and
    delay= wins, as in nginx."""
    zone, burst, delay, nodelay = None, 0, 0, False
    for arg in stmt.args:
        if arg.startswith("zone="):
            zone = arg[5:]
        elif arg.startswith("burst="):
            burst = _positive(stmt, arg, "burst")
        elif arg.startswith("delay="):
            delay, nodelay = _positive(stmt, arg, "delay"), False
        elif arg == "nodelay":
            delay, nodelay = 0, True
        else:
            raise stmt.error(f'invalid parameter "{arg}"')
    if zone is None:
        raise stmt.error('"limit_req" must have "zone" parameter')
    _append(scope.the_level(), stmt, zone, LimitReqSpec(zone, burst, nodelay, delay))


def limit_conn(scope: Scope, stmt: Stmt) -> None:
    """`limit_conn ZONE N`."""
    zone, count = stmt.args
    if not _ZONE_NAME.fullmatch(zone):
        raise stmt.error(f'invalid zone name "{zone}"')
    if not re.fullmatch(r"[0-9]{1,15}", count) or int(count) == 0:
        raise stmt.error(f'invalid number of connections "{count}"')
    if int(count) > _MAX_CONN:
        raise stmt.error(f"connection limit must be less {_MAX_CONN + 1}")
    _append(scope.the_level(), stmt, zone, LimitConnSpec(zone, int(count)))


def _positive(stmt: Stmt, arg: str, what: str) -> int:
    text = arg.partition("=")[2]
    if not re.fullmatch(r"[0-9]{1,9}", text) or int(text) == 0:
        raise stmt.error(f'invalid {what} value "{arg}"')
    return int(text)


def _append(level: Level, stmt: Stmt, zone: str, spec: LimitReqSpec | LimitConnSpec) -> None:
    if any(other.zone == zone for other, _ in level.arrays.get(stmt.name, [])):
        raise stmt.error(f'"{stmt.name}" directive is duplicate')
    level.append(stmt.name, (spec, stmt))


def limit_status(scope: Scope, stmt: Stmt) -> None:
    """limit_req_status, limit_conn_status."""
    text = stmt.args[0]
    if not re.fullmatch(r"[0-9]{1,15}", text):
        raise values.invalid(stmt, text)
    if not _STATUS_LOW <= int(text) <= _STATUS_HIGH:
        raise stmt.error(f"value must be between {_STATUS_LOW} and {_STATUS_HIGH}")
    scope.the_level().values[stmt.name] = int(text)


def limit_dry_run(scope: Scope, stmt: Stmt) -> None:
    """limit_req_dry_run, limit_conn_dry_run."""
    scope.the_level().values[stmt.name] = (values.flag(stmt, stmt.args[0]), stmt)


# --- freeze ------------------------------------------------------------------------


def limit_zones(draft: ConfigDraft) -> tuple[LimitZoneSpec, ...]:
    return tuple(spec for spec, _ in draft.limit_zones)


def route_limits(level: Level, draft: ConfigDraft) -> dict[str, Any]:
    """The RouteSpec fields for a location's effective limit settings."""
    kinds = {spec.name: spec.kind for spec, _ in draft.limit_zones}
    reqs: list[tuple[LimitReqSpec, Stmt]] = level.array("limit_req")
    conns: list[tuple[LimitConnSpec, Stmt]] = level.array("limit_conn")
    for spec, stmt in reqs:
        _check_zone(stmt, spec.zone, kinds)
    for conn, stmt in conns:
        _check_zone(stmt, conn.zone, kinds)
    return {
        "limit_req": tuple(spec for spec, _ in reqs),
        "limit_req_status": level.value("limit_req_status", _DEFAULT_STATUS),
        "limit_conn": tuple(spec for spec, _ in conns),
        "limit_conn_status": level.value("limit_conn_status", _DEFAULT_STATUS),
        "limit_dry_run": _dry_run(level, bool(reqs), bool(conns)),
    }


def _check_zone(stmt: Stmt, zone: str, kinds: dict[str, str]) -> None:
    kind = kinds.get(zone)
    want = "req" if stmt.name == "limit_req" else "conn"
    if kind is None:
        raise stmt.error(
            f'zero size shared memory zone "{zone}" (no "limit_{want}_zone" defines it)'
        )
    if kind != want:
        raise stmt.error(f'the shared memory zone "{zone}" is already declared for a different use')


def _dry_run(level: Level, has_req: bool, has_conn: bool) -> bool:
    """The schema has one dry-run switch per route: where a location has both kinds of
    limit, nginx's two switches must agree."""
    req: tuple[bool, Stmt | None] = level.value("limit_req_dry_run", (False, None))
    conn: tuple[bool, Stmt | None] = level.value("limit_conn_dry_run", (False, None))
    if has_req and has_conn and req[0] != conn[0]:
        stmt = req[1] if req[0] else conn[1]
        assert stmt is not None  # the one that is on was set somewhere
        raise ConfigError(
            stmt.where,
            '"limit_req_dry_run" and "limit_conn_dry_run" differ for a location with both'
            " limits; Ferryman has one dry-run switch for both",
        )
    if has_req:
        return req[0]
    return conn[0] if has_conn else False
