"""Upstream response framing: httptools (llhttp) wrapped, with the same scrutiny as
requests. An invalid response raises `UpstreamProtocolError`; the caller answers 502
and never reuses that connection.

Interim 1xx responses other than 101 are swallowed: the proxy answers `100 Continue`
to its client itself. Responses to HEAD carry no body whatever their Content-Length
says, which llhttp cannot be told; the parser stops after the head and the connection
is not reused (a fresh parser is cheap, a desynchronised connection is not).

Beyond llhttp's strict mode this module refuses: versions other than HTTP/1.0 and 1.1,
status codes outside 100-599, Transfer-Encoding in an HTTP/1.0 response or repeated,
codings other than chunked, and any byte after the final response to the one request
sent (a body longer than its Content-Length, a second response): a connection that
answers more than it was asked is desynchronised. Trailer fields are dropped and
bounded, never carried into the next head.
"""

from __future__ import annotations

from typing import Final

import httptools
from mypy_extensions import mypyc_attr

from ferryman.errors import ProtocolError, UpstreamProtocolError
from ferryman.http.fields import (
    HOP_BY_HOP,
    equals_lower,
    length_mask,
    lower_name,
    names_end_to_end,
    parse_connection_tokens,
    parse_content_length,
    trim_ows,
)
from ferryman.http.messages import Framing, ResponseHead

__all__ = ["MAX_HEAD_BYTES", "ResponseParser", "ResponseSink"]

MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 200
_EMPTY: Final[frozenset[bytes]] = frozenset()
_NONE: Final = Framing.NONE
_LENGTH: Final = Framing.LENGTH
_CHUNKED: Final = Framing.CHUNKED
_UNTIL_CLOSE: Final = Framing.UNTIL_CLOSE


_MANAGED: Final = HOP_BY_HOP | {b"date"}
_MANAGED_LENGTHS: Final = length_mask(_MANAGED)
_VERSIONS: Final = frozenset({"1.1", "1.0"})


def _content_length(value: bytes) -> int:
    try:
        return parse_content_length(value)
    except ProtocolError as exc:
        raise UpstreamProtocolError(exc.reason) from None


def _is_chunked(value: bytes) -> bool:
    # Only chunked is decoded. Any other coding would have to reach the client, and the
    # re-framed body cannot carry it (nginx: "upstream sent unknown Transfer-Encoding").
    if trim_ows(value).lower() != b"chunked":
        raise UpstreamProtocolError(f"unsupported transfer coding {value[:40]!r}")
    return True


@mypyc_attr(allow_interpreted_subclasses=True)
class ResponseSink:
    """Where a ResponseParser's events go (the exchange; the HTTP/2 parse-back). A base
    class rather than a typing.Protocol so that the compiled build calls it through its
    vtable: through a protocol each event is a method lookup by name."""

    __slots__ = ()

    def on_response_head(self, head: ResponseHead) -> None:
        raise NotImplementedError

    def on_response_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_response_end(self, keep_alive: bool) -> None:
        raise NotImplementedError


class _HeadDone(Exception):
    """Raised from on_headers_complete to stop llhttp after a HEAD response's head."""


