"""Translate functions for nginx's rewrite module (`set`, `rewrite`, `return`, in the
order written, into the server's or location's script) and for `map`.

nginx does not inherit rewrite-module steps from an outer level, so each block keeps
its own list. Regexes are checked to compile with Python's `re` here, so a pattern
that cannot run is refused at load. Knows nothing about how a script runs.
"""

from __future__ import annotations

import re

from ferryman.config.nginx import values
from ferryman.config.nginx.draft import Scope
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.schema import MapSpec, ReturnSpec, RewriteSpec, SetSpec

__all__ = ["map_block", "return_", "rewrite", "set_"]

_VARIABLE_NAME = re.compile(r"\$([A-Za-z0-9_]+)")
_REWRITE_FLAGS = ("last", "break", "redirect", "permanent")
# A `return` or `rewrite` target that makes it a redirect without a code.
_REDIRECT_PREFIXES = ("http://", "https://", "$scheme")
_MOVED_TEMPORARILY = 302
# Statuses a `return` may answer: HTTP's range, and nginx's 444 (close, no answer).
_CLOSE_WITHOUT_ANSWER = 444


def set_(scope: Scope, stmt: Stmt) -> None:
    name, value = stmt.args
    scope.script().append(SetSpec(variable=_variable(stmt, name), value=value))


def rewrite(scope: Scope, stmt: Stmt) -> None:
    pattern, replacement, *rest = stmt.args
    if not replacement:
        raise stmt.error("empty replacement")
    flag = rest[0] if rest else ""
    if rest and flag not in _REWRITE_FLAGS:
        raise stmt.error(f'invalid parameter "{flag}"')
    step = RewriteSpec(pattern=values.regex(stmt, pattern), replacement=replacement, flag=flag)
    scope.script().append(step)


def return_(scope: Scope, stmt: Stmt) -> None:
    """`return CODE [TEXT]`, `return CODE URL`, `return URL` (a 302)."""
    first, *rest = stmt.args
    if first.isascii() and first.isdigit() and len(first) <= 3:
        status = int(first)
        if not (100 <= status <= 599 or status == _CLOSE_WITHOUT_ANSWER):
            raise stmt.error(f'invalid return code "{first}" (want 100 to 599, or 444)')
        step = ReturnSpec(status=status, text=rest[0] if rest else "")
    elif not rest and first.startswith(_REDIRECT_PREFIXES):
        step = ReturnSpec(status=_MOVED_TEMPORARILY, text=first)
    else:
        raise stmt.error(f'invalid return code "{first}"')
    scope.script().append(step)


def map_block(scope: Scope, stmt: Stmt) -> None:
    """`map SOURCE $VARIABLE { default V; KEY V; ~REGEX V; ~*REGEX V; }`."""
    source, name = stmt.args
    variable = _variable(stmt, name)
    if any(spec.variable == variable for spec, _ in scope.config.maps):
        raise stmt.error(f'duplicate "map" variable "{name}"')
    entries: list[tuple[str, str]] = []
    default: str | None = None
    for entry in stmt.block or ():
        key, value = _map_entry(entry)
        if key == "default":
            if default is not None:
                raise entry.error("duplicate default map parameter")
            default = value
        elif key.startswith("~"):
            icase = key.startswith("~*")
            pattern = values.regex(entry, key[2 if icase else 1 :], icase=icase)
            entries.append(("~*" + pattern if icase else "~" + pattern, value))
        else:
            _add_exact(entry, entries, key.removeprefix("\\"), value)
    spec = MapSpec(source=source, variable=variable, entries=tuple(entries), default=default or "")
    scope.config.maps.append((spec, stmt))


def _map_entry(entry: Stmt) -> tuple[str, str]:
    if entry.block is not None:
        raise entry.error('unexpected "{"')
    if entry.name in ("hostnames", "volatile", "include"):
        raise entry.error(f'"{entry.name}" in "map" is not supported yet')
    if len(entry.args) != 1:
        raise entry.error("invalid number of the map parameters")
    return entry.name, entry.args[0]


def _add_exact(entry: Stmt, entries: list[tuple[str, str]], key: str, value: str) -> None:
    if key.startswith("~"):
        # `\~key` is a literal key starting with "~"; the schema reads "~" as a regex.
        raise entry.error(f'a map key starting with "~" ("\\{key}") is not supported yet')
    # nginx matches map keys case-insensitively, so keys differing in case conflict.
    if any(not k.startswith("~") and k.lower() == key.lower() for k, _ in entries):
        raise entry.error(f'conflicting parameter "{key}"')
    entries.append((key, value))


def _variable(stmt: Stmt, name: str) -> str:
    match = _VARIABLE_NAME.fullmatch(name)
    if match is None:
        raise stmt.error(f'invalid variable name "{name}"')
    return match.group(1)
