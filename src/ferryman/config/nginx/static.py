"""Translate functions for nginx's file serving and its neighbours: `root`, `alias`,
`index`, `try_files`, `autoindex`, `expires`, `etag`, `types`, `error_page`,
`proxy_intercept_errors`, `proxy_redirect`, and the rewrite module's `if` and `break`.

They record what each level says (`Level.values` / `Level.arrays`, nginx's
inheritance is applied by `freeze.py` through `static_fields`). Knows nothing about
how files are served.
"""

from __future__ import annotations

import re
from typing import Any

from ferryman.config.nginx import values
from ferryman.config.nginx.draft import Context, Level, LocationDraft, Scope, ServerDraft
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.nginx.values import unsupported
from ferryman.config.schema import BreakSpec, ErrorPageSpec, IfSpec, ScriptStep, StaticSpec

__all__ = [
    "alias",
    "autoindex",
    "autoindex_format",
    "break_",
    "error_page",
    "etag",
    "expires",
    "if_",
    "index",
    "proxy_intercept_errors",
    "proxy_redirect",
    "redirect_rules",
    "root",
    "static_fields",
    "try_files",
    "types",
]

# nginx's default_type when none is set (the stock nginx.conf sets octet-stream).
_DEFAULT_TYPE = "text/plain"
_MIME_TYPE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_EXTENSION = re.compile(r"[\x21-\x7e]+")
_STRING_OPERATORS = ("=", "!=", "~", "~*", "!~", "!~*")
_FILE_OPERATORS = ("-f", "!-f", "-d", "!-d", "-e", "!-e", "-x", "!-x")


def root(scope: Scope, stmt: Stmt) -> None:
    level = scope.the_level()
    if "alias" in level.values:
        raise stmt.error('"root" directive is duplicate, "alias" directive was specified earlier')
    level.values["root"] = values.path(stmt, scope.config.base_dir, stmt.args[0])


def alias(scope: Scope, stmt: Stmt) -> None:
    location = scope.the_location()
    if location.match == "named":
        raise stmt.error('"alias" directive cannot be used inside the named location')
    level = scope.the_level()
    if "root" in level.values:
        raise stmt.error('"alias" directive is duplicate, "root" directive was specified earlier')
    level.values["alias"] = stmt.args[0]


def index(scope: Scope, stmt: Stmt) -> None:
    for name in stmt.args:
        if not name:
            raise stmt.error('index "" in "index" directive is invalid')
    # Several `index` lines add up in one level; an inner level replaces them.
    level = scope.the_level()
    level.values["index"] = (*level.values.get("index", ()), *stmt.args)


def try_files(scope: Scope, stmt: Stmt) -> None:
    last = stmt.args[-1]
    if last.startswith("=") and not (last[1:].isascii() and last[1:].isdigit()):
        raise stmt.error(f'invalid code "{last}"')
    if last.startswith("=") and not 100 <= int(last[1:]) <= 999:
        raise stmt.error(f'invalid code "{last}"')
    scope.the_level().values["try_files"] = tuple(stmt.args)


def autoindex(scope: Scope, stmt: Stmt) -> None:
    """autoindex, autoindex_exact_size, autoindex_localtime: on|off."""
    scope.the_level().values[stmt.name] = values.flag(stmt, stmt.args[0])


def autoindex_format(scope: Scope, stmt: Stmt) -> None:
    value = stmt.args[0]
    if value in ("xml", "jsonp"):
        raise unsupported(stmt, f'"autoindex_format {value}" is not supported yet')
    if value not in ("html", "json"):
        raise stmt.error(f'invalid value "{value}" in "autoindex_format" directive')
    scope.the_level().values[stmt.name] = value


