"""Translate functions for nginx's proxy module and its neighbours: `proxy_pass`,
`proxy_*` settings, `add_header`, `client_max_body_size`, `default_type`.

They record what each level says (`Level.values` / `Level.arrays`); `freeze.py`
applies nginx's inheritance when it builds each route. Knows nothing about how the
runtime proxies.
"""

from __future__ import annotations

import re

from ferryman.config.nginx import values
from ferryman.config.nginx.draft import Scope
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.nginx.values import unsupported
from ferryman.config.schema import IGNORABLE_HEADERS, HeaderAdd

__all__ = [
    "add_header",
    "client_max_body_size",
    "default_type",
    "proxy_header_list",
    "proxy_http_version",
    "proxy_ignore_headers",
    "proxy_method",
    "proxy_next_upstream",
    "proxy_next_upstream_timeout",
    "proxy_next_upstream_tries",
    "proxy_pass",
    "proxy_pass_request_flag",
    "proxy_redirect",
    "proxy_set_body",
    "proxy_set_header",
    "proxy_timeout",
]

# RFC 9110 section 5.1: a field name is a token; section 5.5: no CR, LF, NUL or other
# controls but tab in a value.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
_HOST_VALUE = re.compile(r"[\x21-\x7e]+")
_MAX_TRIES = 1_000_000


def proxy_pass(scope: Scope, stmt: Stmt) -> None:
    location = scope.the_location()
    target = values.proxy_target(stmt, stmt.args[0])
    # nginx (ngx_http_proxy_pass): with variables the URL is the whole upstream target,
    # so a URI part is allowed anywhere; without, the location must be a prefix to replace.
    has_uri = isinstance(target, values.ProxyTarget) and target.uri is not None
    if has_uri and location.match in ("regex", "regex_icase", "named"):
        raise stmt.error(
            '"proxy_pass" cannot have URI part in location given by regular expression, '
            'or inside named location, or inside "if" statement, or inside "limit_except" block'
        )
    location.proxy = (target, stmt)


def proxy_http_version(scope: Scope, stmt: Stmt) -> None:
    version = stmt.args[0]
    if version not in ("1.0", "1.1"):
        raise stmt.error(f'invalid value "{version}" in "proxy_http_version" directive')
    scope.the_level().values[stmt.name] = version


def proxy_timeout(scope: Scope, stmt: Stmt) -> None:
    """proxy_connect_timeout, proxy_read_timeout, proxy_send_timeout."""
    scope.the_level().values[stmt.name] = values.time(stmt, stmt.args[0], positive=True)


def proxy_set_header(scope: Scope, stmt: Stmt) -> None:
    name, value = stmt.args
    _check_field(stmt, name, value)
    if name.lower() == "host" and not _HOST_VALUE.fullmatch(value):
        # An empty Host (no Host at all) is not supported; spaces or non-ASCII would
        # make an invalid request.
        raise stmt.error(f'invalid "Host" value "{value}" in "proxy_set_header" directive')
    level = scope.the_level()
    if any(other.lower() == name.lower() for other, _, _ in level.arrays.get(stmt.name, [])):
        raise stmt.error(
            f'"proxy_set_header" sets "{name}" twice at one level; Ferryman sends one value'
        )
    level.append(stmt.name, (name, value, stmt))
    if name.lower() == "connection" and value.lower() == "upgrade":
        scope.config.warn(
            stmt,
            'proxy_set_header Connection "upgrade" sends Connection: upgrade on every request,'
            " which defeats upstream keep-alive; use map $http_upgrade $connection_upgrade"
            " { default upgrade; '' close; }",
        )


def proxy_header_list(scope: Scope, stmt: Stmt) -> None:
    """proxy_hide_header / proxy_pass_header NAME: lower-cased, in order."""
    name = stmt.args[0]
    if not _FIELD_NAME.fullmatch(name):
        raise stmt.error(f'invalid header name "{name}" in "{stmt.name}" directive')
    level = scope.the_level()
    # Naming a field twice hides (or passes) it once.
    if name.lower() not in level.arrays.get(stmt.name, []):
        level.append(stmt.name, name.lower())


def add_header(scope: Scope, stmt: Stmt) -> None:
    name, value, *rest = stmt.args
    if rest and rest[0] != "always":
        raise stmt.error(f'invalid parameter "{rest[0]}"')
    _check_field(stmt, name, value)
    scope.the_level().append(stmt.name, HeaderAdd(name, value, always=bool(rest)))


