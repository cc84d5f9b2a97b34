"""Translate functions for nginx's realip module: set_real_ip_from, real_ip_header,
real_ip_recursive, and the freeze step that turns what a server's level says into
`ServerSpec.real_ip`.

nginx allows the three in http, server and location. Ferryman decides the client
address once per request, as soon as the server is known (nginx's post-read phase), so
they are accepted at the http and server levels and refused in a location with a
clear error. Inheritance is nginx's: set_real_ip_from is a list an inner level
replaces whole; the other two are single values.

Knows nothing about how the address is chosen (filters/real_ip.py).
"""

from __future__ import annotations

from ferryman.config.nginx import values
from ferryman.config.nginx.draft import Context, Level, Scope
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.nginx.values import unsupported
from ferryman.config.schema import RealIpSpec
from ferryman.filters.real_ip import HEADERS, parse_network

__all__ = ["real_ip_header", "real_ip_recursive", "real_ip_spec", "set_real_ip_from"]

# nginx's default real_ip_header (ngx_http_realip_merge_loc_conf).
_DEFAULT_HEADER = "X-Real-IP"
_CANONICAL = {name.lower(): name for name in HEADERS}


def _level(scope: Scope, stmt: Stmt) -> Level:
    if scope.context is Context.LOCATION:
        raise unsupported(
            stmt,
            f'"{stmt.name}" in a location is not supported: Ferryman decides the client'
            " address once per server; put it at the http or server level",
        )
    return scope.the_level()


def set_real_ip_from(scope: Scope, stmt: Stmt) -> None:
    level = _level(scope, stmt)
    text = stmt.args[0]
    if text.startswith("unix:"):
        raise unsupported(stmt, '"set_real_ip_from unix:" is not supported yet')
    try:
        parse_network(text)
    except ValueError:
        raise values.invalid(stmt, text, "want an IP address or CIDR") from None
    level.append("set_real_ip_from", text)


def real_ip_header(scope: Scope, stmt: Stmt) -> None:
    level = _level(scope, stmt)
    name = _CANONICAL.get(stmt.args[0].lower())
    if name is None:
        raise unsupported(
            stmt,
            f'"real_ip_header {stmt.args[0]}" is not supported (X-Real-IP, X-Forwarded-For,'
            " Forwarded or proxy_protocol)",
        )
    level.values["real_ip_header"] = name


def real_ip_recursive(scope: Scope, stmt: Stmt) -> None:
    _level(scope, stmt).values["real_ip_recursive"] = values.flag(stmt, stmt.args[0])


def real_ip_spec(level: Level) -> RealIpSpec | None:
    """A server's effective realip settings; None without set_real_ip_from (nginx then
    changes no address)."""
    trusted: list[str] = level.array("set_real_ip_from")
    if not trusted:
        return None
    return RealIpSpec(
        trusted=tuple(trusted),
        header=level.value("real_ip_header", _DEFAULT_HEADER),
        recursive=level.value("real_ip_recursive", False),
    )
