"""Re-serialisation of message heads for the other side of the proxy.

The proxy never forwards framing it did not decide itself: hop-by-hop fields and every
field named in Connection are dropped (RFC 9110 7.6.1), and Content-Length or
Transfer-Encoding are written fresh from the parsed framing. One unambiguous message
leaves for each one that came in.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from ferryman.http.messages import Framing, RequestHead, ResponseHead

__all__ = [
    "CHUNKED_END",
    "STATUS_LINES",
    "chunk",
    "client_framing",
    "error_response",
    "local_response",
    "serialize_request_head",
    "serialize_response_head",
    "status_line",
]

STATUS_LINES: Final[dict[int, bytes]] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}
CHUNKED_END: Final = b"0\r\n\r\n"
_CHUNKED: Final = Framing.CHUNKED
_LENGTH: Final = Framing.LENGTH
_BODY_METHODS: Final = frozenset({b"POST", b"PUT", b"PATCH"})


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def chunk(data: bytes) -> bytes:
    # An empty chunk would be `0\r\n\r\n`, the end of the body: send nothing instead.
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


def serialize_request_head(
    head: RequestHead,
    target: bytes,
    host: bytes,
    extra: bytes,
    drop: frozenset[bytes],
    forwarded_for: bytes | None,
    http10: bool = False,
) -> bytes:
    """The head sent upstream, HTTP/1.1 (or 1.0, closing, for `http10`).

    `extra` is pre-rendered `name: value\\r\\n` lines added after the client's fields;
    `drop` names (lower case) further client fields not to copy (fields a route sets
    itself); `forwarded_for`, if given, is appended to any X-Forwarded-For the client
    sent. Hop-by-hop fields, Host, Expect and X-Forwarded-* never pass (see
    `RequestHead.fields`).
    """
    fields = head.fields
    if drop:
        fields = b"".join(
            line for line in _lines(fields) if line.split(b":", 1)[0].lower() not in drop
        )
    if forwarded_for is not None:
        prior = head.forwarded_for
        xff = (
            b"X-Forwarded-For: %s, %s\r\n" % (prior, forwarded_for)
            if prior
            else (b"X-Forwarded-For: %s\r\n" % forwarded_for)
        )
    else:
        xff = b""
    framing = head.framing
    if framing is _CHUNKED:
        length = b"Transfer-Encoding: chunked\r\n"
    elif framing is _LENGTH:
        length = b"Content-Length: %d\r\n" % head.content_length
    elif head.method != b"GET" and head.method in _BODY_METHODS:  # a GET: no set lookup
        # RFC 9110 8.6: a user agent sends Content-Length 0 for such bodies; some
        # servers answer 411 without it.
        length = b"Content-Length: 0\r\n"
    else:
        length = b""
    if http10 and framing is not _CHUNKED:
        # nginx's default (proxy_http_version 1.0): one request per connection. A chunked
        # body cannot be framed in HTTP/1.0 without buffering it whole, so such requests
        # go as HTTP/1.1 (nginx buffers instead).
        # nginx sends Connection: close (unless the route sets Connection itself).
        close = b"" if b"connection" in drop else b"Connection: close\r\n"
        return b"%s %s HTTP/1.0\r\nHost: %s\r\n%s%s%s%s%s\r\n" % (
            head.method,
            target,
            host,
            fields,
            xff,
            extra,
            length,
            close,
        )
    return b"%s %s HTTP/1.1\r\nHost: %s\r\n%s%s%s%s\r\n" % (
        head.method,
        target,
        host,
        fields,
        xff,
        extra,
        length,
    )


def _lines(fields: bytes) -> list[bytes]:
    return [line + b"\r\n" for line in fields.split(b"\r\n") if line]


def client_framing(head: ResponseHead, client_http11: bool) -> Framing:
    """How the body is framed towards the client. A body of unknown length is chunked
    for HTTP/1.1 clients and close-delimited for HTTP/1.0 ones."""
    framing = head.framing
    if framing is Framing.CHUNKED or framing is Framing.UNTIL_CLOSE:
        return Framing.CHUNKED if client_http11 else Framing.UNTIL_CLOSE
    return framing


def serialize_response_head(
    head: ResponseHead, framing: Framing, keep_alive: bool, client_http11: bool, extra: bytes = b""
) -> bytes:
    if framing is _LENGTH:
        length = b"Content-Length: %d\r\n" % head.content_length
    elif framing is _CHUNKED:
        length = b"Transfer-Encoding: chunked\r\n"
    elif head.length_field is not None and head.status >= 200 and head.status != 204:
        # HEAD and 304 responses describe the length of a body they do not carry.
        length = b"Content-Length: %s\r\n" % head.length_field
    else:
        length = b""
    if not keep_alive:
        conn = b"Connection: close\r\n"
    elif not client_http11:
        conn = b"Connection: keep-alive\r\n"
    else:
        conn = b""
    status = head.status
    line = STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
    return b"%s%s%s%s%s\r\n" % (line, head.fields, extra, length, conn)


def local_response(
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"text/plain",
    extra: bytes = b"",
    keep_alive: bool = False,
    head_only: bool = False,
) -> bytes:
    """An answer made by the proxy itself (nginx `return`, redirects, errors).
    `extra` is pre-rendered `name: value\\r\\n` lines; `head_only` for HEAD requests."""
    conn = b"keep-alive" if keep_alive else b"close"
    if status == 204 or status == 304 or status < 200:
        # RFC 9110 8.6/8.3: no Content-Length, no body, no Content-Type.
        return b"%s%sConnection: %s\r\n\r\n" % (status_line(status), extra, conn)
    ctype = b"Content-Type: %s\r\n" % content_type if content_type else b""
    return b"%s%s%sContent-Length: %d\r\nConnection: %s\r\n\r\n%s" % (
        status_line(status),
        ctype,
        extra,
        len(body),
        conn,
        b"" if head_only else body,
    )


def error_response(
    status: int, message: str, keep_alive: bool = False, extra: bytes = b""
) -> bytes:
    """A short local answer. It never names an upstream address: the reason with detail
    goes to the error log, the client only learns the status."""
    body = b"%d %s\n" % (status, message.encode("ascii", "replace"))
    conn = b"keep-alive" if keep_alive else b"close"
    return b"%sContent-Type: text/plain\r\n%sContent-Length: %d\r\nConnection: %s\r\n\r\n%s" % (
        status_line(status),
        extra,
        len(body),
        conn,
        body,
    )
