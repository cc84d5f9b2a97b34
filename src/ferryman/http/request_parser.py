"""Request framing: httptools (llhttp) wrapped into a sans-I/O parser with the checks
llhttp leaves to its user.

llhttp, in its default strict mode, already refuses Content-Length together with
Transfer-Encoding, duplicate Content-Length, bare CR/LF, obs-fold, whitespace before the
colon and malformed chunk sizes. On top of it this module enforces: a bounded head,
exactly one valid Host on HTTP/1.1, HTTP/1.0 and 1.1 only, the request-target forms of
RFC 9112 section 3.2, and only `chunked` as a transfer coding.

Events go to a `RequestSink`; errors are `ProtocolError` with the status to answer.
"""

from __future__ import annotations

from typing import Protocol

import httptools

from ferryman.errors import ProtocolError
from ferryman.http.fields import is_valid_host, parse_connection_tokens, parse_content_length
from ferryman.http.messages import Framing, RequestHead

__all__ = ["MAX_HEADERS", "MAX_HEAD_BYTES", "RequestParser", "RequestSink"]

# nginx: large_client_header_buffers 4 8k (32 KiB of request line + headers); HAProxy's
# tune.bufsize is 16 KiB. 64 KiB leaves room for fat cookies and still bounds memory.
MAX_HEAD_BYTES = 64 * 1024
# HAProxy's default (tune.http.maxhdr).
MAX_HEADERS = 101

_EMPTY: frozenset[bytes] = frozenset()
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}
_K_HOST, _K_CL, _K_TE, _K_CONN, _K_UPGRADE, _K_EXPECT = range(6)
_SPECIAL = {
    b"host": _K_HOST,
    b"content-length": _K_CL,
    b"transfer-encoding": _K_TE,
    b"connection": _K_CONN,
    b"upgrade": _K_UPGRADE,
    b"expect": _K_EXPECT,
}


class RequestSink(Protocol):
    def on_request_head(self, head: RequestHead) -> None: ...

    def on_request_body(self, data: bytes) -> None: ...

    def on_request_end(self) -> None: ...


class RequestParser:
    """Feed bytes with `feed`; complete messages come out as sink events, in order.

    `feed` returns the bytes that follow an Upgrade or CONNECT request head: llhttp stops
    there, and what those bytes are is for the proxy to decide.
    """

    __slots__ = (
        "_expect_continue",
        "_head_bytes",
        "_headers",
        "_in_head",
        "_p",
        "_sink",
        "_url",
    )

    def __init__(self, sink: RequestSink) -> None:
        self._sink = sink
        self._p = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = False
        self._head_bytes = 0
        self._expect_continue = False

    @property
    def expect_continue(self) -> bool:
        """The last request head asked for `100 Continue` before sending its body."""
        return self._expect_continue

    def feed(self, data: bytes) -> bytes | None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                raise ProtocolError("request head too large", 431)
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
        return None

    # ---- httptools callbacks (called from inside feed_data) ----

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._in_head = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        if len(headers) >= MAX_HEADERS:
            raise ProtocolError("too many header fields", 431)
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._sink.on_request_head(self._build_head())

    def on_body(self, body: bytes) -> None:
        self._sink.on_request_body(body)

    def on_message_complete(self) -> None:
        self._sink.on_request_end()

    # ---- validation ----

    def _build_head(self) -> RequestHead:
        p = self._p
        version = _VERSIONS.get(p.get_http_version())
        if version is None:
            raise ProtocolError("unsupported HTTP version", 505)
        method: bytes = p.get_method()
        host: bytes | None = None
        hosts = 0
        content_length = -1
        chunked = False
        tokens = _EMPTY
        upgrade: bytes | None = None
        expect = False
        for name, value in self._headers:
            kind = _SPECIAL.get(name.lower())
            if kind is None:
                continue
            if kind == _K_HOST:
                host = value
                hosts += 1
            elif kind == _K_CL:
                content_length = parse_content_length(value)
            elif kind == _K_TE:
                chunked = _check_transfer_coding(value)
            elif kind == _K_CONN:
                tokens = tokens | parse_connection_tokens(value)
            elif kind == _K_UPGRADE:
                upgrade = value
            elif kind == _K_EXPECT:
                if value.lower() != b"100-continue":
                    raise ProtocolError("unsupported expectation", 417)
                expect = True
        if hosts > 1 or (hosts == 0 and version == b"1.1"):
            raise ProtocolError("HTTP/1.1 requires exactly one Host header")
        if host is not None and not is_valid_host(host):
            raise ProtocolError("invalid Host header")
        url = self._url
        path, query, host = _split_target(method, url, host)
        if chunked:
            framing = Framing.CHUNKED
        elif content_length > 0:
            framing = Framing.LENGTH
        else:
            framing = Framing.NONE
            content_length = 0
        self._expect_continue = expect
        return RequestHead(
            method,
            url,
            version,
            self._headers,
            host,
            p.should_keep_alive(),
            framing,
            content_length,
            tokens,
            upgrade if b"upgrade" in tokens else None,
            path,
            query,
        )


def _check_transfer_coding(value: bytes) -> bool:
    # Only `chunked` is implemented; RFC 9112 6.1: an unknown coding gets 501, and a
    # request whose final coding is not chunked cannot be framed at all (400).
    codings = [c.strip(b" \t").lower() for c in value.split(b",")]
    if codings == [b"chunked"]:
        return True
    if codings and codings[-1] == b"chunked":
        raise ProtocolError("unsupported transfer coding", 501)
    raise ProtocolError("request transfer coding must end in chunked")


def _split_target(
    method: bytes, url: bytes, host: bytes | None
) -> tuple[bytes, bytes, bytes | None]:
    """RFC 9112 3.2: origin-form, absolute-form, authority-form (CONNECT), asterisk-form."""
    if url[:1] == b"/":
        if b"#" in url:
            raise ProtocolError("fragment in request target")
        path, _, query = url.partition(b"?")
        return path, query, host
    if method == b"CONNECT":
        if not is_valid_host(url) or b":" not in url:
            raise ProtocolError("CONNECT needs host:port")
        return b"", b"", url
    if url == b"*":
        if method != b"OPTIONS":
            raise ProtocolError("asterisk-form is only for OPTIONS")
        return b"*", b"", host
    lower = url[:8].lower()
    if lower.startswith(b"http://") or lower.startswith(b"https://"):
        rest = url[url.index(b"//") + 2 :]
        slash = rest.find(b"/")
        authority = rest if slash < 0 else rest[:slash]
        target = b"/" if slash < 0 else rest[slash:]
        if not authority or b"@" in authority or not is_valid_host(authority):
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
