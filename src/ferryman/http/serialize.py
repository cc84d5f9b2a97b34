"""Re-serialisation of message heads for the other side of the proxy.

The proxy never forwards framing it did not decide itself: hop-by-hop fields and every
field named in Connection are dropped (RFC 9110 7.6.1), and Content-Length or
Transfer-Encoding are written fresh from the parsed framing. One unambiguous message
leaves for each one that came in.
"""

from __future__ import annotations

from http import HTTPStatus

from ferryman.http.fields import HOP_BY_HOP
from ferryman.http.messages import Framing, RequestHead, ResponseHead

__all__ = [
    "CHUNKED_END",
    "STATUS_LINES",
    "chunk",
    "client_framing",
    "error_response",
    "serialize_request_head",
    "serialize_response_head",
    "status_line",
]

STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}
CHUNKED_END = b"0\r\n\r\n"
_XFF = b"x-forwarded-for"


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def serialize_request_head(
    head: RequestHead,
    target: bytes,
    host: bytes,
    extra: bytes,
    drop: frozenset[bytes],
    forwarded_for: bytes | None,
) -> bytes:
    """The head sent upstream, always HTTP/1.1.

    `extra` is pre-rendered `name: value\\r\\n` lines added after the client's fields;
    `drop` names (lower case) client fields not to copy (Host, fields the route sets);
    `forwarded_for`, if given, is appended to any X-Forwarded-For the client sent.
    """
    out = [head.method, b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    tokens = head.connection_tokens
    prior: list[bytes] = []
    for name, value in head.headers:
        ln = name.lower()
        if ln in HOP_BY_HOP or ln in drop or (tokens and ln in tokens):
            continue
        if ln == _XFF and forwarded_for is not None:
            prior.append(value)
            continue
        out.append(b"%s: %s\r\n" % (name, value))
    if forwarded_for is not None:
        prior.append(forwarded_for)
        out.append(b"X-Forwarded-For: %s\r\n" % b", ".join(prior))
    out.append(extra)
    if head.framing is Framing.CHUNKED:
        out.append(b"Transfer-Encoding: chunked\r\n\r\n")
    elif head.framing is Framing.LENGTH:
        out.append(b"Content-Length: %d\r\n\r\n" % head.content_length)
    elif head.method in (b"POST", b"PUT", b"PATCH"):
        # RFC 9110 8.6: a user agent sends Content-Length 0 for such bodies; some
        # servers answer 411 without it.
        out.append(b"Content-Length: 0\r\n\r\n")
    else:
        out.append(b"\r\n")
    return b"".join(out)


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
    out = [status_line(head.status)]
    tokens = head.connection_tokens
    length_value: bytes | None = None
    for name, value in head.headers:
        ln = name.lower()
        if ln in HOP_BY_HOP or (tokens and ln in tokens):
            if ln == b"content-length":
                length_value = value
            continue
        out.append(b"%s: %s\r\n" % (name, value))
    out.append(extra)
    if framing is Framing.LENGTH:
        out.append(b"Content-Length: %d\r\n" % head.content_length)
    elif framing is Framing.CHUNKED:
        out.append(b"Transfer-Encoding: chunked\r\n")
    elif length_value is not None and head.status not in (204, 101) and head.status >= 200:
        # HEAD and 304 responses describe the length of a body they do not carry.
        out.append(b"Content-Length: %s\r\n" % length_value)
    if not keep_alive:
        out.append(b"Connection: close\r\n\r\n")
    elif not client_http11:
        out.append(b"Connection: keep-alive\r\n\r\n")
    else:
        out.append(b"\r\n")
    return b"".join(out)


def error_response(status: int, message: str, keep_alive: bool = False) -> bytes:
    """A short local answer. It never names an upstream address: the reason with detail
    goes to the error log, the client only learns the status."""
    body = b"%d %s\n" % (status, message.encode("ascii", "replace"))
    conn = b"keep-alive" if keep_alive else b"close"
    return b"%sContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s" % (
        status_line(status),
        len(body),
        conn,
        body,
    )
