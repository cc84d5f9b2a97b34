"""Request framing: httptools (llhttp) wrapped into a sans-I/O parser with the checks
llhttp leaves to its user.

llhttp, in its default strict mode, already refuses Content-Length together with
Transfer-Encoding, duplicate Content-Length, bare CR/LF, obs-fold, whitespace before the
colon and malformed chunk sizes. On top of it this module enforces: a bounded request
line (414), head and field count (431) from `ClientLimits`, exactly one valid Host on
HTTP/1.1, HTTP/1.0 and 1.1 only, the request-target forms of RFC 9112 section 3.2, only
`chunked` as a transfer coding, no body on an Upgrade request (llhttp would hand it over
as tunnel bytes), and bounded chunk metadata. Trailer fields are read and dropped: the
body is re-chunked upstream without them, and they must never leak into the next head.

Known gap: llhttp also accepts `RTSP/1.0` and `ICE/1.0` request lines and reports only
the version digits; such a request is re-serialised upstream as HTTP/1.x, so no
ambiguous line ever leaves the proxy.

The headers are walked exactly once, here: the same pass validates them and renders
the end-to-end ones as they will be sent upstream (`RequestHead.fields`).
Events go to a `RequestSink`; errors are `ProtocolError` with the status to answer.
"""

from __future__ import annotations

from typing import Final

import httptools
from mypy_extensions import mypyc_attr

from ferryman.config.schema import ClientLimits
from ferryman.errors import ProtocolError
from ferryman.http.fields import (
    COMPILED,
    HOP_BY_HOP,
    equals_lower,
    host_name,
    is_token_name,
    is_valid_host,
    length_mask,
    lower_name,
    names_end_to_end,
    parse_connection_tokens,
    parse_content_length,
    trim_ows,
)
from ferryman.http.messages import Framing, RequestHead

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "MAX_REQUEST_LINE",
    "PROXY_MANAGED",
    "RequestParser",
    "RequestSink",
]

# The defaults of config.schema.ClientLimits (see there for the precedents): a request
# line of 8 KiB (nginx's buffer size), a 64 KiB head, 100 fields.
_DEFAULT_LIMITS: Final = ClientLimits()
MAX_HEAD_BYTES: Final = _DEFAULT_LIMITS.header_bytes
MAX_HEADERS: Final = _DEFAULT_LIMITS.headers
MAX_REQUEST_LINE: Final = _DEFAULT_LIMITS.request_line

