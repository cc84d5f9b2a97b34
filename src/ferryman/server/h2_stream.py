"""One HTTP/2 stream presented to an Exchange as the client it talks to, and the pure
translation of an HTTP/2 request header block into an HTTP/1.1 request head.

Design (why the exchange is not taught HTTP/2): proxy/exchange.py drives an HTTP/1.1
client connection and writes serialized HTTP/1.1 response bytes from a dozen places
(upstream responses, local answers, denials, redirects, cache hits, truncations). Giving
it a second output format would add a branch to each of them and to the HTTP/1.1 hot
path. Instead the stream is a client by duck typing (`write`, `exchange_done`,
`pause_body`/`resume_body`, `remote_addr`, `listener`, `worker`, `closed`, ...):

  request   the header block is validated against RFC 9113 8.2/8.3 here
            (`to_http1_head`), rendered as an HTTP/1.1 head and fed to the same
            RequestParser HTTP/1.1 uses, so every check (Host, target forms, header
            limits, Expect) and the pre-rendered upstream fields are shared; DATA frames
            go straight to `on_request_body`/`on_request_end` (never re-parsed).
  response  the bytes the exchange writes are parsed back with the ResponseParser the
            upstream side uses; the head becomes HEADERS (:status, lower-case names,
            no connection-specific fields), the de-chunked body becomes DATA frames,
            sent as the peer's flow-control windows allow.

The cost (one small parse per response) is paid only by HTTP/2 streams; HTTP/1.1
requests take exactly the path they took before. The connection (h2_connection.py)
owns the h2 state machine, windows, limits and GOAWAY; this module must not know about
sockets, TLS or the event loop.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Final

from ferryman.errors import ProtocolError, UpstreamProtocolError
from ferryman.http.fields import parse_content_length
from ferryman.http.messages import RequestHead, ResponseHead
from ferryman.http.request_parser import RequestParser, RequestSink
from ferryman.http.response_parser import ResponseParser, ResponseSink
from ferryman.http.serialize import error_response
from ferryman.proxy.exchange import Exchange

if TYPE_CHECKING:
    import asyncio

    from ferryman.server.context import ListenerContext, WorkerContext
    from ferryman.server.h2_connection import H2Connection

__all__ = ["H2Request", "H2Stream", "Malformed", "to_http1_head"]

_log: Final = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

# RFC 9113 8.2.2: fields that only mean something to one HTTP/1.1 connection.
_CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO: Final = frozenset({b":method", b":scheme", b":authority", b":path"})
# RFC 9113 8.2.1: a name has no upper case, no CTL/SP/non-ASCII, no colon after the first.
_BAD_NAME: Final = re.compile(rb"[\x00-\x20A-Z\x7f-\xff]|(?<=.):")
# ... and a value no NUL/CR/LF, and no leading or trailing SP/HTAB.
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
# How many valid field names a connection remembers (to_http1_head's `known`).
_KNOWN_NAMES_MAX: Final = 128
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A request target or authority that is safe on an HTTP/1.1 request line / Host line.
_VISIBLE: Final = re.compile(rb"[\x21-\x7e]+")
_SCHEME: Final = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*")
# Response fields never put on an HTTP/2 stream (RFC 9113 8.2.2).
_NOT_FORWARDED: Final = _CONNECTION_SPECIFIC | {b"te"}

# A stream's unsent response bytes above which its upstream is no longer read (the
# client's window is closed); reading resumes below the low mark.
WRITE_HIGH: Final = 256 * 1024
WRITE_LOW: Final = 64 * 1024


class Malformed(Exception):
    """A request RFC 9113 8.1.1 calls malformed: answered with RST_STREAM
    PROTOCOL_ERROR, never passed on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class H2Request:
    """A validated request header block: its method, and its HTTP/1.1 rendering."""

    __slots__ = ("content_length", "head_bytes", "method")

    def __init__(self, method: bytes, head_bytes: bytes, content_length: int) -> None:
        self.method = method
        self.head_bytes = head_bytes
        # -1 when the request has no content-length field.
        self.content_length = content_length

    def __repr__(self) -> str:
        return f"H2Request({self.method!r} content_length={self.content_length})"


