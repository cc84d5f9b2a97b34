"""nginx `map`: the lookup from a source value to a value template, compiled at load.

Owns ngx_http_map_module's order: the exact strings first, compared case-insensitively
(nginx lower-cases both the keys and the looked-up value, ASCII only); then the regexes
in the order written (`~` case-sensitive, `~*` not), the first match winning, whose
groups become the captures; then the default (nginx's is the empty string). A key
starting with `\\` is a literal (`\\~x` matches "~x"). An empty source value is never
tried against the regexes, as in nginx.

Pure: it returns the *template* of the value and the captures; rendering variables and
`$1`..`$9` in it, and evaluating the source expression, are the caller's. Not supported:
the `hostnames` and `volatile` parameters (not in MapSpec).
"""

from __future__ import annotations

import re

from ferryman.config.schema import MapSpec
from ferryman.routing.locations import compile_regex
from ferryman.value import Value

__all__ = ["CompiledMap", "MapResult"]

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


class MapResult(Value):
    """`captures[i]` is `$<i+1>` of the regex that matched; `named` are its named groups
    (which nginx sets as variables). A `Value`, not a dataclass: a regex match makes one
    per request, and a dataclass's `__init__` stays Python code in the compiled build."""

    FIELDS = ("value", "captures", "named")
    __slots__ = FIELDS

    def __init__(
        self,
        value: str,
        captures: tuple[str, ...] = (),
        named: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.value = value
        self.captures = captures
        self.named = named


class CompiledMap:
    __slots__ = ("_default", "_exact", "_regexes", "source", "variable")

    def __init__(self, spec: MapSpec) -> None:
        self.source = spec.source
        self.variable = spec.variable
        self._default = MapResult(spec.default)
        self._exact: dict[str, MapResult] = {}
        self._regexes: list[tuple[re.Pattern[str], str]] = []
        for pattern, value in spec.entries:
            if pattern.startswith("~"):
                self._regexes.append((_compile(pattern), value))
            else:
                self._add_exact(pattern, value)

    def _add_exact(self, pattern: str, value: str) -> None:
        key = _lower(pattern.removeprefix("\\"))
        if key in self._exact:
            # nginx: NGX_BUSY from ngx_hash_add_key, keys compared after lower-casing.
            raise ValueError(f'conflicting parameter "{pattern}"')
        self._exact[key] = MapResult(value)

    def evaluate(self, source_value: str) -> tuple[str, tuple[str, ...]]:
        """The value template and the captures of the regex that chose it."""
        result = self.lookup(source_value)
        return result.value, result.captures

    def lookup(self, source_value: str) -> MapResult:
        exact = self._exact.get(_lower(source_value))
        if exact is not None:
            return exact
        if source_value:
            for pattern, value in self._regexes:
                match = pattern.search(source_value)
                if match is not None:
                    return MapResult(
                        value,
                        tuple(g or "" for g in match.groups()),
                        tuple((k, v or "") for k, v in match.groupdict().items()),
                    )
        return self._default

    def __repr__(self) -> str:
        return (
            f"CompiledMap({self.source} -> ${self.variable}: {len(self._exact)} exact, "
            f"{len(self._regexes)} regex)"
        )


def _compile(pattern: str) -> re.Pattern[str]:
    if pattern.startswith("~*"):
        return compile_regex(pattern[2:], caseless=True)
    return compile_regex(pattern[1:])


def _lower(value: str) -> str:
    # ngx_tolower is ASCII-only; str.lower() would also fold other letters.
    return value.lower() if value.isascii() else value.translate(_ASCII_LOWER)
