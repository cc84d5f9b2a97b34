"""What a route sends upstream when it changes the request itself: nginx's
`proxy_method`, `proxy_set_body`, `proxy_pass_request_headers off` and
`proxy_pass_request_body off` (ngx_http_proxy_create_request).

Owns the upstream request head for such routes (method, fields, framing) and the
replacement body. A route has an `UpstreamRequest` only when its spec uses one of these
options (decided when the route is compiled), so the common path never consults it.
The client's body, when it does not go upstream, is still read whole and framed by the
client connection, then dropped (`discards_body`), as nginx reads it before it
connects. Knows nothing about connections or retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ferryman.config.schema import RouteSpec
from ferryman.http.messages import Framing
from ferryman.proxy.variables import Template, compile_template

if TYPE_CHECKING:
    from ferryman.proxy.exchange import Exchange
    from ferryman.proxy.route import Route

__all__ = ["UpstreamRequest", "wants_upstream_request"]

_CHUNKED: Final = Framing.CHUNKED
_LENGTH: Final = Framing.LENGTH
_NONE: Final = Framing.NONE
# RFC 9110 8.6: a user agent sends Content-Length 0 for an empty body of these methods
# (serialize.py does the same for the common path).
_BODY_METHODS: Final = frozenset({b"POST", b"PUT", b"PATCH"})


def wants_upstream_request(spec: RouteSpec) -> bool:
    """Whether the route changes the request beyond its header settings."""
    return (
        spec.upstream_method is not None
        or spec.upstream_body is not None
        or not spec.pass_request_headers
        or not spec.pass_request_body
    )


class UpstreamRequest:
    """A route's request options, compiled once."""

    __slots__ = ("body", "discards_body", "method", "pass_headers")

    def __init__(self, spec: RouteSpec, where: str, user_vars: frozenset[str]) -> None:
        self.method: bytes | None = (
            spec.upstream_method.encode() if spec.upstream_method is not None else None
        )
        self.body: Template | None = (
            compile_template(spec.upstream_body, f"{where}.upstream_body", user_vars)
            if spec.upstream_body is not None
            else None
        )
        self.pass_headers = spec.pass_request_headers
        # nginx: proxy_set_body replaces the body, proxy_pass_request_body off drops it;
        # either way the client's bytes are read and not sent.
        self.discards_body = self.body is not None or not spec.pass_request_body

    def __repr__(self) -> str:
        return (
            f"UpstreamRequest(method={self.method!r}, body={self.body is not None},"
            f" pass_headers={self.pass_headers}, discards_body={self.discards_body})"
        )

    def method_for(self, ex: Exchange) -> bytes:
        return self.method if self.method is not None else ex.head.method

    def serialize(
        self,
        ex: Exchange,
        route: Route,
        target: bytes,
        extra: bytes,
        forwarded_for: bytes | None,
    ) -> bytes:
        """The upstream head (and the replacement body, if any): as
        `serialize_request_head` builds it, with this route's changes. `extra` and
        `forwarded_for` are what the exchange computed for the common path."""
        head = ex.head
        method = self.method_for(ex)
        drop = route.drop
        if self.pass_headers:
            fields = head.fields
            if drop:
                fields = b"".join(
                    line + b"\r\n"
                    for line in fields.split(b"\r\n")
                    if line and line.split(b":", 1)[0].lower() not in drop
                )
            if forwarded_for is not None and head.forwarded_for:
                forwarded_for = head.forwarded_for + b", " + forwarded_for
        else:
            # Only the proxy's own fields: Host, Connection and the set_headers (and
            # the X-Forwarded-* a native route adds itself, which name no client value).
            fields = b""
            extra = route.render_extra(ex)
            if route.forwarded:
                extra = b"X-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n%s" % (
                    ex.client.listener.scheme,
                    head.host or ex.client.listener.server_name,
                    extra,
                )
        xff = b"X-Forwarded-For: %s\r\n" % forwarded_for if forwarded_for is not None else b""
        body = b""
        chunked = False
        if self.body is not None:
            body = self.body if isinstance(self.body, bytes) else self.body(ex)
            length = b"Content-Length: %d\r\n" % len(body)
        elif self.discards_body:
            # No body goes. nginx would still send the client's Content-Length (its
            # docs pair this with `proxy_set_header Content-Length ""`); a length with
            # no body behind it would stall the upstream, so Ferryman says 0, or
            # nothing when the route removes the field or there was nothing to say.
            has_body = head.framing is not _NONE or head.method in _BODY_METHODS
            length = b"Content-Length: 0\r\n" if has_body and b"content-length" not in drop else b""
        elif head.framing is _CHUNKED:
            chunked = True
            length = b"Transfer-Encoding: chunked\r\n"
        elif head.framing is _LENGTH:
            length = b"Content-Length: %d\r\n" % head.content_length
        elif head.method in _BODY_METHODS:
            # The client's method decides, as on the common path: nginx sends no length
            # for a bodiless GET turned PUT by proxy_method.
            length = b"Content-Length: 0\r\n"
        else:
            length = b""
        if route.http10 and not chunked:
            close = b"" if b"connection" in drop else b"Connection: close\r\n"
            version = b"HTTP/1.0"
        else:
            close, version = b"", b"HTTP/1.1"
        host = route.render_host(ex)
        return b"%s %s %s\r\nHost: %s\r\n%s%s%s%s%s\r\n%s" % (
            method,
            target,
            version,
            host,
            fields,
            xff,
            extra,
            length,
            close,
            body,
        )