def expires(scope: Scope, stmt: Stmt) -> None:
    args = stmt.args
    if len(args) == 2 or args[0].startswith("@") or args[0].startswith("modified"):
        raise unsupported(stmt, f'"expires {" ".join(args)}" is not supported yet')
    text = args[0]
    value: float | str | None
    if text == "off":
        value = None
    elif text in ("epoch", "max"):
        value = text
    else:
        negative = text.startswith("-")
        seconds = values.time(stmt, text.lstrip("+-"))
        value = -seconds if negative else seconds
    scope.the_level().values["expires"] = value


def etag(scope: Scope, stmt: Stmt) -> None:
    scope.the_level().values["etag"] = values.flag(stmt, stmt.args[0])


def types(scope: Scope, stmt: Stmt) -> None:
    """`types { TYPE EXT...; }`: replaces the types of outer levels (nginx)."""
    table: list[tuple[str, str]] = []
    for entry in stmt.block or ():
        if entry.block is not None or entry.name == "include":
            raise entry.error(f'unexpected "{entry.name}" in "types"')
        if not entry.args:
            raise entry.error('invalid number of arguments in "types" directive')
        if not _MIME_TYPE.fullmatch(entry.name):
            raise entry.error(f'invalid MIME type "{entry.name}"')
        for ext in entry.args:
            if not _EXTENSION.fullmatch(ext):
                raise entry.error(f'invalid extension "{ext}"')
            table.append((ext.lower(), entry.name))
    level = scope.the_level()
    # Two blocks in one level (`include mime.types;` then `types { ... }`) add up.
    level.values["types"] = (*level.values.get("types", ()), *table)


def error_page(scope: Scope, stmt: Stmt) -> None:
    """`error_page CODE... [=[RESPONSE]] URI`."""
    *rest, target = stmt.args
    status: int | None = None
    if rest and rest[-1].startswith("="):
        answer = rest.pop()[1:]
        status = 0 if not answer else _code(stmt, answer, 100, 599)
    if not rest:
        raise stmt.error('invalid number of arguments in "error_page" directive')
    codes = tuple(_code(stmt, code, 300, 599) for code in rest)
    scope.the_level().append("error_page", ErrorPageSpec(codes, target, status))


