"""Malformed upstream responses: the recording backend (tests/support/recorder.py)
answers one request with scripted raw bytes, over a kept-alive connection the proxy
would otherwise reuse. For every case the client gets a 502 and a closed connection,
the proxy closes that upstream connection, and the next request goes over a NEW one
(a desynchronised connection is never reused). Written from RFC 9112 (sections 2 to
7), RFC 9110 section 15, and response-splitting / queue-poisoning research.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.procs import ProxyProcess, free_port, start_proxy
from support.rawhttp import RawClient
from support.recorder import Recorder

TOP = "timeouts: {client_header: 2s, client_body: 2s, keepalive: 2s}"


@dataclass(frozen=True)
class Stack:
    recorder: Recorder
    proxy: ProxyProcess

    @property
    def port(self) -> int:
        return self.proxy.port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("smuggling-responses")
    with Recorder() as recorder:
        port = free_port()
        text = (
            f"workers: 1\n{TOP}\n"
            f'upstreams:\n  app:\n    servers:\n      - {{address: "{recorder.address}"}}\n'
            f'servers:\n  - listen: "127.0.0.1:{port}"\n    routes:\n'
            "      - {path: /, upstream: app, read_timeout: 3s}\n"
        )
        proxy = start_proxy(workdir, text, port)
        try:
            yield Stack(recorder, proxy)
        finally:
            proxy.stop()


def resp(*lines: bytes, start: bytes = b"HTTP/1.1 200 OK", body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


CL2 = b"Content-Length: 2"
TE = b"Transfer-Encoding: chunked"
# A whole second response: if it were read as the answer to the next request on this
# connection, that request's client would get the attacker's answer (queue poisoning).
POISON = resp(b"Content-Length: 8", body=b"poisoned")


def p(id_: str, raw: bytes) -> object:
    return pytest.param(raw, id=id_)


CORPUS = [
    # --- status line (RFC 9112 4)
    p("status-letters", resp(CL2, start=b"HTTP/1.1 2OO OK", body=b"ok")),
    p("status-two-digits", resp(CL2, start=b"HTTP/1.1 99 OK", body=b"ok")),
    p("status-099", resp(CL2, start=b"HTTP/1.1 099 OK", body=b"ok")),
    p("status-600", resp(CL2, start=b"HTTP/1.1 600 OK", body=b"ok")),
    p("status-four-digits", resp(CL2, start=b"HTTP/1.1 2000 OK", body=b"ok")),
    p("status-double-space", resp(CL2, start=b"HTTP/1.1  200 OK", body=b"ok")),
    p("version-2.0", resp(CL2, start=b"HTTP/2.0 200 OK", body=b"ok")),
    p("version-0.9", resp(CL2, start=b"HTTP/0.9 200 OK", body=b"ok")),
    p("version-1.2", resp(CL2, start=b"HTTP/1.2 200 OK", body=b"ok")),
    p("version-lower-case", resp(CL2, start=b"http/1.1 200 OK", body=b"ok")),
    p("no-status-line", b"ok\r\n\r\n"),
    # --- framing fields (RFC 9112 6.3)
    p("cl-and-te", resp(CL2, TE, body=b"2\r\nok\r\n0\r\n\r\n")),
    p("te-and-cl", resp(TE, CL2, body=b"2\r\nok\r\n0\r\n\r\n")),
    p("cl-duplicate-differ", resp(CL2, b"Content-Length: 10", body=b"ok")),
    p("cl-list", resp(b"Content-Length: 2, 2", body=b"ok")),
    p("cl-plus-sign", resp(b"Content-Length: +2", body=b"ok")),
    p("cl-huge", resp(b"Content-Length: 99999999999999999999999", body=b"ok")),
    p("te-gzip", resp(b"Transfer-Encoding: gzip", body=b"ok")),
    p("te-xchunked", resp(b"Transfer-Encoding: xchunked", body=b"2\r\nok\r\n0\r\n\r\n")),
    p("te-chunked-twice", resp(TE, TE, body=b"2\r\nok\r\n0\r\n\r\n")),
    p("te-in-http10", resp(TE, start=b"HTTP/1.0 200 OK", body=b"2\r\nok\r\n0\r\n\r\n")),
    # --- chunked body (RFC 9112 7.1)
    p("chunk-size-not-hex", resp(TE, body=b"zz\r\nok\r\n0\r\n\r\n")),
    p("chunk-size-overflow", resp(TE, body=b"fffffffffffffffff\r\nok\r\n0\r\n\r\n")),
    p("chunk-data-no-crlf", resp(TE, body=b"2\r\nokXX0\r\n\r\n")),
    p("chunk-ext-bare-cr", resp(TE, body=b"2;a\rb\r\nok\r\n0\r\n\r\n")),
    # --- field syntax (RFC 9112 5)
    p("obs-fold", resp(b"X-A: b", b" c", CL2, body=b"ok")),
    p("nul-in-value", resp(b"X-A: b\x00c", CL2, body=b"ok")),
    p("bare-cr-in-value", resp(b"X-A: b\rc", CL2, body=b"ok")),
    p("space-before-colon", resp(b"Content-Length : 2", body=b"ok")),
    p("bare-lf-line-ends", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    p("bad-name-char", resp(b"X(A: b", CL2, body=b"ok")),
    p("empty-name", resp(b": b", CL2, body=b"ok")),
    p("no-colon", resp(b"X-A b", CL2, body=b"ok")),
    # --- size
    p("head-too-large", resp(b"X-Big: " + b"b" * (70 * 1024), CL2, body=b"ok")),
    p("too-many-fields", resp(*(b"X-F%d: v" % i for i in range(250)), CL2, body=b"ok")),
    # --- interim responses (RFC 9110 15.2)
    p(
        "100-with-body",
        resp(CL2, start=b"HTTP/1.1 100 Continue", body=b"ok") + resp(CL2, body=b"ok"),
    ),
    p(
        "101-unasked",
        resp(
            b"Connection: upgrade", b"Upgrade: websocket", start=b"HTTP/1.1 101 Switching Protocols"
        )
        + b"hello",
    ),
    p(
        "103-then-garbage",
        resp(b"Link: </a>", start=b"HTTP/1.1 103 Early Hints") + b"garbage\r\n\r\n",
    ),
    # --- more than was asked: desynchronisation (body longer than its length, a second
    # response, a body on a bodiless status)
    p("body-longer-than-cl", resp(CL2, body=b"ok" + b"EXTRA")),
    p("second-response", resp(CL2, body=b"ok") + POISON),
    p("chunked-then-response", resp(TE, body=b"2\r\nok\r\n0\r\n\r\n") + POISON),
    p("204-with-body", resp(CL2, start=b"HTTP/1.1 204 No Content", body=b"ok") + POISON),
    p("304-with-body", resp(CL2, start=b"HTTP/1.1 304 Not Modified", body=b"ok")),
]


def get(target: bytes) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target


def warm_connection(stack: Stack) -> int:
    """One good exchange first, so the bad answer arrives on a kept-alive, pooled
    connection (the one the proxy would be tempted to reuse); returns its index."""
    with RawClient(stack.port) as client:
        client.send(get(b"/warm"))
        ok = client.read_response()
        assert ok is not None and ok.status == 200, ok
    conn = int((ok.header(b"x-recorder-conn") or b"-1").decode())
    assert conn >= 0
    return conn


@pytest.mark.parametrize("raw", CORPUS)
def test_invalid_response_is_502_and_its_connection_never_reused(stack: Stack, raw: bytes) -> None:
    recorder = stack.recorder
    recorder.clear_script()
    warm = warm_connection(stack)
    recorder.script(raw)
    mark = recorder.mark()
    with RawClient(stack.port) as client:
        client.send(get(b"/bad"))
        bad = client.read_response()
        assert bad is not None, "closed without an answer"
        assert bad.status == 502, (bad.status, bad.body)
        assert b"poisoned" not in bad.body
        assert bad.header(b"connection") == b"close"
        assert client.is_closed(timeout=5)
    (asked,) = recorder.messages_since(mark)
    assert asked.target == b"/bad"
    assert asked.conn == warm, "the bad answer did not come over the pooled connection"
    assert recorder.wait_closed(asked.conn), "the proxy kept the desynchronised connection"
    # The next request is served whole, by the recorder's default answer, over a NEW
    # connection.
    recorder.clear_script()
    with RawClient(stack.port) as client:
        client.send(get(b"/next"))
        nxt = client.read_response()
        assert nxt is not None and nxt.status == 200, nxt
        assert nxt.body.endswith(b"GET /next")
    conn = int((nxt.header(b"x-recorder-conn") or b"-1").decode())
    assert conn > asked.conn
    assert recorder.errors() == []


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 20


def test_control_valid_responses_reuse_the_connection(stack: Stack) -> None:
    # The NEW-connection assertion above means something: valid answers (including
    # chunked with trailers and a 100 Continue before the final answer) leave the
    # connection in the pool and the next request reuses it.
    recorder = stack.recorder
    recorder.clear_script()
    warm = warm_connection(stack)
    for raw in (
        resp(TE, body=b"2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n"),
        resp(start=b"HTTP/1.1 100 Continue") + resp(CL2, body=b"ok"),
        resp(CL2, start=b"HTTP/1.1 304 Not Modified"),
    ):
        recorder.script(raw)
        with RawClient(stack.port) as client:
            client.send(get(b"/good"))
            got = client.read_response()
            assert got is not None and got.status in (200, 304), got
            assert got.header(b"x-trailer") is None
        time.sleep(0.05)
    with RawClient(stack.port) as client:
        client.send(get(b"/again"))
        again = client.read_response()
        assert again is not None and again.status == 200
    assert int((again.header(b"x-recorder-conn") or b"-1").decode()) == warm
    assert recorder.errors() == []
