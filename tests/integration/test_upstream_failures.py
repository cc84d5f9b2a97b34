"""Upstream failures end to end: a real `ferryman run` in front of backends that refuse,
hang up, stall, lie about their length or stop mid-body.

The client gets 502/504 with no upstream address in it (the detail, with a reason, goes
to the proxy's log), and a body cut short upstream is never presented as complete: a
short Content-Length body or a chunked body without its last chunk, then a close.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from support.procs import EchoFactory, ProxyProcess, free_port, proxy_config
from support.rawhttp import RawClient, RawResponse, ScriptedBackend

ProxyFactory = Callable[..., ProxyProcess]

CURL = shutil.which("curl")


Start = Callable[..., ProxyProcess]


@pytest.fixture
def start(proxy: ProxyFactory) -> Iterator[Start]:
    """Start a proxy over `backends`; at teardown, no proxy may have logged a traceback
    (a failure is to be handled, not to crash a handler)."""
    started: list[ProxyProcess] = []

    def run(backends: list[str], route_params: str = "") -> ProxyProcess:
        port = free_port()
        p = proxy(proxy_config(port, backends, route_params=route_params), port)
        started.append(p)
        return p

    yield run
    for p in started:
        assert "Traceback" not in p.output(), p.output()


def get(port: int, target: str = "/", *, http10: bool = False) -> tuple[RawResponse, bytes, bool]:
    """One GET over a raw socket: the response, the raw bytes after its head (for a
    chunked body: the chunked bytes as received), and whether the proxy then closed."""
    version = b"HTTP/1.0" if http10 else b"HTTP/1.1"
    with RawClient(port, timeout=10) as client:
        client.send(b"GET %s %s\r\nHost: test\r\n\r\n" % (target.encode(), version))
        resp = client.read_response()
        assert resp is not None, "the proxy closed without answering"
        closed = client.is_closed(timeout=5)
    raw = resp.raw_body if resp.raw_body else resp.body
    return resp, raw, closed


def wait_for_log(p: ProxyProcess, pattern: str, timeout: float = 5.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(pattern, p.output())
        if match:
            return match
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matching {pattern!r}; output:\n{p.output()}")
        time.sleep(0.05)


def curl(url: str) -> tuple[int, str]:
    """curl's exit code and `HTTP_CODE SIZE_DOWNLOADED`."""
    assert CURL is not None, "curl is needed (scripts/install-system-deps.sh installs it)"
    argv = [CURL, "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]
    done = subprocess.run(
        [*argv, "--max-time", "10", url], capture_output=True, text=True, timeout=20, check=False
    )
    return done.returncode, done.stdout


def assert_no_address(resp: RawResponse, host: str, port: int) -> None:
    text = b"".join(n + b": " + v + b"\n" for n, v in resp.headers) + resp.body
    assert str(port).encode() not in text, text
    assert f"{host}:{port}".encode() not in text, text


# ---------------------------------------------------------------- no usable answer


def test_refused_connection_is_502(start: Start) -> None:
    dead = free_port()  # nothing listens there
    p = start([f"127.0.0.1:{dead}"])
    resp, _, closed = get(p.port)
    assert resp.status == 502
    assert resp.body.startswith(b"502 ")
    assert closed
    assert_no_address(resp, "127.0.0.1", dead)
    wait_for_log(p, rf"upstream 127\.0\.0\.1:{dead} failed \(connect\).*\S")


def test_backend_closing_without_an_answer_is_502(echo_server: EchoFactory, start: Start) -> None:
    (backend,) = echo_server(1)
    p = start([backend.address])
    resp, _, _ = get(p.port, "/close")
    assert resp.status == 502
    assert_no_address(resp, backend.host, backend.port)
    wait_for_log(p, rf"upstream {re.escape(backend.address)} failed \(reset\).*closed")


def test_slow_backend_is_504_after_read_timeout(echo_server: EchoFactory, start: Start) -> None:
    (backend,) = echo_server(1)
    p = start([backend.address], route_params="read_timeout: 1s")
    started = time.monotonic()
    resp, _, _ = get(p.port, "/slow?ms=3000")
    elapsed = time.monotonic() - started
    assert resp.status == 504
    assert resp.body.startswith(b"504 ")
    assert 0.8 < elapsed < 2.8, elapsed  # the timeout, not the backend, ended it
    assert_no_address(resp, backend.host, backend.port)
    wait_for_log(p, rf"upstream {re.escape(backend.address)} failed \(timeout\).*timed out")


def test_garbage_from_upstream_is_502(start: Start) -> None:
    with ScriptedBackend(b"HTTP/1.1 2x0 Fine\r\nContent-Length: 0\r\n\r\n") as backend:
        p = start([backend.address])
        resp, _, _ = get(p.port)
        assert resp.status == 502
        assert_no_address(resp, "127.0.0.1", backend.port)
        wait_for_log(p, r"failed \(invalid_header\)")


def test_upstream_cl_and_te_is_502(start: Start) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    with ScriptedBackend(reply) as backend:
        p = start([backend.address])
        resp, _, _ = get(p.port)
        assert resp.status == 502
        wait_for_log(p, r"failed \(invalid_header\)")


def test_upstream_transfer_coding_other_than_chunked_is_502(start: Start) -> None:
    # The proxy re-frames bodies; a gzip transfer coding would reach the client as
    # plain bytes with nothing saying they are compressed.
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    with ScriptedBackend(reply) as backend:
        p = start([backend.address])
        resp, _, _ = get(p.port)
        assert resp.status == 502
        wait_for_log(p, r"failed \(invalid_header\).*transfer coding")


# ---------------------------------------------------------------- cut short mid-body


def test_truncated_length_body_stays_short_and_closes(
    echo_server: EchoFactory, start: Start
) -> None:
    (backend,) = echo_server(1)
    p = start([backend.address])
    # /truncate announces Content-Length 1000, sends 500 bytes and closes.
    resp, raw, closed = get(p.port, "/truncate?bytes=1000")
    assert resp.status == 200
    assert resp.header(b"content-length") == b"1000"
    assert len(raw) == 500
    assert not resp.complete
    assert closed
    wait_for_log(p, r"upstream closed the connection mid-response")


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_truncated_length_body_is_a_partial_file_for_curl(
    echo_server: EchoFactory, start: Start
) -> None:
    (backend,) = echo_server(1)
    p = start([backend.address])
    code, out = curl(f"{p.url}/truncate?bytes=1000")
    assert code == 18, (code, out)  # CURLE_PARTIAL_FILE
    assert out == "200 500"
    # The same path through the proxy, complete, is fine for curl: the 18 is the cut.
    assert curl(f"{p.url}/big?bytes=1000") == (0, "200 1000")


CHUNKED_CUT = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n"


def test_truncated_chunked_body_has_no_last_chunk(start: Start) -> None:
    with ScriptedBackend(CHUNKED_CUT) as backend:
        p = start([backend.address])
        resp, raw, closed = get(p.port)
        assert resp.status == 200
        assert resp.header(b"transfer-encoding") == b"chunked"
        assert resp.body == b"hello world"
        assert not resp.complete
        assert not raw.endswith(b"0\r\n\r\n"), raw
        assert closed
        wait_for_log(p, r"upstream closed the connection mid-response")


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_truncated_chunked_body_is_a_partial_file_for_curl(start: Start) -> None:
    with ScriptedBackend(CHUNKED_CUT) as backend:
        p = start([backend.address])
        code, out = curl(p.url + "/")
        assert code == 18, (code, out)
        assert out == "200 11"


def test_until_close_upstream_body_ends_cleanly_and_keeps_the_client(start: Start) -> None:
    # Contrast: a close-delimited upstream body ends at the close by definition, so the
    # proxy ends the chunked body it re-framed for the client with the last chunk, and
    # the client's kept-alive connection goes on to its next request.
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"
    with ScriptedBackend(reply) as backend:
        p = start([backend.address])
        with RawClient(p.port, timeout=5) as client:
            for _ in range(2):
                client.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                resp = client.read_response()
                assert resp is not None, "the proxy closed without answering"
                assert resp.status == 200
                assert resp.header(b"transfer-encoding") == b"chunked"
                assert resp.body == b"hello"
                assert resp.complete
                assert resp.raw_body.endswith(b"0\r\n\r\n")
        assert len(backend.requests) == 2


def test_truncated_chunked_body_to_http10_client_closes(start: Start) -> None:
    # HTTP/1.0 has no chunked coding: the body is close-delimited, and the close is all
    # the proxy can do, but it must not add anything that looks like an ending.
    with ScriptedBackend(CHUNKED_CUT) as backend:
        p = start([backend.address])
        resp, raw, closed = get(p.port, http10=True)
        assert resp.status == 200
        assert resp.header(b"transfer-encoding") is None
        assert resp.header(b"content-length") is None
        assert raw == b"hello world"
        assert closed


def test_backend_reset_mid_body_is_not_complete(start: Start) -> None:
    def reset_mid_body(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        time.sleep(0.2)
        # SO_LINGER 0: close with a RST instead of a FIN.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with ScriptedBackend(script=reset_mid_body) as backend:
        p = start([backend.address])
        resp, raw, closed = get(p.port)
        assert resp.status == 200
        assert len(raw) == 1000
        assert not resp.complete
        assert closed