def to_http1_head(headers: Headers, ended: bool, known: set[bytes] | None = None) -> H2Request:
    """RFC 9113 8.2 and 8.3 checks, then the HTTP/1.1 head the RequestParser reads.

    `ended`: the HEADERS frame carried END_STREAM (no body). A body of unknown length
    becomes `Transfer-Encoding: chunked` (RFC 9113 8.2.2 forbids the field on the
    stream itself; it is our framing towards the parser and the upstream). `known`:
    field names already found valid, which skip the name check and to which valid
    ones are added (up to _KNOWN_NAMES_MAX): the connection's, as its streams send the
    same few. Raises Malformed."""
    pseudo: dict[bytes, bytes] = {}
    lines: list[bytes] = []
    cookies: list[bytes] = []
    host: bytes | None = None
    content_length = -1
    regular = False
    for name, value in headers:
        if known is None or name not in known:
            if _BAD_NAME.search(name) or not name:
                raise Malformed(f"invalid field name {name[:64]!r}")
            if known is not None and len(known) < _KNOWN_NAMES_MAX:
                known.add(name)
        if value and _BAD_VALUE.search(value):
            raise Malformed(f"invalid value of {name[:64]!r}")
        if name[0] == 0x3A:  # ':'
            # RFC 9113 8.3: known request pseudo-fields only, once each, before the rest.
            if regular or name not in _REQUEST_PSEUDO or name in pseudo:
                raise Malformed(f"misplaced, unknown or repeated pseudo-field {name[:64]!r}")
            pseudo[name] = value
            continue
        regular = True
        if name in _CONNECTION_SPECIFIC:
            raise Malformed(f"connection-specific field {name.decode('latin-1')}")
        if name == b"te":
            if value != b"trailers":
                raise Malformed("TE other than trailers")
            continue  # hop-by-hop: not passed on
        if name == b"host":
            host = value
            continue
        if name == b"cookie":
            # RFC 9113 8.2.3: split cookie fields are joined for HTTP/1.1.
            cookies.append(value)
            continue
        if name == b"content-length":
            if content_length != -1:
                raise Malformed("content-length repeated")
            try:
                content_length = parse_content_length(value)
            except ProtocolError:
                raise Malformed("invalid content-length") from None
        lines.append(b"%s: %s\r\n" % (name, value))
    method = pseudo.get(b":method")
    if method is None or not _TOKEN.fullmatch(method):
        raise Malformed("missing or invalid :method")
    authority = pseudo.get(b":authority")
    if authority is not None and not _VISIBLE.fullmatch(authority):
        raise Malformed("invalid :authority")
    if method == b"CONNECT":
        # RFC 9113 8.5 (no :protocol: extended CONNECT is not offered). Answered 405.
        if authority is None or b":path" in pseudo or b":scheme" in pseudo:
            raise Malformed("CONNECT needs :authority and no :path or :scheme")
        return H2Request(method, b"", -1)
    path, scheme = pseudo.get(b":path"), pseudo.get(b":scheme")
    if not path or not _VISIBLE.fullmatch(path) or scheme is None:
        raise Malformed("missing or empty :path or :scheme")
    if not _SCHEME.fullmatch(scheme):
        raise Malformed("invalid :scheme")
    if authority is not None and host is not None and host != authority:
        # RFC 9113 8.3.1: a Host that names another entity than :authority.
        raise Malformed("host differs from :authority")
    if ended and content_length > 0:
        raise Malformed("content-length without DATA")
    host = authority if authority is not None else host
    if host is not None:
        lines.insert(0, b"Host: %s\r\n" % host)
    if cookies:
        lines.append(b"Cookie: %s\r\n" % b"; ".join(cookies))
    if not ended and content_length < 0:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    head = b"%s %s HTTP/1.1\r\n%s\r\n" % (method, path, b"".join(lines))
    return H2Request(method, head, content_length)


def response_fields(head: ResponseHead) -> Headers:
    """The HTTP/2 field list of a response head: :status first, names lower-cased,
    connection-specific fields (and any the Connection field names) left out."""
    out: Headers = [(b":status", b"%d" % head.status)]
    drop = head.connection_tokens
    for name, value in head.headers:
        ln = name.lower()
        if ln in _NOT_FORWARDED or ln in drop:
            continue
        out.append((ln, value))
    return out


