"""Malformed and hostile requests against a real `ferryman run` in front of a real echo
backend, over raw sockets: the proxy answers the right 4xx/5xx, closes the connection,
and the backend never sees the request (its /count, asked directly, does not move).

One proxy and one backend serve the whole module: each test only reads their state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.procs import (
    EchoBackend,
    ProxyProcess,
    free_port,
    proxy_config,
    start_echo,
    start_proxy,
)
from support.rawhttp import RawClient, RawResponse, http_get_json

# Short client timeouts so that the timeout tests stay fast; every other test finishes
# its exchange well within them.
TOP = "timeouts: {client_header: 1s, client_body: 1s, keepalive: 1s}"


@dataclass(frozen=True)
class Stack:
    backend: EchoBackend
    proxy: ProxyProcess

    @property
    def port(self) -> int:
        return self.proxy.port

    def backend_count(self) -> int:
        """Requests the backend has served, including this /count itself."""
        return int(http_get_json(self.backend.port, "/count")["requests"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("bad-input")
    backend = start_echo(workdir / "logs")
    try:
        port = free_port()
        proxy = start_proxy(workdir / "proxy", proxy_config(port, [backend.address], top=TOP), port)
        try:
            yield Stack(backend, proxy)
        finally:
            proxy.stop()
    finally:
        backend.stop()


def request(*lines: bytes, start: bytes = b"GET / HTTP/1.1", body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def assert_refused(stack: Stack, data: bytes, statuses: tuple[int, ...]) -> None:
    """Send `data`; expect one of `statuses`, `Connection: close`, then the close, and
    no request reaching the backend."""
    before = stack.backend_count()
    with RawClient(stack.port, timeout=10) as client:
        client.send(data)
        resp = client.read_response()
        assert resp is not None, "connection closed without an answer"
        assert resp.status in statuses, (resp.status, resp.body)
        assert resp.header(b"connection") == b"close"
        assert client.is_closed(timeout=5), "the connection stayed open after the error"
    time.sleep(0.05)  # anything wrongly forwarded has time to reach the backend
    assert stack.backend_count() == before + 1, "the backend saw the request"


POST = b"POST /echo HTTP/1.1"

MALFORMED: dict[str, tuple[bytes, tuple[int, ...]]] = {
    "missing Host": (request(), (400,)),
    "two Host": (request(b"Host: a", b"Host: b"), (400,)),
    "Host with a space": (request(b"Host: a b"), (400,)),
    "Host with userinfo": (request(b"Host: user@a"), (400,)),
    "CL and TE": (
        request(
            b"Host: a",
            b"Content-Length: 5",
            b"Transfer-Encoding: chunked",
            start=POST,
            body=b"0\r\n\r\n",
        ),
        (400,),
    ),
    "duplicate CL": (
        request(b"Host: a", b"Content-Length: 5", b"Content-Length: 5", start=POST, body=b"hello"),
        (400,),
    ),
    "CL +5": (request(b"Host: a", b"Content-Length: +5", start=POST, body=b"hello"), (400,)),
    "CL 1_0": (request(b"Host: a", b"Content-Length: 1_0", start=POST, body=b"x" * 10), (400,)),
    "CL unicode digit": (
        request(b"Host: a", "Content-Length: \u0665".encode(), start=POST, body=b"hello"),
        (400,),
    ),
    "TE gzip, chunked": (
        request(b"Host: a", b"Transfer-Encoding: gzip, chunked", start=POST, body=b"0\r\n\r\n"),
        (501,),
    ),
    "TE in HTTP/1.0": (
        request(b"Transfer-Encoding: chunked", start=b"POST /echo HTTP/1.0", body=b"0\r\n\r\n"),
        (400,),
    ),
    "TE identity": (request(b"Host: a", b"Transfer-Encoding: identity", start=POST), (400,)),
    "obs-fold": (request(b"Host: a", b"X-A: b", b" c"), (400,)),
    "bare LF line ends": (b"GET / HTTP/1.1\nHost: a\n\n", (400,)),
    "bare CR in a value": (request(b"Host: a", b"X-A: b\rc"), (400,)),
    "space before colon": (request(b"Host: a", b"X-A : b"), (400,)),
    "NUL in a value": (request(b"Host: a", b"X-A: b\x00c"), (400,)),
    "invalid method": (request(b"Host: a", start=b"G(T / HTTP/1.1"), (400,)),
    "HTTP/2.0": (request(b"Host: a", start=b"GET / HTTP/2.0"), (505, 400)),
    "HTTP/0.9": (request(b"Host: a", start=b"GET / HTTP/0.9"), (505, 400)),
    "fragment in target": (request(b"Host: a", start=b"GET /a#b HTTP/1.1"), (400,)),
    "asterisk-form GET": (request(b"Host: a", start=b"GET * HTTP/1.1"), (400,)),
    "too many fields": (
        request(b"Host: a", *(b"X-F%d: v" % i for i in range(101))),
        (431,),
    ),
    "head over 64 KiB": (request(b"Host: a", b"X-Big: " + b"b" * (66 * 1024)), (431,)),
    "Expect: something-else": (
        request(b"Host: a", b"Expect: something-else", b"Content-Length: 1", start=POST, body=b"x"),
        (417,),
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_is_refused_and_not_forwarded(stack: Stack, name: str) -> None:
    data, statuses = MALFORMED[name]
    assert_refused(stack, data, statuses)


def test_error_after_a_good_request_on_the_same_connection(stack: Stack) -> None:
    before = stack.backend_count()
    with RawClient(stack.port) as client:
        client.send(request(b"Host: a"))
        ok = client.read_response()
        assert ok is not None and ok.status == 200
        assert ok.body == stack.backend.uuid.encode()
        client.send(request(b"Host: a", b"Host: b"))
        bad = client.read_response()
        assert bad is not None and bad.status == 400
        assert client.is_closed()
    time.sleep(0.05)
    assert stack.backend_count() == before + 2  # the good request and /count


def test_control_valid_pipelined_requests_do_reach_the_backend(stack: Stack) -> None:
    # The /count method can see forwarded requests: two pipelined ones move it by two.
    before = stack.backend_count()
    with RawClient(stack.port) as client:
        client.send(request(b"Host: a") + request(b"Host: a", b"Connection: close"))
        first, second = client.read_response(), client.read_response()
        assert first is not None and second is not None
        assert (first.status, second.status) == (200, 200)
        assert client.is_closed()
    assert stack.backend_count() == before + 3


# ---------------------------------------------------------------- smuggling

SMUGGLED = request(b"Host: a", start=b"GET /smuggled HTTP/1.1")


def test_smuggling_with_cl_and_te(stack: Stack) -> None:
    # A front end that honours Content-Length and a back end that honours chunked (or
    # the reverse) disagree on where the first request ends; the proxy must refuse both.
    body = b"0\r\n\r\n" + SMUGGLED
    data = request(
        b"Host: a",
        b"Content-Length: %d" % len(body),
        b"Transfer-Encoding: chunked",
        start=POST,
        body=body,
    )
    assert_refused(stack, data, (400,))


def test_smuggling_with_te_obfuscated_and_cl(stack: Stack) -> None:
    body = b"0\r\n\r\n" + SMUGGLED
    data = request(
        b"Host: a",
        b"Content-Length: %d" % len(body),
        b"Transfer-Encoding : chunked",
        start=POST,
        body=body,
    )
    assert_refused(stack, data, (400,))


def send_and_watch(
    stack: Stack, *pieces: bytes, pause: float = 0.0
) -> tuple[RawResponse | None, bool, int]:
    """Send `pieces` (pausing between them), read one answer if any and whether the
    connection then closed; returns (response or None, closed, backend requests seen)."""
    before = stack.backend_count()
    with RawClient(stack.port) as client:
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(pause)
            client.send(piece)
        resp = client.read_response()
        closed = client.is_closed()
    time.sleep(0.2)  # a wrongly completed or smuggled request has time to land
    return resp, closed, stack.backend_count() - before - 1


def test_smuggling_after_an_invalid_chunk_size_in_one_write(stack: Stack) -> None:
    data = request(
        b"Host: a",
        b"Transfer-Encoding: chunked",
        start=POST,
        body=b"5\r\nhello\r\nZZ\r\n" + SMUGGLED,
    )
    resp, closed, seen = send_and_watch(stack, data)
    assert seen == 0, "the backend served a request"
    assert closed
    # Nothing was answered yet: the client is told its request was bad.
    assert resp is not None, "connection closed without an answer"
    assert resp.status == 400


def test_smuggling_after_an_invalid_chunk_size_mid_body(stack: Stack) -> None:
    # The head and a valid chunk go first, so the request is already streaming to the
    # backend when the bad chunk arrives: the backend must not get a complete request
    # (nor the smuggled one), and the client, who has had no answer yet, gets a 400.
    resp, closed, seen = send_and_watch(
        stack,
        request(b"Host: a", b"Transfer-Encoding: chunked", start=POST) + b"5\r\nhello\r\n",
        b"ZZ\r\n" + SMUGGLED,
        pause=0.3,
    )
    assert seen == 0, "the backend served a request"
    assert closed
    assert resp is not None, "connection closed without an answer"
    assert resp.status == 400


# ---------------------------------------------------------------- client timeouts


def test_stalled_head_gets_408_and_close(stack: Stack) -> None:
    before = stack.backend_count()
    with RawClient(stack.port, timeout=6) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Half: ")
        started = time.monotonic()
        resp = client.read_response()
        elapsed = time.monotonic() - started
        assert resp is not None, "closed without a 408"
        assert resp.status == 408
        assert client.is_closed()
    assert 0.5 < elapsed < 5, elapsed
    assert stack.backend_count() == before + 1


def test_idle_keep_alive_connection_is_closed(stack: Stack) -> None:
    with RawClient(stack.port, timeout=6) as client:
        client.send(request(b"Host: a"))
        resp = client.read_response()
        assert resp is not None and resp.status == 200
        assert resp.header(b"connection") != b"close"
        started = time.monotonic()
        assert client.is_closed(timeout=5), "the idle connection was never closed"
        elapsed = time.monotonic() - started
    # Closed by the keep-alive timeout (1 s), not at once and not much later.
    assert 0.5 < elapsed < 4, elapsed


def test_idle_connection_without_any_request_is_closed(stack: Stack) -> None:
    with RawClient(stack.port, timeout=6) as client:
        started = time.monotonic()
        data = client.read_until_close()
        elapsed = time.monotonic() - started
    # Nothing was asked: a 408 or a silent close are both fine, but it must close.
    assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data
    assert elapsed < 5, elapsed
