"""Translate functions for nginx's access and auth_basic modules: `allow`, `deny`,
`auth_basic`, `auth_basic_user_file`, and what a location ends up with (`access_rules`,
`auth_basic_spec`, called by `freeze.py`).

allow/deny follow nginx's array rule (ngx_http_access_merge_loc_conf): a level with no
rule of its own inherits the enclosing level's list whole. auth_basic and its user file
are single values, each inherited on its own. Knows nothing about how the rules run
(filters/access.py, filters/auth.py).
"""

from __future__ import annotations

import ipaddress
import re

from ferryman.config.nginx import values
from ferryman.config.nginx.draft import Level, Scope
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.nginx.values import unsupported
from ferryman.config.schema import AccessRule, AuthBasicSpec

__all__ = ["access_rule", "access_rules", "auth_basic", "auth_basic_spec", "auth_basic_user_file"]

# Level.arrays key for allow and deny together: their order across both matters.
_RULES = "access"
_VARIABLE = re.compile(r"\$(?:\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def access_rule(scope: Scope, stmt: Stmt) -> None:
    """allow | deny ADDRESS | CIDR | all."""
    text = stmt.args[0]
    if text.startswith("unix:"):
        raise unsupported(stmt, f'"{stmt.name} unix:" is not supported (no unix listeners)')
    if text != "all":
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise stmt.error(f'invalid parameter "{text}"') from None
        if net.network_address != ipaddress.ip_address(text.partition("/")[0]):
            # nginx's own warning; the address is masked, as nginx does.
            scope.config.warn(stmt, f"low address bits of {text} are meaningless")
    scope.the_level().append(_RULES, AccessRule(action=stmt.name, addresses=(text,)))


def auth_basic(scope: Scope, stmt: Stmt) -> None:
    """auth_basic REALM | off."""
    realm = stmt.args[0]
    _literal(stmt, realm)
    if _CONTROL.search(realm):
        raise stmt.error(f'invalid value in "{stmt.name}" directive: control characters')
    scope.the_level().values[stmt.name] = (realm, stmt)


def auth_basic_user_file(scope: Scope, stmt: Stmt) -> None:
    _literal(stmt, stmt.args[0])
    path = values.path(stmt, scope.config.base_dir, stmt.args[0])
    scope.the_level().values[stmt.name] = path


def access_rules(level: Level) -> tuple[AccessRule, ...]:
    return tuple(level.array(_RULES))


def auth_basic_spec(level: Level) -> AuthBasicSpec | None:
    """The location's basic auth: none without `auth_basic` or with `auth_basic off`.
    nginx, given a realm but no user file, quietly lets every request in; that is
    refused here, since it is never what the author meant."""
    found: tuple[str, Stmt] | None = level.value("auth_basic", None)
    if found is None or found[0] == "off":
        return None
    realm, stmt = found
    user_file: str | None = level.value("auth_basic_user_file", None)
    if user_file is None:
        raise stmt.error(
            '"auth_basic" without "auth_basic_user_file" (nginx would ask no password)'
        )
    return AuthBasicSpec(realm=realm, user_file=user_file)


def _literal(stmt: Stmt, text: str) -> None:
    if _VARIABLE.search(text):
        raise unsupported(stmt, f'variables in "{stmt.name}" are not supported')
