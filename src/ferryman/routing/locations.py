"""nginx `location` selection within one server, compiled once at load.

Owns the search order of ngx_http_core_find_location: an exact (`=`) match ends the
search; otherwise the longest matching prefix is remembered, its nested locations are
searched, and unless that prefix is `^~` the regex locations of the level are tried in
order of appearance, the first match winning; failing all of them, the remembered
(deepest) prefix is used. Also owns nginx's auto-redirect (a request for `/api` when
only `location /api/` with proxy_pass would take it: 301 to `/api/`), the build-time
checks nginx makes on nesting, and the translation of the PCRE spellings nginx users
write into Python's `re`.

Pure: no I/O, no clock. Knows nothing about requests, upstreams or what a location
does; the value attached to a location is opaque (`T`). The path it is given is nginx's
`$uri` (decoded and normalised, see `ferryman.http.uri`), without the query.

PCRE vs Python `re`, as handled here: nginx compiles without PCRE2_UTF, so classes like
`\\w` and case folding are ASCII-only; `re.ASCII` gives the same. If the caller decodes
`$uri` bytes as latin-1, one character is one byte and `.` matches exactly what PCRE's
does. `(?<name>...)` and `(?'name'...)` become `(?P<name>...)`; PCRE's `\\z` is Python's
`\\Z` and PCRE's `\\Z` (end, or before a final newline) becomes `(?=\\n?\\Z)`. Other
PCRE-only syntax (`\\Q..\\E`, recursion, `\\h`, ...) is refused at load by `re`, which is
better than matching differently at run time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = [
    "LOCATION_KINDS",
    "LocationEntry",
    "LocationMatch",
    "LocationTree",
    "compile_regex",
]

T = TypeVar("T")

# The same names as ferryman.config.schema.MATCH_KINDS; repeated so that this module
# does not depend on the config package.
LOCATION_KINDS = ("prefix", "exact", "prefix_priority", "regex", "regex_icase", "named")

_REGEX_KINDS = ("regex", "regex_icase")
_NAME_START = re.compile(r"[A-Za-z_]")
_QUOTED_NAME = re.compile(r"\(\?'([A-Za-z_][A-Za-z0-9_]*)'")
# PCRE `\z` is the very end (Python `\Z`); PCRE `\Z` also allows one final newline.
_ESCAPES = {"z": r"\Z", "Z": r"(?=\n?\Z)"}


# LocationEntry and LocationMatch are plain slotted classes, not dataclasses: mypyc
# cannot compile a generic dataclass. Treat them as immutable.


class LocationEntry(Generic[T]):
    """One `location` as written: `kind` is one of LOCATION_KINDS; `path` is the prefix,
    the exact path, the regex, or the name (with or without its `@`).

    `auto_redirect` is nginx's flag, set by proxy_pass (and the other *_pass
    directives): a prefix or exact location whose path ends in `/` then also takes the
    path without that slash, to answer it with a 301 (see LocationMatch.redirect_to)."""

    __slots__ = ("auto_redirect", "children", "kind", "path", "value")

    def __init__(
        self,
        kind: str,
        path: str,
        value: T,
        children: Sequence[LocationEntry[T]] = (),
        auto_redirect: bool = False,
    ) -> None:
        self.kind = kind
        self.path = path
        self.value = value
        self.children: tuple[LocationEntry[T], ...] = tuple(children)
        self.auto_redirect = auto_redirect

    def __repr__(self) -> str:
        return (
            f"LocationEntry({self.kind!r}, {self.path!r}, {self.value!r}, "
            f"{len(self.children)} children)"
        )


class LocationMatch(Generic[T]):
    """The chosen location and the groups of the last regex that matched on the way:
    `captures[i]` is `$<i+1>` (unmatched groups are ""); `named` are the named groups,
    which nginx also makes variables.

    `redirect_to` is set when nginx would answer 301 instead (auto-redirect): the
    location's path, to be sent escaped (`encode_path`) with `?args` appended if any.
    The location's own settings still apply first (nginx checks client_max_body_size
    before redirecting)."""

    __slots__ = ("captures", "named", "redirect_to", "value")

    def __init__(
        self,
        value: T,
        captures: tuple[str, ...] = (),
        named: tuple[tuple[str, str], ...] = (),
        redirect_to: str | None = None,
    ) -> None:
        self.value = value
        self.captures = captures
        self.named = named
        self.redirect_to = redirect_to

    def __repr__(self) -> str:
        extra = f", redirect_to={self.redirect_to!r}" if self.redirect_to is not None else ""
        return f"LocationMatch({self.value!r}, {self.captures!r}, {self.named!r}{extra})"


class _Node(Generic[T]):
    __slots__ = ("children", "kind", "noregex", "path", "value")

    def __init__(self, kind: str, path: str, value: T, children: _Level[T] | None) -> None:
        self.kind = kind
        self.path = path
        self.value = value
        self.children = children
        # `^~`: a longest-prefix match that skips this level's regexes.
        self.noregex = kind == "prefix_priority"


class _Found(Generic[T]):
    """A search result: `final` is nginx's NGX_OK (an exact or a regex match, which
    ends the search) or NGX_DONE (`redirect`: an auto-redirect, which ends it too);
    otherwise it is a prefix that later regexes may override."""

    __slots__ = ("final", "match", "node", "redirect")

    def __init__(
        self, node: _Node[T], match: re.Match[str] | None, final: bool, redirect: bool = False
    ) -> None:
        self.node = node
        self.match = match
        self.final = final
        self.redirect = redirect


class _Level(Generic[T]):
    """The locations directly inside one server or one location."""

    __slots__ = ("exact", "prefix_lengths", "prefixes", "redirects", "regexes")

    def __init__(self) -> None:
        self.exact: dict[str, _Node[T]] = {}
        self.prefixes: dict[str, _Node[T]] = {}
        # Auto-redirect locations by their path without the final `/`.
        self.redirects: dict[str, _Node[T]] = {}
        # Distinct prefix lengths, longest first: one dict probe per length finds the
        # longest matching prefix without scanning every prefix.
        self.prefix_lengths: tuple[int, ...] = ()
        self.regexes: list[tuple[re.Pattern[str], _Node[T]]] = []

    def longest_prefix(self, uri: str) -> _Node[T] | None:
        size = len(uri)
        for length in self.prefix_lengths:
            if length <= size:
                node = self.prefixes.get(uri[:length])
                if node is not None:
                    return node
        return None

    def search(self, uri: str) -> _Found[T] | None:
        """ngx_http_core_find_location for this level."""
        exact = self.exact.get(uri)
        if exact is not None:
            return _Found(exact, None, True)
        found: _Found[T] | None = None
        noregex = False
        prefix = self.longest_prefix(uri)
        redirect = self._auto_redirect(uri, prefix)
        if redirect is not None:
            return redirect
        if prefix is not None:
            found = _Found(prefix, None, False)
            # Only the prefix chosen at *this* level decides whether this level's
            # regexes run; a nested `^~` guards the nested regexes only (nginx reads
            # `noregex` before recursing).
            noregex = prefix.noregex
            if prefix.children is not None:
                inner = prefix.children.search(uri)
                if inner is not None:
                    if inner.final:
                        return inner
                    found = inner
        if not noregex:
            for pattern, node in self.regexes:
                match = pattern.search(uri)
                if match is not None:
                    return _regex_found(node, match, uri)
        return found

    def _auto_redirect(self, uri: str, prefix: _Node[T] | None) -> _Found[T] | None:
        # ngx_http_core_find_static_location's NGX_DONE: it loses only to a location
        # named exactly `uri`, and skips nested locations and regexes.
        if not self.redirects or (prefix is not None and len(prefix.path) == len(uri)):
            return None
        target = self.redirects.get(uri)
        return None if target is None else _Found(target, None, True, redirect=True)


def _regex_found(node: _Node[T], match: re.Match[str], uri: str) -> _Found[T]:
    # A matching regex location is final, but nginx still searches inside it; captures
    # are those of the last regex that matched. An auto-redirect found in there is
    # not one: nginx turns every result of that inner search into NGX_OK.
    if node.children is not None:
        inner = node.children.search(uri)
        if inner is not None:
            return _Found(inner.node, inner.match or match, True)
    return _Found(node, match, True)


class LocationTree(Generic[T]):
    """The locations of one server. Build errors (bad nesting, duplicates, a regex
    that does not compile) raise ValueError with nginx's wording."""

    __slots__ = ("_named", "_only", "_root")

    def __init__(self, entries: Sequence[LocationEntry[T]]) -> None:
        self._named: dict[str, T] = {}
        self._root: _Level[T] = _build_level(entries, None, self._named)
        # The common case, one `location /` and nothing else: no search at all.
        self._only: tuple[T] | None = None
        if len(entries) == 1 and _is_bare_root(entries[0]):
            self._only = (entries[0].value,)

    def find(self, uri: str) -> T | None:
        if self._only is not None:
            return self._only[0]
        found = self._root.search(uri)
        return None if found is None else found.node.value

    def find_with_captures(self, uri: str) -> tuple[T | None, tuple[str, ...]]:
        if self._only is not None:
            return self._only[0], ()
        found = self._root.search(uri)
        if found is None:
            return None, ()
        return found.node.value, _captures(found.match)

    def match(self, uri: str) -> LocationMatch[T] | None:
        """Like find_with_captures, with the named groups as well."""
        if self._only is not None:
            return LocationMatch(self._only[0])
        found = self._root.search(uri)
        if found is None:
            return None
        return LocationMatch(
            found.node.value,
            _captures(found.match),
            _named(found.match),
            found.node.path if found.redirect else None,
        )

    def named(self, name: str) -> T | None:
        """The `@name` location (the `@` is optional)."""
        return self._named.get(name[1:] if name.startswith("@") else name)

    def __repr__(self) -> str:
        level = self._root
        return (
            f"LocationTree({len(level.exact)} exact, {len(level.prefixes)} prefix, "
            f"{len(level.regexes)} regex, {len(self._named)} named at the top level)"
        )


