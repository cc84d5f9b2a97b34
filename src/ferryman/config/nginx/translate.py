"""nginx.conf -> `Config`: parse, walk every statement through the directive table,
freeze.

Owns the walk: the checks nginx makes before a directive's own handler runs (known
name, allowed here, block or not, number of arguments, duplicates), in nginx's order
and words, and what `--lenient` does with a directive Ferryman does not support (a
warning instead of an error). Knows nothing about any one directive's meaning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from crossplane.analyzer import DIRECTIVES as NGINX_DIRECTIVES
from crossplane.analyzer import analyze
from crossplane.errors import NgxParserDirectiveError

from ferryman.config.nginx.directives import DIRECTIVES, Directive, planned_reason
from ferryman.config.nginx.draft import ConfigDraft, Context, Scope
from ferryman.config.nginx.freeze import freeze
from ferryman.config.nginx.syntax import Stmt, parse_file, parse_param
from ferryman.config.nginx.values import Unsupported, unsupported
from ferryman.config.schema import Config
from ferryman.errors import ConfigError

__all__ = ["load_nginx"]

# Our contexts as crossplane's analyzer names them, to judge directives we do not
# support by nginx's own table before calling them unsupported.
_CROSSPLANE_CONTEXT: dict[Context, tuple[str, ...]] = {
    Context.MAIN: (),
    Context.EVENTS: ("events",),
    Context.HTTP: ("http",),
    Context.SERVER: ("http", "server"),
    Context.LOCATION: ("http", "location"),
    Context.UPSTREAM: ("http", "upstream"),
}


def load_nginx(
    path: str,
    *,
    lenient: bool = False,
    prefix: str | None = None,
    directives: str = "",
    files: list[str] | None = None,
) -> Config:
    """Translate the nginx.conf at `path` (and what it includes) into a `Config`.

    Every error is a ConfigError at `file:line`. An nginx directive Ferryman does not
    support is an error too, unless `lenient`: then it is ignored with an entry in
    `Config.warnings`. Warnings about working but harmful patterns are given either way.

    `nginx -p PREFIX` and `-g DIRECTIVES` (`ferryman nginx`): with a prefix, runtime
    files resolve against it (`ConfigDraft.prefix`); `directives` are main-context
    statements read before the file, as nginx does (so a `pid` in both is "duplicate"
    in the file), with errors "in command line". `files`, when given, receives every
    file read, the main one first (`nginx -T` dumps them).
    """
    base_dir = os.path.dirname(os.path.abspath(path))
    draft = ConfigDraft(source=path, base_dir=base_dir, lenient=lenient, prefix=prefix)
    from_command_line = parse_param(directives) if directives else ()
    statements = parse_file(path)
    draft.including.append(os.path.abspath(path))
    try:
        _walk((*from_command_line, *statements), Scope(Context.MAIN, draft, _walk))
    finally:
        if files is not None:
            files.extend([path, *(f for f in draft.parsed if f != path)])
    return freeze(draft)


def _walk(statements: Sequence[Stmt], scope: Scope) -> None:
    for stmt in statements:
        try:
            _translate(stmt, scope)
        except Unsupported as exc:
            if not scope.config.lenient:
                reason = f"{exc.reason} (--lenient ignores it with a warning)"
                raise _Attributed(exc.stmt.where, reason) from None
            scope.config.warn(exc.stmt, f"{exc.reason}; ignored (--lenient)")


def _translate(stmt: Stmt, scope: Scope) -> None:
    try:
        _dispatch(stmt, scope)
    except _Attributed:
        raise  # from a statement inside this block: it names its own directive
    except ConfigError as exc:
        # nginx's own words often leave the directive out ('invalid parameter "x"');
        # ours always name it.
        reason = exc.reason
        if exc.where == stmt.where and f'"{stmt.name}' not in reason:
            reason = f'{reason} in "{stmt.name}" directive'
        raise _Attributed(exc.where, reason, exc.reason) from None


class _Attributed(ConfigError):
    """A ConfigError that already names the directive it is about; `nginx_reason` is
    the reason as nginx words it, without the name (`ferryman nginx` prints that)."""

    def __init__(self, where: str, reason: str, nginx_reason: str | None = None) -> None:
        super().__init__(where, reason)
        self.nginx_reason = reason if nginx_reason is None else nginx_reason


def _dispatch(stmt: Stmt, scope: Scope) -> None:
    variants = DIRECTIVES.get(stmt.name)
    if variants is None:
        raise _not_in_table(stmt, scope)
    directive = next((d for d in variants if scope.context in d.contexts), None)
    if directive is None:
        raise stmt.error(f'"{stmt.name}" directive is not allowed here')
    _check_shape(stmt, directive)
    if directive.once:
        if stmt.name in scope.seen:
            raise stmt.error(f'"{stmt.name}" directive is duplicate')
        scope.seen.add(stmt.name)
    directive.translate(scope, stmt)


def _check_shape(stmt: Stmt, directive: Directive) -> None:
    # ngx_conf_handler's order: the terminator, then the number of arguments.
    if directive.block and stmt.block is None:
        raise stmt.error(f'directive "{stmt.name}" has no opening "{{"')
    if not directive.block and stmt.block is not None:
        raise stmt.error(f'directive "{stmt.name}" is not terminated by ";"')
    fewest, most = directive.arity
    if len(stmt.args) < fewest or (most is not None and len(stmt.args) > most):
        raise stmt.error(f'invalid number of arguments in "{stmt.name}" directive')


def _not_in_table(stmt: Stmt, scope: Scope) -> Exception:
    """An error for a name the table lacks: unknown to nginx, misplaced or malformed by
    nginx's own rules, or valid nginx that Ferryman does not support (Unsupported)."""
    if stmt.name not in NGINX_DIRECTIVES:
        return stmt.error(f'unknown directive "{stmt.name}"')
    parsed = {"directive": stmt.name, "line": stmt.line, "args": list(stmt.args)}
    term = "{" if stmt.block is not None else ";"
    try:
        analyze(stmt.file, parsed, term, _CROSSPLANE_CONTEXT[scope.context])
    except NgxParserDirectiveError as exc:
        return stmt.error(str(exc.strerror))
    return unsupported(stmt, planned_reason(stmt.name))