class ResponseParser:
    __slots__ = (
        "_body_seen",
        "_done",
        "_fresh",
        "_head_bytes",
        "_head_started",
        "_headers",
        "_in_head",
        "_interim",
        "_no_body",
        "_p",
        "_quiet",
        "_status",
        "_v11",
        "sink",
    )
    # `close` deletes these (mypyc lets a native class delete only what is listed).
    __deletable__ = ("_p", "sink")

    def __init__(self, sink: ResponseSink) -> None:
        self.sink = sink
        self._p = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = True
        self._head_bytes = 0
        self._head_started = False
        self._no_body = False
        self._interim = False
        self._status = 0
        # The final response to the request sent has ended: any further message is
        # one nobody asked for.
        self._done = False
        self._quiet = 0
        self._body_seen = False
        # The next read starts a response (see `feed`), and whether that response's
        # first head said HTTP/1.1 in its first bytes.
        self._fresh = False
        self._v11 = False

    def expect(self, no_body: bool) -> None:
        """Called before each request is sent: `no_body` for HEAD requests."""
        self._no_body = no_body
        self._done = False
        self._fresh = True

    def close(self) -> None:
        """The connection (or HTTP/2 stream) is gone; nothing is fed after this. As
        RequestParser.close: httptools' parser holds this object's callbacks, so the two
        (and a sink that holds this object) would wait for the cyclic garbage collector;
        letting go of both frees them at once."""
        del self._p
        del self.sink

    def feed(self, data: bytes) -> bytes | None:
        """Returns the bytes after a `101 Switching Protocols` head, else None."""
        if self._fresh:
            # A response to the request just sent starts at this read's first byte: if
            # those say HTTP/1.1, llhttp's version is known without asking it (its
            # get_http_version() formats a new string for every message).
            self._fresh = False
            self._v11 = data.startswith(b"HTTP/1.1 ")
        try:
            self._p.feed_data(data)
        except httptools.HttpParserUpgrade as up:
            return data[up.args[0] :]
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadDone):
                # llhttp is now in an error state; replace it for cleanliness even though
                # the connection will not be reused.
                self._p = httptools.HttpResponseParser(self)
                self.sink.on_response_end(False)
                return None
            if isinstance(cause, UpstreamProtocolError):
                raise cause from None
            raise
        except httptools.HttpParserError as exc:
            raise UpstreamProtocolError(f"invalid upstream response: {exc}") from None
        if self._in_head:
            # Counted after parsing: a read may carry a whole head and a large body.
            # A head that began in this read (after a message ended in it) is counted
            # from the next read on, so the bound is MAX_HEAD_BYTES plus one read.
            if self._head_started:
                self._head_started = False
            else:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    raise UpstreamProtocolError("upstream response head too large")
        else:
            # Chunk metadata and trailers carry no data; httptools buffers a trailer
            # field whole, so they are held to the head limit (see RequestParser.feed).
            if self._body_seen:
                self._body_seen = False
                self._quiet = 0
            else:
                self._quiet += len(data)
            if self._quiet > MAX_HEAD_BYTES:
                raise UpstreamProtocolError("upstream chunk metadata or trailers too large")
        return None

    # ---- httptools callbacks ----

    def on_message_begin(self) -> None:
        if self._done:
            # RFC 9112 6.3: bytes after the response's framing ended are not part of it;
            # with no request outstanding they can only be a desynchronised stream.
            raise UpstreamProtocolError("upstream sent data after the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        # The head byte limit bounds the count too; MAX_HEADERS is checked at the end.
        if self._in_head:
            self._headers.append((name, value))
        # Else a trailer field: dropped (the body is re-framed without trailers).

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._quiet = 0
        if len(self._headers) > MAX_HEADERS:
            raise UpstreamProtocolError("too many header fields in upstream response")
        p = self._p
        if self._v11:
            self._v11 = False  # the first head only (an interim 1xx may come first)
            version = "1.1"
        else:
            version = p.get_http_version()
            if version not in _VERSIONS:
                raise UpstreamProtocolError("unsupported upstream HTTP version")
        status: int = p.get_status_code()
        if not 100 <= status <= 599:
            # RFC 9110 15: a status code is three digits from 100 to 599.
            raise UpstreamProtocolError(f"invalid upstream status {status}")
        self._status = status
        if status < 200 and status != 101:
            self._interim = True
            self._headers = []
            return
        self._interim = False
        content_length = -1
        length_field = None
        chunked = False
        codings = 0
        tokens = _EMPTY
        lines = []
        # The head's size without optional whitespace or reason phrase: `feed` counts
        # only heads still incomplete after a read, and a whole head fits in one read.
        size = 3 * len(self._headers)
        # One pass: find the framing fields and pre-render the end-to-end ones.
        date = None
        for name, value in self._headers:
            n = len(name)
            size += n + len(value)
            # Names are told apart by length first (no managed name is as long as most
            # fields), then by a native case-blind comparison; only the rare rest is
            # lowered and looked up.
            if not (_MANAGED_LENGTHS >> n) & 1:
                lines.append(b"%s: %s\r\n" % (name, value))
            elif n == 4 and equals_lower(name, b"date", b"Date"):
                # The proxy writes its own Date (as nginx does), or passes this one on.
                date = value
            elif n == 14 and equals_lower(name, b"content-length", b"Content-Length"):
                length_field = trim_ows(value)
                content_length = _content_length(length_field)
            elif n == 17 and equals_lower(name, b"transfer-encoding", b"Transfer-Encoding"):
                codings += 1
                chunked = _is_chunked(value)
            elif n == 10 and equals_lower(name, b"connection", b"Connection"):
                listed = parse_connection_tokens(value)
                tokens = tokens | listed if tokens else listed
            elif lower_name(name) not in _MANAGED:
                lines.append(b"%s: %s\r\n" % (name, value))
        if size > MAX_HEAD_BYTES:
            raise UpstreamProtocolError("upstream response head too large")
        if codings > 1:
            raise UpstreamProtocolError("Transfer-Encoding repeated in upstream response")
        if chunked and version == "1.0":
            # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing.
            raise UpstreamProtocolError("Transfer-Encoding in an HTTP/1.0 response")
        if names_end_to_end(tokens):
            lines = [ln for ln in lines if ln.split(b":", 1)[0].lower() not in tokens]
        if self._no_body or status == 204 or status == 304 or status == 101:
            framing = _NONE
        elif chunked:
            framing = _CHUNKED
        elif content_length >= 0:
            framing = _LENGTH
        else:
            framing = _UNTIL_CLOSE
        head = ResponseHead(
            status,
            self._headers,
            framing,
            max(content_length, 0),
            tokens,
            b"".join(lines),
            length_field,
            date,
        )
        # Reset for the next message here rather than in an on_message_begin callback.
        self._headers = []
        self._head_bytes = 0
        self.sink.on_response_head(head)
        if self._no_body:
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        self._body_seen = True
        self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_started = True
        self._quiet = 0
        if self._interim:
            self._interim = False
            return
        self._done = True
        # Must be read here: once feed_data() returns, llhttp has moved on and
        # should_keep_alive() no longer describes this message.
        self.sink.on_response_end(self._p.should_keep_alive())

    def __repr__(self) -> str:
        return f"ResponseParser(status={self._status} in_head={self._in_head})"