def _is_bare_root(entry: LocationEntry[T]) -> bool:
    return entry.kind == "prefix" and entry.path == "/" and not entry.children


def _captures(match: re.Match[str] | None) -> tuple[str, ...]:
    if match is None:
        return ()
    # nginx renders a group that did not take part in the match as "".
    return tuple(g or "" for g in match.groups())


def _named(match: re.Match[str] | None) -> tuple[tuple[str, str], ...]:
    if match is None:
        return ()
    return tuple((k, v or "") for k, v in match.groupdict().items())


# ---- building ----


def _build_level(
    entries: Sequence[LocationEntry[T]], parent: LocationEntry[T] | None, named: dict[str, T]
) -> _Level[T]:
    level: _Level[T] = _Level()
    for entry in entries:
        _check_entry(entry, parent)
        # Built for named locations too: that refuses anything nested in one.
        children = _build_level(entry.children, entry, named) if entry.children else None
        if entry.kind == "named":
            # nginx keeps every named location and the first of a name wins.
            named.setdefault(entry.path.removeprefix("@"), entry.value)
            continue
        node = _Node(entry.kind, entry.path, entry.value, children)
        if entry.kind in _REGEX_KINDS:
            pattern = compile_regex(entry.path, caseless=entry.kind == "regex_icase")
            level.regexes.append((pattern, node))
        else:
            _add_static(level, entry, node)
    level.prefix_lengths = tuple(sorted({len(p) for p in level.prefixes}, reverse=True))
    return level