class _HeadSink(RequestSink):
    """The RequestSink of a stream's one-shot head parse, forwarding to the stream.
    (H2Stream cannot be this and a ResponseSink itself: both are compiled base classes,
    and two do not combine in one class.)"""

    __slots__ = ("stream",)

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream

    def on_request_head(self, head: RequestHead) -> None:
        self.stream.on_request_head(head)

    def on_request_body(self, data: bytes) -> None:
        pass  # only a head is ever fed to the parser

    def on_request_end(self) -> None:
        pass  # the request's end is END_STREAM (on_end), not the parser's


class _ParseBack(ResponseSink):
    """The ResponseSink of the parse-back of what a stream's exchange writes,
    forwarding to the stream."""

    __slots__ = ("stream",)

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream

    def on_response_head(self, head: ResponseHead) -> None:
        self.stream.on_response_head(head)

    def on_response_body(self, data: bytes) -> None:
        self.stream.on_response_body(data)

    def on_response_end(self, keep_alive: bool) -> None:
        self.stream.on_response_end(keep_alive)


class H2Stream:
    """One request/response on an HTTP/2 connection, as the client of its Exchange.

    Also what the one-shot head parse and the parse-back of what the exchange writes
    report to (through _HeadSink and _ParseBack)."""

    __slots__ = (
        "body_paused",
        "closed",
        "complete",
        "conn",
        "content_length",
        "done",
        "end_sent",
        "exchange",
        "head",
        "head_only",
        "is_write_paused",
        "listener",
        "out",
        "out_size",
        "pending_head",
        "proxy_addr",
        "proxy_port",
        "received",
        "remote_addr",
        "remote_port",
        "request_ended",
        "response_parser",
        "stream_id",
        "transport",
        "unacked",
        "worker",
    )

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.listener: ListenerContext = conn.listener
        self.worker: WorkerContext = conn.worker
        self.remote_addr = conn.remote_addr
        self.remote_port = conn.remote_port
        # No PROXY protocol on TLS+h2 listeners' streams (nginx: per connection; the
        # connection has none here).
        self.proxy_addr = b""
        self.proxy_port = b""
        self.transport: asyncio.Transport | None = conn.transport
        self.closed = False
        self.exchange: Exchange | None = None
        self.head: RequestHead | None = None
        self.head_only = False
        self.content_length = -1
        self.received = 0
        self.request_ended = False
        # Flow-controlled bytes received but not yet handed back (the upstream is not
        # taking the body: pause_body), acknowledged on resume_body.
        self.unacked = 0
        self.body_paused = False
        self.response_parser: ResponseParser | None = None
        self.pending_head: Headers | None = None
        self.out: list[bytes] = []
        self.out_size = 0
        self.complete = False  # the whole response has been parsed back
        self.done = False  # the exchange is over (exchange_done)
        self.end_sent = False
        self.is_write_paused = False

    # ---- request side (the connection calls these) ----

    def start(self, request: H2Request, ended: bool) -> None:
        """Parse the rendered head and start the exchange, or answer the error."""
        self.request_ended = ended
        self.content_length = request.content_length
        parser = RequestParser(_HeadSink(self), self.worker.client_limits)
        conn = self.conn
        # A parser per stream, but the Host check remembered per connection, as an
        # HTTP/1.1 connection's parser remembers it: its streams send the same one.
        good_host, good_name = conn.good_host
        if good_host:
            parser.trust_host(good_host, good_name)
        try:
            parser.feed(request.head_bytes)
        except ProtocolError as exc:
            _log.info("bad HTTP/2 request from %s: %s", self.remote_addr.decode(), exc.reason)
            self.respond_error(exc.status, exc.reason)
            return
        finally:
            parser.close()  # one head only (see RequestParser.close)
        conn.good_host = parser.trusted_host
        head = self.head
        if head is None:  # cannot happen: a whole head was fed
            self.respond_error(400, "Bad Request")
            return
        self.head_only = head.method == b"HEAD"
        ex = self.exchange = Exchange(self, head)
        if parser.expect_continue and not ended:
            self.conn.send_informational(self, 100)
        # The request's end comes as h2's StreamEnded event, even with END_STREAM on
        # HEADERS (on_end).
        ex.start()

    def on_request_head(self, head: RequestHead) -> None:
        self.head = head

    def on_data(self, data: bytes) -> bool:
        """A DATA frame's payload; False when it breaks the declared content-length
        (RFC 9113 8.1.1: the stream is then reset)."""
        self.received += len(data)
        if 0 <= self.content_length < self.received:
            return False
        ex = self.exchange
        if ex is not None and data and not ex.finished:
            ex.on_request_body(data)
        return True

    def on_end(self) -> bool:
        """END_STREAM from the client; False on a content-length mismatch."""
        self.request_ended = True
        if self.content_length >= 0 and self.received != self.content_length:
            return False
        ex = self.exchange
        if ex is not None and not ex.finished:
            ex.on_request_end()
        return True

    def abandon(self) -> None:
        """The stream was reset (by either side) or the connection is gone."""
        self.closed = True
        ex = self.exchange
        if ex is not None:
            ex.client_gone()
        self.release()

    def release(self) -> None:
        """The stream is over (abandoned, or its END_STREAM sent) and its connection
        has forgotten it; nothing is written after this. The exchange (which holds this
        stream) and the parse-back parser (see ResponseParser.close) are let go: with
        them kept, every request left a reference cycle for the cyclic garbage
        collector, whose full collections then held a worker for up to 0.17 s."""
        self.exchange = None
        parser, self.response_parser = self.response_parser, None
        if parser is not None:
            parser.close()

    # ---- called by the exchange (the ClientConnection interface) ----

    def write(self, data: bytes) -> None:
        if self.closed or self.end_sent:
            return
        parser = self.response_parser
        if parser is None:
            parser = self.response_parser = ResponseParser(_ParseBack(self))
            parser.expect(self.head_only)
        try:
            parser.feed(data)
        except UpstreamProtocolError as exc:
            # What the exchange wrote is ours: a failure to parse it back is our bug.
            _log.error("cannot relay a response on HTTP/2 stream %d: %s", self.stream_id, exc)
            self.conn.reset_stream(self, internal=True)
            return
        if not self.complete:
            # A whole response waits for exchange_done, which every exchange calls
            # right after its last write: the last DATA frame then carries END_STREAM.
            self.conn.send_response(self)

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None:
        self.done = True
        if self.closed:
            return
        if not self.complete:
            # Truncated (or nginx's 444): the client must not take it for a whole body.
            self.conn.reset_stream(self, internal=True)
            return
        self.conn.send_response(self)

    def pause_body(self) -> None:
        self.body_paused = True

    def resume_body(self) -> None:
        if self.body_paused:
            self.body_paused = False
            self.conn.acknowledge(self)

    def start_tunnel(self, ex: Exchange) -> None:
        # No Upgrade reaches an exchange over HTTP/2 (the field is connection-specific
        # and refused as malformed), and CONNECT is answered 405: never a tunnel.
        self.conn.reset_stream(self, internal=True)

    # ---- ResponseSink (the parse-back of what the exchange wrote) ----

    def on_response_head(self, head: ResponseHead) -> None:
        self.pending_head = response_fields(head)

    def on_response_body(self, data: bytes) -> None:
        self.out.append(data)
        self.out_size += len(data)

    def on_response_end(self, keep_alive: bool) -> None:
        self.complete = True

    # ---- local answers ----

    def respond_error(self, status: int, reason: str) -> None:
        """An answer of our own with no exchange (a head the parser refused)."""
        self.write(error_response(status, reason, False, self.worker.date_line))
        self.exchange_done_local()

    def exchange_done_local(self) -> None:
        self.done = True
        if not self.closed:
            self.conn.send_response(self)

    def __repr__(self) -> str:
        return (
            f"H2Stream({self.stream_id} {self.head!r} complete={self.complete}"
            f" end_sent={self.end_sent} out={self.out_size})"
        )
