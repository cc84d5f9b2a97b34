"""Request smuggling corpus: malformed and ambiguous requests over raw sockets against a
real `ferryman run` in front of the recording backend (tests/support/recorder.py).

Written from RFC 9112 (sections 2 to 7), RFC 9110 section 5, and the published
request smuggling research (CL.TE, TE.CL, TE.TE obfuscation, chunk-extension and
chunk-size tricks, pipelined requests hidden behind a valid one). For every case the
client gets the listed statuses in order, the last says `Connection: close`, the
connection closes, and the backend received exactly the listed requests, each framed
unambiguously (the recorder's strict parser found no error), and never the bytes the
case marks as smuggled.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.procs import ProxyProcess, free_port, start_proxy
from support.rawhttp import RawClient, RawResponse
from support.recorder import FramingError, Recorder, parse_request

TOP = "timeouts: {client_header: 2s, client_body: 2s, keepalive: 2s}"


def config(port: int, backend: str) -> str:
    # `/small/` answers 413 before reading a body over 8 bytes; both routes keep
    # upstream connections alive, so a desynchronised one would be reused.
    return (
        f"workers: 1\n{TOP}\n"
        f'upstreams:\n  app:\n    servers:\n      - {{address: "{backend}"}}\n'
        f'servers:\n  - listen: "127.0.0.1:{port}"\n    routes:\n'
        "      - {path: /small/, upstream: app, client_max_body_size: 8}\n"
        "      - {path: /, upstream: app}\n"
    )


@dataclass(frozen=True)
class Stack:
    recorder: Recorder
    proxy: ProxyProcess

    @property
    def port(self) -> int:
        return self.proxy.port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("smuggling-requests")
    with Recorder() as recorder:
        port = free_port()
        proxy = start_proxy(workdir, config(port, recorder.address), port)
        try:
            yield Stack(recorder, proxy)
        finally:
            proxy.stop()


def req(*lines: bytes, start: bytes = b"POST /x HTTP/1.1", body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


H = b"Host: a"
TE = b"Transfer-Encoding: chunked"
# The request a smuggling attempt hides; the marker must never reach the backend.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
FIRST = req(H, start=b"GET /first HTTP/1.1")


def chunked(body: bytes, *lines: bytes) -> bytes:
    return req(H, TE, *lines, body=body)


@dataclass(frozen=True)
class Case:
    data: bytes
    # Statuses the client reads, in order; a tuple in the list allows alternatives.
    statuses: tuple[int | tuple[int, ...], ...] = (400,)
    # Targets the backend must receive (exactly these, in order).
    reached: tuple[bytes, ...] = ()
    # Bytes (compared case-insensitively) that must never reach the backend.
    forbidden: bytes = b"smuggled"
    # Half-close the client side after sending (a request cut short).
    half_close: bool = False


def p(id_: str, case: Case) -> object:
    return pytest.param(case, id=id_)


CORPUS = [
    # --- CL.TE / TE.CL: both framing fields (RFC 9112 6.3 rule 3, refused outright)
    p("cl-te", Case(req(H, b"Content-Length: 40", TE, body=b"0\r\n\r\n" + SMUGGLED))),
    p(
        "te-cl",
        Case(req(H, TE, b"Content-Length: 4", body=b"5c\r\n" + SMUGGLED + b"\r\n0\r\n\r\n")),
    ),
    p("cl-te-zero-cl", Case(req(H, b"Content-Length: 0", TE, body=b"0\r\n\r\n" + SMUGGLED))),
    p("cl-te-expect", Case(req(H, b"Expect: 100-continue", b"Content-Length: 5", TE))),
    # --- Content-Length values (RFC 9110 8.6: 1*DIGIT, one value)
    p("cl-duplicate-same", Case(req(H, b"Content-Length: 5", b"Content-Length: 5", body=b"hello"))),
    p(
        "cl-duplicate-differ",
        Case(req(H, b"Content-Length: 5", b"Content-Length: 36", body=b"hello" + SMUGGLED)),
    ),
    p("cl-list-same", Case(req(H, b"Content-Length: 5, 5", body=b"hello"))),
    p("cl-list-differ", Case(req(H, b"Content-Length: 5, 36", body=b"hello" + SMUGGLED))),
    p("cl-plus-sign", Case(req(H, b"Content-Length: +5", body=b"hello"))),
    p("cl-minus-sign", Case(req(H, b"Content-Length: -1", body=b"hello"))),
    p("cl-leading-junk", Case(req(H, b"Content-Length: x5", body=b"hello"))),
    p("cl-trailing-junk", Case(req(H, b"Content-Length: 5x", body=b"hello"))),
    p("cl-hex", Case(req(H, b"Content-Length: 0x5", body=b"hello"))),
    p("cl-inner-space", Case(req(H, b"Content-Length: 5 5", body=b"hello"))),
    p("cl-underscore", Case(req(H, b"Content-Length: 1_0", body=b"0123456789"))),
    p("cl-huge", Case(req(H, b"Content-Length: 99999999999999999999999", body=b"hello"))),
    p("cl-empty", Case(req(H, b"Content-Length:", body=b"hello"))),
    p("cl-unicode-digit", Case(req(H, "Content-Length: \u0665".encode(), body=b"hello"))),
    p("cl-vertical-tab", Case(req(H, b"Content-Length: \x0b5", body=b"hello"))),
    p("cl-space-before-colon", Case(req(H, b"Content-Length : 36", body=SMUGGLED))),
    # --- TE.TE obfuscation: a coding one side does not see as chunked
    p("te-xchunked", Case(req(H, b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n" + SMUGGLED))),
    p(
        "te-chunked-identity",
        Case(req(H, b"Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n")),
    ),
    p("te-identity", Case(req(H, b"Transfer-Encoding: identity", body=b"0\r\n\r\n"))),
    p(
        "te-gzip-chunked",
        Case(req(H, b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), (501,)),
    ),
    p("te-duplicated", Case(req(H, TE, TE, body=b"0\r\n\r\n" + SMUGGLED))),
    p(
        "te-chunked-then-identity",
        Case(req(H, TE, b"Transfer-Encoding: identity", body=b"0\r\n\r\n")),
    ),
    p(
        "te-space-before-colon",
        Case(req(H, b"Transfer-Encoding : chunked", b"Content-Length: 5", body=b"0\r\n\r\n")),
    ),
    p(
        "te-tab-value-with-cl",
        Case(
            req(
                H,
                b"Transfer-Encoding:\tchunked",
                b"Content-Length: 40",
                body=b"0\r\n\r\n" + SMUGGLED,
            )
        ),
    ),
    p(
        "te-leading-space-line",
        Case(req(H, b"Content-Length: 5", b" Transfer-Encoding: chunked", body=b"0\r\n\r\n")),
    ),
    p("te-vertical-tab", Case(req(H, b"Transfer-Encoding: \x0bchunked", body=b"0\r\n\r\n"))),
    p("te-nul", Case(req(H, b"Transfer-Encoding: chunked\x00", body=b"0\r\n\r\n"))),
    p("te-quoted", Case(req(H, b'Transfer-Encoding: "chunked"', body=b"0\r\n\r\n"))),
    p("te-empty", Case(req(H, b"Transfer-Encoding:", body=b"0\r\n\r\n"))),
    p("te-trailing-comma", Case(req(H, b"Transfer-Encoding: chunked,", body=b"0\r\n\r\n"))),
    p("te-in-http10", Case(req(TE, start=b"POST /x HTTP/1.0", body=b"0\r\n\r\n" + SMUGGLED))),
    p(
        "te-cl-in-http10",
        Case(req(b"Content-Length: 5", TE, start=b"POST /x HTTP/1.0", body=b"0\r\n\r\n")),
    ),
    p(
        "te-obs-fold-value",
        Case(req(H, b"Transfer-Encoding: identity", b" chunked", body=b"0\r\n\r\n")),
    ),
    # --- chunk sizes and extensions (RFC 9112 7.1)
    p("chunk-size-not-hex", Case(chunked(b"5\r\nhello\r\nzz\r\n" + SMUGGLED))),
    p("chunk-size-overflow", Case(chunked(b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n"))),
    p("chunk-size-negative", Case(chunked(b"-5\r\nhello\r\n0\r\n\r\n"))),
    p("chunk-size-0x", Case(chunked(b"0x5\r\nhello\r\n0\r\n\r\n"))),
    p("chunk-size-leading-space", Case(chunked(b" 5\r\nhello\r\n0\r\n\r\n"))),
    p("chunk-size-trailing-space", Case(chunked(b"5 \r\nhello\r\n0\r\n\r\n"))),
    p("chunk-size-empty", Case(chunked(b"\r\nhello\r\n0\r\n\r\n"))),
    p("chunk-ext-bare-cr", Case(chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"))),
    p("chunk-ext-bare-lf-smuggle", Case(chunked(b"5;a\n0\r\n\r\n" + SMUGGLED))),
    p("chunk-ext-quoted-crlf", Case(chunked(b'5;a="b\r\n"\r\nhello\r\n0\r\n\r\n'))),
    p("chunk-ext-nul", Case(chunked(b"5;a\x00\r\nhello\r\n0\r\n\r\n"))),
    p("chunk-data-no-crlf", Case(chunked(b"5\r\nhelloXX0\r\n\r\n" + SMUGGLED))),
    p("chunk-data-bare-lf", Case(chunked(b"5\r\nhello\n0\r\n\r\n"))),
    p("chunk-size-short-smuggle", Case(chunked(b"5\r\nhi\r\n" + SMUGGLED + b"0\r\n\r\n"))),
    p("last-chunk-bare-lf", Case(chunked(b"0\r\n\n" + SMUGGLED))),
    # --- field syntax (RFC 9112 5, 2.2; RFC 9110 5.5)
    p("obs-fold", Case(req(H, b"X-A: b", b" c", start=b"GET /x HTTP/1.1"))),
    p("obs-fold-tab", Case(req(H, b"X-A: b", b"\tc", start=b"GET /x HTTP/1.1"))),
    p("bare-cr-in-value", Case(req(H, b"X-A: b\rc", start=b"GET /x HTTP/1.1"))),
    p("bare-lf-in-value", Case(req(H, b"X-A: b\nGET /smuggled", start=b"GET /x HTTP/1.1"))),
    p("bare-lf-line-ends", Case(b"GET /x HTTP/1.1\nHost: a\n\n" + SMUGGLED)),
    p("bare-cr-line-ends", Case(b"GET /x HTTP/1.1\rHost: a\r\r" + SMUGGLED)),
    p("nul-in-value", Case(req(H, b"X-A: b\x00c", start=b"GET /x HTTP/1.1"))),
    p("nul-in-name", Case(req(H, b"X\x00A: b", start=b"GET /x HTTP/1.1"))),
    p("soh-in-value", Case(req(H, b"X-A: b\x01c", start=b"GET /x HTTP/1.1"))),
    p("del-in-value", Case(req(H, b"X-A: b\x7fc", start=b"GET /x HTTP/1.1"))),
    p("space-before-colon", Case(req(H, b"X-A : b", start=b"GET /x HTTP/1.1"))),
    p("tab-before-colon", Case(req(H, b"X-A\t: b", start=b"GET /x HTTP/1.1"))),
    p("empty-field-name", Case(req(H, b": b", start=b"GET /x HTTP/1.1"))),
    p("no-colon", Case(req(H, b"X-A b", start=b"GET /x HTTP/1.1"))),
    p("space-in-name", Case(req(H, b"X A: b", start=b"GET /x HTTP/1.1"))),
    p("whitespace-before-first-field", Case(b"GET /x HTTP/1.1\r\n Host: a\r\n\r\n")),
    # --- request line (RFC 9112 3)
    p("method-separator", Case(req(H, start=b"G(T /x HTTP/1.1"))),
    p("method-lower-case", Case(req(H, start=b"get /x HTTP/1.1"))),
    p("method-unknown", Case(req(H, start=b"FROB /x HTTP/1.1"))),
    p("method-empty", Case(req(H, start=b" /x HTTP/1.1"))),
    p("method-tab", Case(req(H, start=b"GET\t/x HTTP/1.1"))),
    p("version-2.0", Case(req(H, start=b"GET /x HTTP/2.0"), (505,))),
    p("version-1.2", Case(req(H, start=b"GET /x HTTP/1.2"), ((400, 505),))),
    p("version-0.9-simple", Case(b"GET /x\r\n\r\n", ((400, 505),))),
    p("version-lower-case", Case(req(H, start=b"GET /x http/1.1"))),
    p("version-two-digits", Case(req(H, start=b"GET /x HTTP/1.10"))),
    p("version-trailing-space", Case(req(H, start=b"GET /x HTTP/1.1 "))),
    p("h2-preface", Case(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SMUGGLED, ((400, 505),))),
    p("target-space", Case(req(H, start=b"GET /a b HTTP/1.1"))),
    p("target-control", Case(req(H, start=b"GET /a\x01b HTTP/1.1"))),
    p("target-non-ascii", Case(req(H, start=b"GET /\xc3\xa9 HTTP/1.1"))),
    p("target-fragment", Case(req(H, start=b"GET /a#frag HTTP/1.1"))),
    p("target-asterisk-get", Case(req(H, start=b"GET * HTTP/1.1"))),
    p("target-relative", Case(req(H, start=b"GET x HTTP/1.1"))),
    p("target-authority-form-get", Case(req(H, start=b"GET a:80 HTTP/1.1"))),
    p("absolute-userinfo", Case(req(H, start=b"GET http://u@a/ HTTP/1.1"))),
    p("absolute-empty-authority", Case(req(H, start=b"GET http:///x HTTP/1.1"))),
    p("absolute-port-only", Case(req(H, start=b"GET http://:80/x HTTP/1.1"))),
    p("absolute-backslash", Case(req(H, start=b"GET http://a\\b/ HTTP/1.1"))),
    p("absolute-other-scheme", Case(req(H, start=b"GET ftp://a/x HTTP/1.1"))),
    p("absolute-bad-port", Case(req(H, start=b"GET http://a:8x/ HTTP/1.1"))),
    p("connect", Case(req(H, start=b"CONNECT a:443 HTTP/1.1") + SMUGGLED, (405,))),
    # --- Host (RFC 9112 3.2)
    p("host-missing", Case(req(start=b"GET /x HTTP/1.1"))),
    p("host-duplicate", Case(req(H, b"Host: b", start=b"GET /x HTTP/1.1"))),
    p("host-duplicate-same", Case(req(H, H, start=b"GET /x HTTP/1.1"))),
    p("host-space", Case(req(b"Host: a b", start=b"GET /x HTTP/1.1"))),
    p("host-userinfo", Case(req(b"Host: u@a", start=b"GET /x HTTP/1.1"))),
    p("host-slash", Case(req(b"Host: a/b", start=b"GET /x HTTP/1.1"))),
    p("host-bad-port", Case(req(b"Host: a:8x", start=b"GET /x HTTP/1.1"))),
    p("host-missing-absolute", Case(req(start=b"GET http://a/x HTTP/1.1"))),
    # --- limits (ClientLimits defaults)
    p("request-line-too-long", Case(req(H, start=b"GET /" + b"a" * 9000 + b" HTTP/1.1"), (414,))),
    p(
        "head-too-large",
        Case(req(H, b"X-Big: " + b"b" * (70 * 1024), start=b"GET /x HTTP/1.1"), (431,)),
    ),
    p(
        "too-many-fields",
        Case(req(H, *(b"X-F%d: v" % i for i in range(120)), start=b"GET /x HTTP/1.1"), (431,)),
    ),
    # --- Upgrade (llhttp hands everything after an Upgrade head over as tunnel bytes)
    p(
        "upgrade-with-body",
        Case(
            req(
                H,
                b"Connection: Upgrade",
                b"Upgrade: websocket",
                b"Content-Length: 36",
                body=SMUGGLED,
            )
        ),
    ),
    p(
        "upgrade-h2c",
        Case(
            req(
                H,
                b"Connection: Upgrade, HTTP2-Settings, close",
                b"Upgrade: h2c",
                b"HTTP2-Settings: AAMAAABkAAQAAP__",
                start=b"GET /first HTTP/1.1",
            ),
            (200,),
            (b"/first",),
            b"h2c",
        ),
    ),
    p(
        "upgrade-h2c-in-list",
        Case(
            req(
                H,
                b"Connection: Upgrade, close",
                b"Upgrade: h2c, websocket",
                start=b"GET /first HTTP/1.1",
            ),
            (200,),
            (b"/first",),
            b"h2c",
        ),
    ),
    # --- pipelined smuggles behind a valid first request: it is answered, then the error
    p(
        "pipelined-cl-te",
        Case(
            FIRST + req(H, b"Content-Length: 40", TE, body=b"0\r\n\r\n" + SMUGGLED),
            (200, 400),
            (b"/first",),
        ),
    ),
    p(
        "pipelined-obs-fold",
        Case(FIRST + req(H, b"X-A: b", b" c") + SMUGGLED, (200, 400), (b"/first",)),
    ),
    p(
        "pipelined-bad-chunk",
        Case(FIRST + chunked(b"5\r\nhello\r\nZZ\r\n" + SMUGGLED), (200, 400), (b"/first",)),
    ),
    p(
        "pipelined-te-xchunked",
        Case(
            FIRST + req(H, b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n" + SMUGGLED),
            (200, 400),
            (b"/first",),
        ),
    ),
    p(
        "pipelined-bad-version",
        Case(FIRST + req(H, start=b"GET /x HTTP/1.2") + SMUGGLED, (200, (400, 505)), (b"/first",)),
    ),
    p(
        "after-connection-close",
        Case(
            req(H, b"Connection: close", start=b"GET /first HTTP/1.1") + SMUGGLED,
            (200,),
            (b"/first",),
        ),
    ),
    p(
        "after-413-with-cl",
        Case(
            req(H, b"Content-Length: 36", start=b"POST /small/ HTTP/1.1", body=SMUGGLED) + SMUGGLED,
            (413,),
        ),
    ),
    p(
        "after-413-chunked",
        Case(
            req(H, TE, start=b"POST /small/ HTTP/1.1", body=b"24\r\n" + SMUGGLED + b"\r\n0\r\n\r\n")
            + SMUGGLED,
            (413,),
        ),
    ),
    p(
        "trailer-fields-dropped",
        Case(
            chunked(b"5\r\nhello\r\n0\r\nX-Smuggled: 1\r\n\r\n")
            + req(H, b"Connection: close", start=b"GET /second HTTP/1.1"),
            (200, 200),
            (b"/x", b"/second"),
        ),
    ),
    # --- names a CGI-style origin would read as framing (nginx ignore_invalid_headers)
    p(
        "underscore-transfer-encoding",
        Case(
            req(
                H,
                b"Transfer_Encoding: chunked",
                b"Content-Length: 5",
                b"Connection: close",
                body=b"hello",
            ),
            (200,),
            (b"/x",),
            b"transfer_encoding",
        ),
    ),
    p(
        "underscore-content-length",
        Case(
            req(H, TE, b"Content_Length: 36", b"Connection: close", body=b"0\r\n\r\n"),
            (200,),
            (b"/x",),
            b"content_length",
        ),
    ),
    # --- a client that half-closes mid-request: refused now, never forwarded whole
    p("half-close-mid-body", Case(req(H, b"Content-Length: 10", body=b"hello"), half_close=True)),
    p("half-close-mid-chunk", Case(chunked(b"5\r\nhel"), half_close=True)),
    p("half-close-mid-head", Case(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Half: ", half_close=True)),
]


def read_all(client: RawClient, count: int) -> list[RawResponse]:
    responses = []
    for _ in range(count):
        resp = client.read_response()
        if resp is None:
            break
        responses.append(resp)
    return responses


@pytest.mark.parametrize("case", CORPUS)
def test_request_is_refused_and_nothing_smuggled(stack: Stack, case: Case) -> None:
    mark = stack.recorder.mark()
    with RawClient(stack.port, timeout=10) as client:
        client.send(case.data)
        if case.half_close:
            client.sock.shutdown(socket.SHUT_WR)
        responses = read_all(client, len(case.statuses))
        statuses = [r.status for r in responses]
        assert len(statuses) == len(case.statuses), (statuses, case.statuses)
        for got, want in zip(statuses, case.statuses, strict=True):
            assert got in (want if isinstance(want, tuple) else (want,)), (statuses, responses)
        assert responses[-1].header(b"connection") == b"close"
        assert client.is_closed(timeout=5), "the connection stayed open"
    time.sleep(0.1)  # anything wrongly forwarded has time to land
    recorder = stack.recorder
    assert recorder.errors() == [], "the backend received an ambiguous message"
    reached = [m.target for m in recorder.messages_since(mark)]
    assert reached == list(case.reached)
    assert case.forbidden.lower() not in recorder.bytes_since(mark).lower()


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 60


def test_control_valid_requests_do_reach_the_backend(stack: Stack) -> None:
    # The negative assertions above mean something: the same stack forwards valid
    # pipelined requests (CL, chunked, GET) and the recorder frames each of them.
    mark = stack.recorder.mark()
    data = (
        req(H, b"Content-Length: 5", body=b"hello")
        + chunked(b"5\r\nhello\r\n0\r\n\r\n")
        + req(H, b"Connection: close", start=b"GET /last HTTP/1.1")
    )
    with RawClient(stack.port) as client:
        client.send(data)
        statuses = [r.status for r in read_all(client, 3)]
        assert statuses == [200, 200, 200]
        assert client.is_closed()
    messages = stack.recorder.messages_since(mark)
    assert [(m.target, m.body) for m in messages] == [(b"/x", b"hello")] * 2 + [(b"/last", b"")]
    assert stack.recorder.errors() == []


def test_half_close_after_pipelined_requests_answers_each_then_closes(stack: Stack) -> None:
    # RFC 9112 9.6: a client may half-close once its requests are sent. Each request
    # still gets its answer, in order, and the connection then closes at once (not at
    # the keep-alive timeout), whichever pass of the proxy's loop sees the FIN.
    for _ in range(10):
        mark = stack.recorder.mark()
        data = FIRST + req(H, b"Content-Length: 5", body=b"hello")
        with RawClient(stack.port, timeout=10) as client:
            client.send(data)
            client.sock.shutdown(socket.SHUT_WR)
            assert [r.status for r in read_all(client, 2)] == [200, 200]
            assert client.is_closed(timeout=2), "the connection stayed open"
        messages = stack.recorder.messages_since(mark)
        assert [(m.target, m.body) for m in messages] == [(b"/first", b""), (b"/x", b"hello")]


def test_h2c_upgrade_is_never_forwarded(stack: Stack) -> None:
    mark = stack.recorder.mark()
    data = req(
        H,
        b"Connection: Upgrade, HTTP2-Settings, close",
        b"Upgrade: h2c",
        b"HTTP2-Settings: AAMAAABkAAQAAP__",
        start=b"GET /h2c HTTP/1.1",
    )
    with RawClient(stack.port) as client:
        client.send(data)
        resp = client.read_response()
        assert resp is not None and resp.status == 200
        assert client.is_closed()
    (msg,) = stack.recorder.messages_since(mark)
    assert msg.header(b"upgrade") is None
    assert msg.header(b"http2-settings") is None
    assert b"upgrade" not in (msg.header(b"connection") or b"").lower()


def test_configured_client_limits_apply(stack: Stack, tmp_path: Path) -> None:
    # Config.client_limits reaches the parser of every connection (through the worker
    # context): smaller limits than the defaults refuse what the defaults accept.
    port = free_port()
    text = config(port, stack.recorder.address).replace(
        "workers: 1\n",
        "workers: 1\nclient_limits: {request_line: 1k, header_bytes: 4k, headers: 10}\n",
    )
    proxy = start_proxy(tmp_path, text, port)
    try:
        cases = [
            (req(H, start=b"GET /" + b"a" * 1100 + b" HTTP/1.1"), 414),
            (req(H, b"X-Big: " + b"b" * 5000, start=b"GET /x HTTP/1.1"), 431),
            (req(H, *(b"X-F%d: v" % i for i in range(10)), start=b"GET /x HTTP/1.1"), 431),
            (
                req(
                    H,
                    *(b"X-F%d: v" % i for i in range(9)),
                    start=b"GET /" + b"a" * 900 + b" HTTP/1.1",
                ),
                200,
            ),
        ]
        for data, status in cases:
            with RawClient(port) as client:
                client.send(data)
                got = client.read_response()
                assert got is not None and got.status == status, (status, got)
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    "data",
    [
        req(H, b"Content-Length: 5", TE, body=b"0\r\n\r\n"),
        req(H, b"Content-Length: 5", b"Content-Length: 5", body=b"hello"),
        req(H, b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
        req(H, b"Content-Length: +5", body=b"hello"),
        b"GET / HTTP/1.1\nHost: a\n\n",
        req(H, b"X-A : b"),
        req(H, b"X-A: b\x00"),
        chunked(b"5;ext\r\nhello\r\n0\r\n\r\n"),
        chunked(b"5\r\nhelloXX0\r\n\r\n"),
        chunked(b"0\r\nX-Trailer: 1\r\n\r\n"),
        req(H, start=b"GET /x HTTP/2.0"),
    ],
)
def test_recorder_parser_is_strict(data: bytes) -> None:
    # `recorder.errors() == []` means something: the backend's parser refuses every
    # ambiguity the corpus is about, where the proxy must never create one.
    with pytest.raises(FramingError):
        parse_request(data)


def test_recorder_parser_frames_canonical_messages() -> None:
    data = req(H, b"Content-Length: 5", body=b"hello") + chunked(b"5\r\nhello\r\n0\r\n\r\n")
    first = parse_request(data)
    assert first is not None
    msg, used = first
    assert (msg.target, msg.body) == (b"/x", b"hello")
    second = parse_request(data[used:])
    assert second is not None and second[0].body == b"hello" and second[1] == len(data) - used
    assert parse_request(data[: used - 1]) is None
