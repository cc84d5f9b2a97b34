"""The echo backend as a real process, driven by real HTTP clients (http.client, curl)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferryman.echo import big_pattern
from support.procs import EchoBackend, EchoFactory, free_port, start_echo

Response = tuple[int, http.client.HTTPMessage, bytes]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoBackend]:
    """One echo process shared by the tests that only read from it."""
    echo = start_echo(tmp_path_factory.mktemp("echo"))
    yield echo
    assert echo.stop() == 0, echo.proc.output()


def request(
    backend: EchoBackend,
    path: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Response:
    conn = http.client.HTTPConnection(backend.host, backend.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {}, **kwargs)
        resp = conn.getresponse()
        return resp.status, resp.msg, resp.read()
    finally:
        conn.close()


def request_json(backend: EchoBackend, path: str, **kwargs: Any) -> Any:
    status, headers, body = request(backend, path, **kwargs)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


def raw_exchange(backend: EchoBackend, data: bytes) -> bytes:
    """Send bytes on a fresh connection, half-close, and read until the server closes."""
    with socket.create_connection((backend.host, backend.port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def curl(*args: str) -> bytes:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "60", *args], capture_output=True, check=True
    )
    return done.stdout


# ---------------------------------------------------------------- identity
def test_root_answers_the_same_uuid_on_every_connection(backend: EchoBackend) -> None:
    answers = [request(backend, "/") for _ in range(3)]
    for status, headers, body in answers:
        assert status == 200
        assert headers["Content-Type"] == "text/plain"
        assert headers["Content-Length"] == "36"
        assert body.decode() == backend.uuid
    assert len(backend.uuid) == 36
    assert uuidlib.UUID(backend.uuid).version == 4


def test_two_processes_have_different_uuids(echo_server: EchoFactory) -> None:
    first, second = echo_server(2)
    assert first.port != second.port
    assert request(first, "/")[2] != request(second, "/")[2]
    assert {first.uuid, second.uuid} == {request(b, "/")[2].decode() for b in (first, second)}


def test_uuid_flag_sets_the_identity(tmp_path: Path) -> None:
    echo = start_echo(tmp_path, uuid="backend-one")
    try:
        assert echo.uuid == "backend-one"
        assert request(echo, "/")[2] == b"backend-one"
    finally:
        echo.stop()


def test_sigterm_stops_the_server_with_exit_code_zero(echo_server: EchoFactory) -> None:
    (echo,) = echo_server(1)
    assert request(echo, "/")[0] == 200
    assert echo.stop() == 0
    with pytest.raises(OSError):
        socket.create_connection((echo.host, echo.port), timeout=2).close()


def test_sigint_stops_the_server_with_exit_code_zero(echo_server: EchoFactory) -> None:
    (echo,) = echo_server(1)
    os.kill(echo.pid, signal.SIGINT)
    assert echo.proc.popen.wait(timeout=10) == 0


def test_factory_binds_given_ports_on_other_loopback_addresses(echo_server: EchoFactory) -> None:
    port = free_port("127.0.0.11")
    (echo,) = echo_server(host="127.0.0.11", ports=[port])
    assert (echo.host, echo.port, echo.address) == ("127.0.0.11", port, f"127.0.0.11:{port}")
    assert request(echo, "/")[2] == echo.uuid.encode()


# ---------------------------------------------------------------- /echo
def test_echo_reports_a_post_with_content_length(backend: EchoBackend) -> None:
    body = b"hello, ferryman" * 1000
    conn = http.client.HTTPConnection(backend.host, backend.port, timeout=10)
    conn.putrequest("POST", "/echo?x=1&y=%20", skip_host=True, skip_accept_encoding=True)
    for name, value in [("Host", "example.test"), ("X-Mixed-Case", "a"), ("x-dup", "1")]:
        conn.putheader(name, value)
    conn.putheader("X-Dup", "2")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    seen = json.loads(conn.getresponse().read())
    conn.close()
    assert seen["uuid"] == backend.uuid
    assert seen["method"] == "POST"
    assert seen["target"] == "/echo?x=1&y=%20"
    assert seen["version"] == "1.1"
    assert seen["headers"] == [
        ["Host", "example.test"],
        ["X-Mixed-Case", "a"],
        ["x-dup", "1"],
        ["X-Dup", "2"],
        ["Content-Length", str(len(body))],
    ]
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_echo_reports_a_chunked_post(backend: EchoBackend) -> None:
    parts = [os.urandom(n) for n in (1, 1000, 70000, 3)]
    seen = request_json(backend, "/echo", method="PUT", body=iter(parts), encode_chunked=True)
    assert seen["method"] == "PUT"
    assert ["Transfer-Encoding", "chunked"] in seen["headers"]
    assert seen["body_length"] == sum(map(len, parts))
    assert seen["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_echo_without_body(backend: EchoBackend) -> None:
    seen = request_json(backend, "/echo", method="DELETE")
    assert (seen["method"], seen["body_length"]) == ("DELETE", 0)
    assert seen["body_sha256"] == hashlib.sha256(b"").hexdigest()


@needs_curl
def test_echo_chunked_upload_with_curl_and_expect_continue(
    backend: EchoBackend, tmp_path: Path
) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    out = curl(
        "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{payload}", f"{backend.url}/echo"
    )
    seen = json.loads(out)
    assert ["Expect", "100-continue"] in seen["headers"]
    assert seen["body_length"] == payload.stat().st_size
    assert seen["body_sha256"] == hashlib.sha256(payload.read_bytes()).hexdigest()


def test_echo_hashes_a_large_body_without_holding_it(backend: EchoBackend) -> None:
    size, block = 128 * 1024 * 1024, os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    for _ in range(size // len(block)):
        digest.update(block)
    blocks = (block for _ in range(size // len(block)))
    seen = request_json(
        backend, "/echo", method="POST", body=blocks, headers={"Content-Length": str(size)}
    )
    assert seen["body_length"] == size
    assert seen["body_sha256"] == digest.hexdigest()
    assert _rss_bytes(backend.pid) < size // 4


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# ---------------------------------------------------------------- /big
@pytest.mark.parametrize("size", [None, 0, 1, 65536, 1_000_003])
def test_big_returns_exactly_n_pattern_bytes(backend: EchoBackend, size: int | None) -> None:
    status, headers, body = request(backend, "/big" if size is None else f"/big?bytes={size}")
    expected = 1024 * 1024 if size is None else size
    assert status == 200
    assert headers["Content-Length"] == str(expected)
    assert body == big_pattern(expected)


def test_big_chunked_streams_the_same_bytes(backend: EchoBackend) -> None:
    status, headers, body = request(backend, "/big?bytes=300000&chunked=1")
    assert status == 200
    assert headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in headers
    assert body == big_pattern(300000)


@needs_curl
def test_big_with_curl(backend: EchoBackend, tmp_path: Path) -> None:
    out = tmp_path / "big.bin"
    curl("-o", str(out), f"{backend.url}/big?bytes=5000000")
    assert out.read_bytes() == big_pattern(5_000_000)


def test_big_pattern_detects_a_dropped_chunk() -> None:
    whole = big_pattern(3 * 65536)
    assert whole[65536:] != whole[:-65536]
    assert big_pattern(10, offset=65536 + 5) == whole[65536 + 5 : 65536 + 15]


# ---------------------------------------------------------------- /count, /status, misc
def test_count_counts_each_request_once(backend: EchoBackend) -> None:
    before = request_json(backend, "/count")
    request(backend, "/echo", method="POST", body=b"x")
    request(backend, "/")
    after = request_json(backend, "/count")
    assert after["uuid"] == backend.uuid
    assert after["requests"] == before["requests"] + 3
    assert after["by_method"]["POST"] == before["by_method"].get("POST", 0) + 1


def test_status_with_retry_after(backend: EchoBackend) -> None:
    status, headers, body = request(backend, "/status/503?retry_after=2")
    assert status == 503
    assert headers["Retry-After"] == "2"
    assert body == b"503 Service Unavailable\n"


@pytest.mark.parametrize("code", [200, 302, 404, 429, 500, 502, 504])
def test_status_answers_the_code(backend: EchoBackend, code: int) -> None:
    status, headers, _ = request(backend, f"/status/{code}")
    assert status == code
    assert "Retry-After" not in headers


def test_status_204_has_no_body(backend: EchoBackend) -> None:
    status, headers, body = request(backend, "/status/204")
    assert (status, body) == (204, b"")
    assert "Content-Length" not in headers


@pytest.mark.parametrize(
    "path", ["/status/99", "/status/600", "/status/+50", "/status/503?retry_after=x"]
)
def test_status_refuses_a_bad_code(backend: EchoBackend, path: str) -> None:
    assert request(backend, path)[0] == 400


def test_unknown_path_is_404(backend: EchoBackend) -> None:
    assert request(backend, "/nope")[0] == 404


def test_head_has_headers_but_no_body(backend: EchoBackend) -> None:
    status, headers, body = request(backend, "/big?bytes=1000", method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, "1000", b"")


def test_malformed_request_gets_400_and_close(backend: EchoBackend) -> None:
    answer = raw_exchange(backend, b"NOT HTTP AT ALL\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close\r\n" in answer


def test_http10_request_is_answered_and_closed(backend: EchoBackend) -> None:
    answer = raw_exchange(backend, b"GET / HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\n" + backend.uuid.encode())


# ---------------------------------------------------------------- connections
def test_keep_alive_two_requests_on_one_connection(backend: EchoBackend) -> None:
    conn = http.client.HTTPConnection(backend.host, backend.port, timeout=10)
    try:
        conn.request("GET", "/")
        first = conn.getresponse()
        assert first.read() == backend.uuid.encode()
        assert first.getheader("Connection") is None
        sock = conn.sock
        conn.request("POST", "/echo", body=b"abc")
        second = json.loads(conn.getresponse().read())
        assert conn.sock is sock  # http.client reconnects silently; it did not have to
        assert second["body_length"] == 3
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(backend: EchoBackend) -> None:
    pipeline = (
        b"GET /slow?ms=100 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /big?bytes=200000 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    answer = raw_exchange(backend, pipeline)
    uuid = backend.uuid.encode()
    first, rest = _split_response(answer)
    assert first.endswith(b"\r\n\r\n" + uuid)
    second, rest = _split_response(rest)
    assert json.loads(second.split(b"\r\n\r\n", 1)[1])["body_sha256"] == (
        hashlib.sha256(b"hello").hexdigest()
    )
    third, rest = _split_response(rest)
    assert third.split(b"\r\n\r\n", 1)[1] == big_pattern(200000)
    fourth, rest = _split_response(rest)
    assert b"Connection: close\r\n" in fourth
    assert fourth.endswith(uuid)
    assert rest == b""  # the request after `Connection: close` is never answered


def _split_response(data: bytes) -> tuple[bytes, bytes]:
    """One Content-Length framed response off the front of `data`."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    assert sep, data[:200]
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    end = len(head) + 4 + length
    return data[:end], data[end:]