def _add_static(level: _Level[T], entry: LocationEntry[T], node: _Node[T]) -> None:
    table = level.exact if entry.kind == "exact" else level.prefixes
    if entry.path in table:
        # A prefix and a `^~` of the same path are duplicates too; a prefix and an exact
        # one of the same path are not (ngx_http_join_exact_locations).
        raise ValueError(f'duplicate location "{entry.path}"')
    table[entry.path] = node
    # nginx's proxy_pass sets the flag only for a name ending in `/`.
    if entry.auto_redirect and entry.path.endswith("/"):
        key = entry.path[:-1]
        # Of an exact and a prefix location of one path, nginx uses the exact.
        if entry.kind == "exact" or key not in level.redirects:
            level.redirects[key] = node


def _check_entry(entry: LocationEntry[T], parent: LocationEntry[T] | None) -> None:
    """The checks of ngx_http_core_location, with its messages."""
    if entry.kind not in LOCATION_KINDS:
        raise ValueError(f'invalid location modifier "{entry.kind}"')
    if parent is None:
        return
    if parent.kind == "exact":
        raise ValueError(
            f'location "{entry.path}" cannot be inside the exact location "{parent.path}"'
        )
    if parent.kind == "named":
        raise ValueError(
            f'location "{entry.path}" cannot be inside the named location "{parent.path}"'
        )
    if entry.kind == "named":
        raise ValueError(f'named location "{entry.path}" can be on the server level only')
    # nginx compares the child's name with the parent's *name*, whatever the parent's
    # kind: under a regex location, a prefix must start with the regex's text.
    if entry.kind not in _REGEX_KINDS and not entry.path.startswith(parent.path):
        raise ValueError(f'location "{entry.path}" is outside location "{parent.path}"')


# ---- PCRE to Python ----


def compile_regex(pattern: str, *, caseless: bool = False) -> re.Pattern[str]:
    """Compile an nginx (PCRE) regex for `re.search`, as nginx runs it (unanchored).
    Raises ValueError when Python cannot express it."""
    flags = re.ASCII | (re.IGNORECASE if caseless else 0)
    try:
        return re.compile(_pcre_to_python(pattern), flags)
    except re.error as exc:
        raise ValueError(f'regex "{pattern}" compilation failed: {exc}') from None


def _pcre_to_python(pattern: str) -> str:
    out: list[str] = []
    i = 0
    size = len(pattern)
    while i < size:
        c = pattern[i]
        if c == "\\" and i + 1 < size:
            out.append(_ESCAPES.get(pattern[i + 1], pattern[i : i + 2]))
            i += 2
        elif c == "[":
            end = _class_end(pattern, i)
            out.append(pattern[i:end])
            i = end
        elif pattern.startswith("(?<", i) and _NAME_START.match(pattern, i + 3):
            out.append("(?P<")
            i += 3
        elif (quoted := _QUOTED_NAME.match(pattern, i)) is not None:
            out.append(f"(?P<{quoted.group(1)}>")
            i = quoted.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """Index just past the `]` closing the character class opened at `start`."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1  # a `]` first in a class is literal, in PCRE as in Python
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
        elif pattern[i] == "]":
            return i + 1
        else:
            i += 1
    return len(pattern)  # unterminated: let `re` report it
