"""nginx's proxy_redirect: rewriting the Location and Refresh fields of upstream answers.

Owns ngx_http_proxy_rewrite_redirect's rules: the rules are tried in order and the
first that matches rewrites the value. A plain FROM matches a prefix of the value
(case-sensitively, ngx_rstrncmp) and is replaced by TO; a `~` (`~*`: any case) FROM is
a regex searched in the value, whose groups TO may use as $1..$9, and the whole value
becomes TO. In Refresh only what follows `url=` is looked at. The `default` rule is
FROM = the proxy_pass URL, TO = the location's path (FROM + "/" -> "/" when proxy_pass
has no URI part); a proxy_pass with variables has no default.

Pure: the replacement's other variables are rendered by the caller's `render`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from ferryman.routing.locations import compile_regex

__all__ = ["Redirects", "default_rule"]

# render(template, captures) -> the replacement's bytes.
Render = Callable[[str, tuple[bytes, ...]], bytes]
_URL_EQ: Final = re.compile(rb"url=", re.IGNORECASE)


def default_rule(url: str, uri: str | None, location: str) -> tuple[str, str]:
    """`proxy_redirect default` for `proxy_pass URL` in `location` (its path; "" for
    regex and named locations, as nginx)."""
    if uri is not None:
        return url, location
    return url + "/", "/"


class Redirects:
    """Compiled proxy_redirect rules of one route."""

    __slots__ = ("_rules",)

    def __init__(self, rules: tuple[tuple[str, str], ...]) -> None:
        compiled: list[tuple[bytes | re.Pattern[str], str]] = []
        for source, replacement in rules:
            if source.startswith("~*"):
                compiled.append((compile_regex(source[2:], caseless=True), replacement))
            elif source.startswith("~"):
                compiled.append((compile_regex(source[1:]), replacement))
            else:
                compiled.append((source.encode("latin-1"), replacement))
        self._rules = tuple(compiled)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def rewrite(self, value: bytes, render: Render) -> bytes | None:
        """The new value, or None when no rule matches."""
        for source, replacement in self._rules:
            if isinstance(source, bytes):
                if value.startswith(source):
                    return render(replacement, ()) + value[len(source) :]
                continue
            match = source.search(value.decode("latin-1"))
            if match is not None:
                captures = tuple((g or "").encode("latin-1") for g in match.groups())
                return render(replacement, captures)
        return None

    def rewrite_refresh(self, value: bytes, render: Render) -> bytes | None:
        found = _URL_EQ.search(value)
        if found is None:
            return None
        tail = self.rewrite(value[found.end() :], render)
        return None if tail is None else value[: found.end()] + tail

    def rewrite_fields(
        self, fields: bytes, render: Render, absolute: Callable[[bytes], bytes] | None = None
    ) -> bytes:
        """Pre-rendered `Name: value\\r\\n` lines with Location and Refresh rewritten. A
        rewritten Location that is a path goes through `absolute` (nginx's header filter
        makes it absolute, as for its own redirects)."""
        out: list[bytes] = []
        changed = False
        for line in fields.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            lname = name.lower()
            if colon and lname in (b"location", b"refresh"):
                value = value.lstrip(b" \t")
                new = (
                    self.rewrite(value, render)
                    if lname == b"location"
                    else self.rewrite_refresh(value, render)
                )
                if new is not None:
                    if lname == b"location" and absolute is not None and new[:1] == b"/":
                        new = absolute(new)
                    line = b"%s: %s" % (name, new)
                    changed = True
            out.append(line)
        return b"\r\n".join(out) if changed else fields

    def __repr__(self) -> str:
        return f"Redirects({len(self._rules)} rules)"