# Fields the proxy never copies: hop-by-hop ones, and those it writes itself.
PROXY_MANAGED: Final = HOP_BY_HOP | {
    b"host",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
_MANAGED_LENGTHS: Final = length_mask(PROXY_MANAGED)
# Targets up to this long are scanned byte by byte (`_split_target`), compiled; longer
# ones by find(), whose fixed cost a byte loop overtakes at about this length.
_SCAN_MAX: Final = 64

_EMPTY: Final[frozenset[bytes]] = frozenset()
_VERSIONS: Final = {"1.1": b"1.1", "1.0": b"1.0"}
_NONE: Final = Framing.NONE
_LENGTH: Final = Framing.LENGTH
_CHUNKED: Final = Framing.CHUNKED


@mypyc_attr(allow_interpreted_subclasses=True)
class RequestSink:
    """Where a RequestParser's events go (the client connection; an HTTP/2 stream's
    head parse). A base class rather than a typing.Protocol so that the compiled build
    calls it through its vtable: through a protocol each event is a lookup by name."""

    __slots__ = ()

    def on_request_head(self, head: RequestHead) -> None:
        raise NotImplementedError

    def on_request_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_request_end(self) -> None:
        raise NotImplementedError


class RequestParser:
    """Feed bytes with `feed`; complete messages come out as sink events, in order.

    `feed` returns the bytes that follow an Upgrade or CONNECT request head: llhttp stops
    there, and what those bytes are is for the proxy to decide.
    """

    __slots__ = (
        "_body_seen",
        "_busy",
        "_expect_continue",
        "_first",
        "_fresh",
        "_good_host",
        "_good_name",
        "_head_bytes",
        "_head_started",
        "_headers",
        "_in_head",
        "_max_fields",
        "_max_head",
        "_max_line",
        "_p",
        "_quiet",
        "_sink",
        "_url",
    )
    # `close` deletes these (mypyc lets a native class delete only what is listed).
    __deletable__ = ("_p", "_sink")

    def __init__(self, sink: RequestSink, limits: ClientLimits = _DEFAULT_LIMITS) -> None:
        self._sink = sink
        self._max_line = limits.request_line
        self._max_head = limits.header_bytes
        self._max_fields = limits.headers
        # Bytes fed since the last body byte while inside a body: chunk-size lines,
        # extensions and trailers, none of which carries data (see `feed`).
        self._quiet = 0
        self._body_seen = False
        self._p = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = True
        self._head_bytes = 0
        self._head_started = False
        self._expect_continue = False
        self._busy = False
        # The last Host value that passed validation: a kept-alive client sends the same
        # one every time, and a bytes comparison is cheaper than the regex.
        self._good_host = b""
        # And its $host form (fields.host_name), carried on each head that has it.
        self._good_name = b""
        # The next read starts a request (none is part-read), and the read that began
        # with the request being parsed, if one did (see `_method_and_version`).
        self._fresh = True
        self._first = b""

    @property
    def busy(self) -> bool:
        """Part of a request has been read (a head or body not yet complete)."""
        return self._busy

    @property
    def expect_continue(self) -> bool:
        """The last request head asked for `100 Continue` before sending its body."""
        return self._expect_continue

    def close(self) -> None:
        """The connection is gone; nothing is fed after this. httptools' parser holds
        this object's callbacks (bound methods) and this object holds it and its sink,
        the connection, which holds this object: reference cycles that only the cyclic
        garbage collector would free. Letting go of both frees a closed connection at
        once (with one connection per request, the collector took 5.7% of a worker)."""
        del self._p
        del self._sink

    def trust_host(self, host: bytes, name: bytes) -> None:
        """Seed the last Host value that passed validation, and its name: for a parser
        made per request (an HTTP/2 stream's), its connection's last one."""
        self._good_host = host
        self._good_name = name

    @property
    def trusted_host(self) -> tuple[bytes, bytes]:
        """The last Host value that passed validation and its name (b"" before one)."""
        return self._good_host, self._good_name

    def feed(self, data: bytes) -> bytes | None:
        if self._fresh:
            self._first = data
        try:
            self._p.feed_data(data)
        except httptools.HttpParserUpgrade as up:
            return data[up.args[0] :]
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise
        except httptools.HttpParserError as exc:
            raise ProtocolError(f"malformed request: {_reason(exc)}") from None
        # No request part-read: the next read begins a new one.
        self._fresh = not self._busy
        if self._in_head:
            # Counted after parsing: a read may carry a whole head and a large body.
            # A head that began in this read (after a message ended in it) is counted
            # from the next read on, so the bound is the head limit plus one read.
            if self._head_started:
                self._head_started = False
            else:
                self._head_bytes += len(data)
                if self._head_bytes > self._max_head:
                    raise ProtocolError("request head too large", 431)
        else:
            # Inside a body, every read that carries data resets this; what does not is
            # chunk metadata. httptools buffers a trailer field whole, so an endless one
            # would grow without bound: it is held to the head limit (nginx refuses
            # oversized chunk lines the same way).
            if self._body_seen:
                self._body_seen = False
                self._quiet = 0
            else:
                self._quiet += len(data)
            if self._quiet > self._max_head:
                raise ProtocolError("chunk metadata or trailer section too large")
        return None

    # ---- httptools callbacks (called from inside feed_data) ----
    # State is reset once the head is consumed; on_message_begin only marks that a
    # request has begun (for a client that half-closes in the middle of one).

    def on_message_begin(self) -> None:
        self._busy = True

    def on_url(self, url: bytes) -> None:
        if self._url:
            url = self._url + url  # a target split across reads
        # nginx: a request line longer than large_client_header_buffers' size is 414.
        # Checked as it grows, so an endless target never reaches the head limit first.
        if len(url) > self._max_line:
            raise ProtocolError("request line too long", 414)
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            self._headers.append((name, value))
        # Else a trailer field (RFC 9112 7.1.2): dropped. Kept, it would become a field
        # of the next request on this connection.

    def on_headers_complete(self) -> None:
        head = self._build_head()
        self._url = b""
        self._headers = []
        self._in_head = False
        self._head_bytes = 0
        self._sink.on_request_head(head)

    def on_body(self, body: bytes) -> None:
        self._body_seen = True
        self._sink.on_request_body(body)

    def on_message_complete(self) -> None:
        self._quiet = 0
        self._busy = False
        self._in_head = True
        self._head_started = True
        self._sink.on_request_end()

    # ---- validation ----

    def _method_and_version(self) -> tuple[bytes, bytes]:
        """The request line's method and version. llhttp's get_method() and
        get_http_version() build a new object each (the version a formatted string, then
        looked up); a request line that starts its read is read off that read instead,
        when it is `METHOD SP target SP HTTP/1.1 CRLF` with the target llhttp reported.
        Anything else (a pipelined request, a line split across reads, a leading empty
        line, another version) asks llhttp."""
        p = self._p
        first = self._first
        if first:
            self._first = b""  # the read's first request only
            method: bytes = b"GET" if first.startswith(b"GET ") else p.get_method()
            url = self._url
            m = len(method) + 1
            n = m + len(url)
            if (
                first[n : n + 11] == b" HTTP/1.1\r\n"
                and first[m:n] == url
                and first.startswith(method)
            ):
                return method, b"1.1"
        else:
            method = p.get_method()
        found = _VERSIONS.get(p.get_http_version())
        if found is None:
            raise ProtocolError("unsupported HTTP version", 505)
        return method, found

    def _build_head(self) -> RequestHead:
        p = self._p
        headers = self._headers
        if len(headers) > self._max_fields:
            raise ProtocolError("too many header fields", 431)
        method, version = self._method_and_version()
        host: bytes | None = None
        hosts = 0
        content_length = -1
        codings = 0
        chunked = expect = False
        tokens = _EMPTY
        upgrade = forwarded_for = None
        lines = []
        other_forwarded: list[bytes] = []
        # The head's size without optional whitespace: `feed` counts only heads still
        # incomplete after a read, and a whole oversized head can arrive in one read.
        size = len(self._url) + 3 * len(headers)
        for name, value in headers:
            n = len(name)
            size += n + len(value)
            # nginx's ignore_invalid_headers: a name with anything but letters, digits
            # and '-' is not passed on. `Transfer_Encoding` and `Content_Length` would
            # otherwise reach a CGI/WSGI-style origin as framing fields.
            if not (_MANAGED_LENGTHS >> n) & 1:
                if is_token_name(name):  # no managed name is as long
                    lines.append(b"%s: %s\r\n" % (name, value))
                continue
            if n == 4 and equals_lower(name, b"host", b"Host"):  # every request's: no lookup
                # llhttp strips the leading whitespace of a value, not the trailing.
                host = trim_ows(value)
                hosts += 1
                continue
            ln = lower_name(name)
            if ln not in PROXY_MANAGED:
                if is_token_name(name):
                    lines.append(b"%s: %s\r\n" % (name, value))
            elif ln == b"content-length":
                content_length = parse_content_length(trim_ows(value))
            elif ln == b"transfer-encoding":
                # Two fields are one list (RFC 9110 5.3): `chunked` twice is invalid.
                codings += 1
                chunked = _check_transfer_coding(value)
            elif ln == b"connection":
                listed = parse_connection_tokens(value)
                tokens = tokens | listed if tokens else listed
            elif ln == b"upgrade":
                upgrade = value
            elif ln == b"x-forwarded-proto" or ln == b"x-forwarded-host":
                # Replaced when the route adds its own, passed on otherwise.
                other_forwarded.append(b"%s: %s\r\n" % (name, value))
            elif ln == b"x-forwarded-for":
                forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            elif ln == b"expect":
                if value.lower() != b"100-continue":
                    raise ProtocolError("unsupported expectation", 417)
                expect = True
        if size > self._max_head:
            raise ProtocolError("request head too large", 431)
        if codings > 1:
            raise ProtocolError("Transfer-Encoding repeated")
        if chunked and version == b"1.0":
            # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request")
        if hosts > 1 or (hosts == 0 and version == b"1.1"):
            raise ProtocolError("HTTP/1.1 requires exactly one Host header")
        if host is not None and host != self._good_host:
            if not is_valid_host(host):
                raise ProtocolError("invalid Host header")
            self._good_host = host
            self._good_name = host_name(host)
        if names_end_to_end(tokens):
            # RFC 9110 7.6.1: fields named in Connection are hop-by-hop too, removed
            # before the proxy adds its own (X-Forwarded-* included).
            lines = [ln for ln in lines if ln.split(b":", 1)[0].lower() not in tokens]
            if b"x-forwarded-for" in tokens:
                forwarded_for = None
            if other_forwarded and not tokens.isdisjoint(_FORWARDED_OTHER):
                other_forwarded = [
                    ln for ln in other_forwarded if ln.split(b":", 1)[0].lower() not in tokens
                ]
        if upgrade is not None and b"upgrade" in tokens:
            if chunked or content_length > 0:
                # llhttp treats everything after an Upgrade head as the new protocol, so
                # the body would reach the upstream unframed (or not at all).
                raise ProtocolError("Upgrade request with a body")
            if _offers_h2c(upgrade):
                # h2c is never honoured (the Upgrade: h2c smuggling technique): the value
                # is normalised so that no route passes it on.
                upgrade = b"h2c"
        url = self._url
        path, query, host = _split_target(method, url, host)
        named: bytes | None = None
        if host is not None:
            # An absolute-form or CONNECT target names a host of its own.
            named = self._good_name if host == self._good_host else host_name(host)
        if chunked:
            framing = _CHUNKED
        elif content_length > 0:
            framing = _LENGTH
        else:
            framing = _NONE
            content_length = 0
        self._expect_continue = expect
        # llhttp stops after a CONNECT head and parses nothing more: no tunnel is ever
        # made for it here, so the connection closes after the answer. (After a refused
        # Upgrade the connection starts a fresh parser on what followed.)
        stops = method == b"CONNECT"
        return RequestHead(
            method,
            url,
            version,
            headers,
            host,
            p.should_keep_alive() and not stops,
            framing,
            content_length,
            tokens,
            upgrade if b"upgrade" in tokens else None,
            path,
            query,
            b"".join(lines),
            forwarded_for,
            b"".join(other_forwarded) if other_forwarded else b"",
            named,
        )


_FORWARDED_OTHER: Final = frozenset({b"x-forwarded-proto", b"x-forwarded-host"})


def _offers_h2c(value: bytes) -> bool:
    # Upgrade = #protocol, protocol = name ["/" version] (RFC 9110 7.8).
    return any(trim_ows(p).split(b"/", 1)[0].lower() == b"h2c" for p in value.split(b","))


def _check_transfer_coding(value: bytes) -> bool:
    # Only `chunked` is implemented; RFC 9112 6.1: an unknown coding gets 501, and a
    # request whose final coding is not chunked cannot be framed at all (400).
    codings = [trim_ows(c).lower() for c in value.split(b",")]
    if codings == [b"chunked"]:
        return True
    if codings and codings[-1] == b"chunked":
        raise ProtocolError("unsupported transfer coding", 501)
    raise ProtocolError("request transfer coding must end in chunked")


def _split_target(
    method: bytes, url: bytes, host: bytes | None
) -> tuple[bytes, bytes, bytes | None]:
    """RFC 9112 3.2: origin-form, absolute-form, authority-form (CONNECT), asterisk-form."""
    if url and url[0] == 0x2F and method != b"CONNECT":  # "/", read natively
        n = len(url)
        q = -1
        if COMPILED and n <= _SCAN_MAX:
            # One native pass over a short target: find() is a method call by name that
            # parses its arguments the slow way, twice per request. (Not `in` either:
            # CPython's bytes `in` first tries the operand as an integer and formats,
            # then drops, a TypeError for a bytes one.)
            for i in range(n):
                c = url[i]
                if c == 0x23:  # '#'
                    raise ProtocolError("fragment in request target")
                if c == 0x3F and q < 0:  # '?'
                    q = i
        else:
            if url.find(b"#") >= 0:
                raise ProtocolError("fragment in request target")
            q = url.find(b"?")
        if q < 0:
            return url, b"", host  # most targets: no query, nothing to copy
        return url[:q], url[q + 1 :], host
    if method == b"CONNECT":
        if not is_valid_host(url) or b":" not in url:
            raise ProtocolError("CONNECT needs host:port")
        return b"", b"", url
    if url == b"*":
        if method != b"OPTIONS":
            raise ProtocolError("asterisk-form is only for OPTIONS")
        return b"*", b"", host
    lower = url[:8].lower()
    if lower.startswith((b"http://", b"https://")):
        rest = url[url.index(b"//") + 2 :]
        slash = rest.find(b"/")
        authority = rest if slash < 0 else rest[:slash]
        target = b"/" if slash < 0 else rest[slash:]
        # RFC 9110 4.2.1: an http(s) URI with an empty host is invalid (`http://:80/`).
        if (
            not authority
            or authority[:1] == b":"
            or b"@" in authority
            or not is_valid_host(authority)
        ):
            raise ProtocolError("invalid authority in absolute-form target")
        if b"#" in target:
            raise ProtocolError("fragment in request target")
        path, _, query = target.partition(b"?")
        # RFC 9112 3.2.2: the target's authority overrides Host.
        return path, query, authority
    raise ProtocolError("invalid request target")


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text[:80] if text else type(exc).__name__