def test_slow_does_not_block_other_connections(backend: EchoBackend) -> None:
    with socket.create_connection((backend.host, backend.port), timeout=10) as slow:
        slow.sendall(b"GET /slow?ms=5000 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert request(backend, "/")[2] == backend.uuid.encode()
        readable, _, _ = select.select([slow], [], [], 0)
        assert readable == []  # the other connection answered while this one still waits


def test_slow_answers_after_the_delay(backend: EchoBackend) -> None:
    assert request(backend, "/slow?ms=50")[2] == backend.uuid.encode()


def test_truncate_sends_half_the_announced_body_then_closes(backend: EchoBackend) -> None:
    answer = raw_exchange(backend, b"GET /truncate?bytes=1000 HTTP/1.1\r\nHost: a\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Length: 1000" in head
    assert len(body) == 500
    with pytest.raises(http.client.IncompleteRead):
        request(backend, "/truncate?bytes=100000")


def test_close_closes_without_answering(backend: EchoBackend) -> None:
    with pytest.raises(http.client.RemoteDisconnected):
        request(backend, "/close")
    first = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    answer = raw_exchange(backend, first + b"GET /close HTTP/1.1\r\nHost: a\r\n\r\n" + first)
    response, rest = _split_response(answer)
    assert response.endswith(backend.uuid.encode())
    assert rest == b""  # earlier answers are flushed, later requests never answered
