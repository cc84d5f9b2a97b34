"""nginx's error_page for one route: which answers are replaced, and by what.

Owns the table (status -> ErrorPageSpec; when two `error_page` lines name a code the
first wins, as ngx_http_send_error_page walks them in order) and the decision for an
answer: its target (a URI, an `@named` location, or a full URL), and the status the
replacement is sent with.
Pure: the exchange does the redirect (Exchange.respond_error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ferryman.config.schema import ErrorPageSpec

__all__ = ["ErrorPage", "ErrorPages"]

# A full-URL target answers with one of these (the `=CODE` one), else 302
# (ngx_http_send_error_page).
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class ErrorPage:
    """What to do with an answer of `status`: `kind` is "uri", "named" or "url";
    `status` is the one to send (0: whatever the target answers)."""

    kind: str
    target: bytes
    args: bytes | None
    status: int


class ErrorPages:
    __slots__ = ("_by_code",)

    def __init__(self, specs: tuple[ErrorPageSpec, ...]) -> None:
        table: dict[int, ErrorPageSpec] = {}
        for spec in specs:
            for code in spec.codes:
                # ngx_http_send_error_page walks the array in order: the first wins.
                table.setdefault(code, spec)
        self._by_code = table

    def __bool__(self) -> bool:
        return bool(self._by_code)

    def covers(self, status: int) -> bool:
        return status in self._by_code

    def page_for(self, status: int) -> ErrorPage | None:
        spec = self._by_code.get(status)
        if spec is None:
            return None
        sent = status if spec.status is None else spec.status
        target = spec.target.encode("latin-1")
        if target.startswith(b"@"):
            return ErrorPage("named", target, None, sent)
        if target.startswith(b"/"):
            uri, question, args = target.partition(b"?")
            return ErrorPage("uri", uri, args if question else None, sent)
        # A full URL: a redirect, 302 unless `=30x` chose another.
        return ErrorPage("url", target, None, sent if sent in _REDIRECTS else 302)

    def __repr__(self) -> str:
        return f"ErrorPages({sorted(self._by_code)})"
