"""nginx.conf text -> a tree of statements, through crossplane's lexer and parser.

Owns the one call into crossplane and the mapping of its failures onto `ConfigError`
with `file:line` in nginx's wording. One file at a time: `include` is a directive like
any other (see `core.py`), so its globs, its errors and include cycles are ours.
Knows nothing about what any directive means.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import crossplane

from ferryman.errors import ConfigError

__all__ = ["COMMAND_LINE", "Stmt", "parse_file", "parse_param"]

# Where nginx says a `-g` directive stands.
COMMAND_LINE = "command line"


@dataclass(frozen=True, slots=True)
class Stmt:
    """One directive: `name arg...;` or `name arg... { block }`."""

    name: str
    args: tuple[str, ...]
    file: str
    line: int
    # None for a simple directive; the statements inside the braces for a block.
    block: tuple[Stmt, ...] | None = None

    @property
    def where(self) -> str:
        # Line 0: a statement from `nginx -g`, which nginx places "in command line".
        return f"{self.file}:{self.line}" if self.line else self.file

    def error(self, reason: str) -> ConfigError:
        return ConfigError(self.where, reason)

    def __repr__(self) -> str:
        braces = " {...}" if self.block is not None else ";"
        return f"Stmt({self.where} {' '.join((self.name, *self.args))}{braces})"


def parse_file(path: str) -> tuple[Stmt, ...]:
    """The statements of one file, includes not followed; errors name file and line."""
    payload = crossplane.parse(
        path,
        single=True,  # `include` is translated by us, in its context
        catch_errors=False,  # stop at the first error, as nginx does
        check_ctx=False,  # contexts and arities are the directive table's job
        check_args=False,
        onerror=lambda exc: exc,
    )
    if payload["errors"]:
        raise _error(path, payload["errors"][0])
    return _statements(payload["config"][0]["parsed"], path)


def parse_param(text: str) -> tuple[Stmt, ...]:
    """The statements of `nginx -g TEXT`, placed "in command line" (line 0)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".conf", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        try:
            statements = parse_file(file.name)
        except ConfigError as exc:
            reason = exc.reason.replace("unexpected end of file", "unexpected end of parameter")
            raise ConfigError(COMMAND_LINE, reason) from None
    if any(stmt.block is not None for stmt in statements):
        # ngx_conf_param's own refusal.
        raise ConfigError(COMMAND_LINE, "block directives are not supported in -g option")
    return tuple(_relocate(stmt) for stmt in statements)


def _relocate(stmt: Stmt) -> Stmt:
    block = None if stmt.block is None else tuple(_relocate(s) for s in stmt.block)
    return Stmt(stmt.name, stmt.args, COMMAND_LINE, 0, block)


# nginx's escapes, applied to every word quoted or not (ngx_conf_read_token); any other
# backslash stays, so regexes keep their `\d` and `\.`. crossplane has already
# unescaped the quote that encloses a quoted word.
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _word(text: object) -> str:
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), str(text))


def _statements(parsed: Sequence[Mapping[str, Any]], path: str) -> tuple[Stmt, ...]:
    return tuple(
        Stmt(
            name=_word(item["directive"]),
            args=tuple(_word(arg) for arg in item["args"]),
            file=path,
            line=int(item["line"]),
            block=_statements(item["block"], path) if "block" in item else None,
        )
        for item in parsed
    )


def _error(path: str, error: Mapping[str, Any]) -> ConfigError:
    exc = error.get("callback")
    line = error.get("line")
    if isinstance(exc, crossplane.errors.NgxParserBaseException):
        # 'unexpected "}"', 'unexpected end of file, expecting "}"': nginx's own words.
        return ConfigError(f"{path}:{exc.lineno or line}", str(exc.strerror))
    if isinstance(exc, StopIteration):
        # crossplane runs out of tokens inside a statement: a missing `;` (or an
        # unterminated quote) at the end of the file. nginx names the last line.
        return ConfigError(f"{path}:{_last_line(path)}", 'unexpected end of file, expecting ";"')
    if isinstance(exc, OSError):
        return ConfigError(path, f"cannot read: {exc.strerror or exc}")
    where = f"{path}:{line}" if line else path
    return ConfigError(where, f"cannot parse: {error.get('error') or exc!r}")


def _last_line(path: str) -> int:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return max(1, sum(1 for _ in file))
    except OSError:
        return 1