def _code(stmt: Stmt, text: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise stmt.error(f'value "{text}" must be between {low} and {high}')
    if int(text) == 499:
        raise stmt.error(f'value "{text}" must be between {low} and {high}')
    return int(text)


def proxy_intercept_errors(scope: Scope, stmt: Stmt) -> None:
    scope.the_level().values[stmt.name] = values.flag(stmt, stmt.args[0])


def proxy_redirect(scope: Scope, stmt: Stmt) -> None:
    """`proxy_redirect default | off | FROM TO`; `~`/`~*` FROM is a regex."""
    level = scope.the_level()
    rules = level.arrays.setdefault("proxy_redirect", [])
    if len(stmt.args) == 1:
        word = stmt.args[0]
        if word == "off":
            rules.append(("off", ""))
            return
        if word != "default":
            raise stmt.error(f'invalid parameter "{word}"')
        if rules:
            raise stmt.error('"proxy_redirect default" should be placed first')
        rules.append(("default", ""))
        return
    source, target = stmt.args
    if source.startswith("~*"):
        values.regex(stmt, source[2:], icase=True)
    elif source.startswith("~"):
        values.regex(stmt, source[1:])
    rules.append((source, target))


def redirect_rules(
    level: Level, location: LocationDraft, url: str | None, uri: str | None
) -> tuple[tuple[str, str], ...] | None:
    """The effective proxy_redirect rules of a proxying location (nginx: the level's own
    list, else the enclosing one's, else `default`)."""
    rules: list[tuple[str, str]] = level.array("proxy_redirect")
    if not rules:
        return None  # the default: the runtime derives it from the route (route.py)
    if any(source == "off" for source, _ in rules):
        return ()
    place = "" if location.match in ("regex", "regex_icase", "named") else location.path
    out: list[tuple[str, str]] = []
    for source, target in rules or [("default", "")]:
        if source != "default":
            out.append((source, target))
        elif url is not None:
            # The proxy_pass URL as written, then the location (or "/" without a URI).
            out.append((url, place) if uri is not None else (url + "/", "/"))
    return tuple(out)


def static_fields(level: Level, proxying: bool) -> dict[str, Any]:
    """RouteSpec's static, error_pages and intercept_errors, with nginx's inheritance."""
    root_dir = level.value("root", None)
    alias_dir = level.values.get("alias")
    static = None
    if not proxying and (root_dir is not None or alias_dir is not None):
        raw_types = level.value("types", None)
        static = StaticSpec(
            root=None if alias_dir is not None else root_dir,
            alias=alias_dir,
            index=level.value("index", ("index.html",)),
            try_files=level.value("try_files", ()),
            expires=level.value("expires", None),
            etag=level.value("etag", True),
            # No `types` anywhere: nginx's three built-in types.
            types=tuple(raw_types) if raw_types is not None else _NGINX_TYPES,
            default_type=level.value("default_type", _DEFAULT_TYPE),
            autoindex=level.value("autoindex", False),
            autoindex_exact_size=level.value("autoindex_exact_size", True),
            autoindex_localtime=level.value("autoindex_localtime", False),
            autoindex_format=level.value("autoindex_format", "html"),
        )
    return {
        "static": static,
        "error_pages": tuple(level.array("error_page")),
        "intercept_errors": level.value("proxy_intercept_errors", False),
    }


_NGINX_TYPES = (("html", "text/html"), ("gif", "image/gif"), ("jpg", "image/jpeg"))


# --- if and break (rewrite module) ---------------------------------------------------

# Directives an `if` block may hold here; nginx allows more (proxy_pass, add_header,
# ...), which are refused by name.
_IF_BODY = ("return", "rewrite", "set", "break", "if")


def break_(scope: Scope, stmt: Stmt) -> None:
    scope.script().append(BreakSpec())


def if_(scope: Scope, stmt: Stmt) -> None:
    operand, operator, value = _condition(stmt)
    steps: list[ScriptStep] = []
    inner = _IfScope.around(scope, steps)
    for child in stmt.block or ():
        if child.name not in _IF_BODY:
            raise unsupported(child, f'"{child.name}" directive inside "if" is not supported')
        scope.walk([child], inner)
    scope.script().append(IfSpec(operand, operator, value, tuple(steps)))


class _IfScope:
    """A scope whose rewrite steps go into an `if` block's list."""

    @staticmethod
    def around(scope: Scope, steps: list[ScriptStep]) -> Scope:
        if scope.context is Context.LOCATION:
            location = scope.the_location()
            draft = LocationDraft(
                stmt=location.stmt, match=location.match, path=location.path, level=location.level
            )
            draft.script = steps
            return scope.inner(Context.LOCATION, location=draft)
        server = scope.the_server()
        shadow = ServerDraft(stmt=server.stmt, level=server.level)
        shadow.script = steps
        return scope.inner(Context.SERVER, server=shadow)


def _condition(stmt: Stmt) -> tuple[str, str, str]:
    """`($var)`, `($var OP value)`, `(-f $name)`, as ngx_http_rewrite_if_condition."""
    # The parser has taken the parentheses off (syntax.py), as nginx's does.
    args = list(stmt.args)
    if len(args) == 1 and args[0].startswith("$"):
        return args[0], "", ""
    if len(args) == 2 and args[0] in _FILE_OPERATORS:
        return args[1], args[0], ""
    if len(args) == 3 and args[0].startswith("$") and args[1] in _STRING_OPERATORS:
        operand, operator, value = args
        if "~" in operator:
            values.regex(stmt, value, icase=operator.endswith("*"))
        return operand, operator, value
    raise unsupported(stmt, f'the condition "{" ".join(stmt.args)}" of "if" is not supported')