def client_max_body_size(scope: Scope, stmt: Stmt) -> None:
    limit = values.size(stmt, stmt.args[0])
    # nginx: 0 turns the check off.
    scope.the_level().values[stmt.name] = limit or None


def default_type(scope: Scope, stmt: Stmt) -> None:
    """The Content-Type of `return` bodies. `types { }` is a no-op, so the extensions
    that get another type are nginx's built-in ones (.html, .gif, .jpg), which the
    runtime knows; nginx sends no Content-Type for `default_type ""`."""
    value = stmt.args[0]
    if not _FIELD_VALUE.fullmatch(value):
        raise stmt.error(f'invalid header value in "{stmt.name}" directive: control characters')
    scope.the_level().values[stmt.name] = value


# What a failed attempt may be retried on. Ferryman retries on connect errors, resets
# and timeouts (nginx's default `error timeout`); the others come later.
_NEXT_UPSTREAM_SUPPORTED = ("error", "timeout")
_NEXT_UPSTREAM_NGINX = (
    "invalid_header",
    "denied",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "http_403",
    "http_404",
    "http_429",
    "non_idempotent",
)


def proxy_next_upstream(scope: Scope, stmt: Stmt) -> None:
    if stmt.args == ("off",):
        scope.the_level().values[stmt.name] = ("off",)
        return
    for condition in stmt.args:
        if condition == "denied":  # nginx Plus's queue/limit outcome
            raise stmt.error(f'"{condition}" in "proxy_next_upstream" is not supported yet')
        if condition not in _NEXT_UPSTREAM_SUPPORTED and condition not in _NEXT_UPSTREAM_NGINX:
            raise stmt.error(f'invalid value "{condition}" in "proxy_next_upstream" directive')
    scope.the_level().values[stmt.name] = tuple(stmt.args)


def proxy_next_upstream_tries(scope: Scope, stmt: Stmt) -> None:
    scope.the_level().values[stmt.name] = values.number(stmt, stmt.args[0], 0, _MAX_TRIES)


def proxy_next_upstream_timeout(scope: Scope, stmt: Stmt) -> None:
    # 0 (nginx's default) means no limit.
    scope.the_level().values[stmt.name] = values.time(stmt, stmt.args[0])


def proxy_redirect(scope: Scope, stmt: Stmt) -> None:
    # Ferryman never rewrites Location/Refresh: that is `proxy_redirect off`.
    # (`default` is also accepted, as when absent: see README, differences.)
    if stmt.args not in (("off",), ("default",)):
        raise unsupported(stmt, '"proxy_redirect" other than "off" or "default" is not supported')


def proxy_method(scope: Scope, stmt: Stmt) -> None:
    """`proxy_method METHOD`: the method sent upstream instead of the client's."""
    method = stmt.args[0]
    if "$" in method:
        raise unsupported(stmt, 'variables in "proxy_method" are not supported yet')
    if not _FIELD_NAME.fullmatch(method):
        raise stmt.error(f'invalid method "{method}" in "proxy_method" directive')
    scope.the_level().values[stmt.name] = method


def proxy_set_body(scope: Scope, stmt: Stmt) -> None:
    """`proxy_set_body VALUE`: a template; the body sent upstream instead of the
    client's (which is read and dropped)."""
    scope.the_level().values[stmt.name] = stmt.args[0]


def proxy_pass_request_flag(scope: Scope, stmt: Stmt) -> None:
    """proxy_pass_request_headers / proxy_pass_request_body on|off."""
    scope.the_level().values[stmt.name] = values.flag(stmt, stmt.args[0])


def proxy_ignore_headers(scope: Scope, stmt: Stmt) -> None:
    """`proxy_ignore_headers FIELD...`: nginx's bitmask slot, so several lines at one
    level add up and an inner level with its own replaces the outer set."""
    level = scope.the_level()
    names: tuple[str, ...] = level.values.get(stmt.name, ())
    for name in stmt.args:
        lower = name.lower()
        if lower not in IGNORABLE_HEADERS:
            raise stmt.error(f'invalid value "{name}" in "{stmt.name}" directive')
        if lower not in names:
            names = (*names, lower)
    level.values[stmt.name] = names


def _check_field(stmt: Stmt, name: str, value: str) -> None:
    if not _FIELD_NAME.fullmatch(name):
        raise stmt.error(f'invalid header name "{name}" in "{stmt.name}" directive')
    if not _FIELD_VALUE.fullmatch(value):
        raise stmt.error(f'invalid header value in "{stmt.name}" directive: control characters')
