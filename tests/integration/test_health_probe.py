"""health/probe.py against real peers: the echo backend process, a closed port, and a
listener that accepts but never answers."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator

import pytest

from ferryman.config.schema import HealthCheckSpec
from ferryman.health.probe import probe
from support.procs import EchoBackend, EchoFactory, free_port


@pytest.fixture
def echo(echo_server: EchoFactory) -> EchoBackend:
    return echo_server()[0]


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """Accepts connections (the kernel backlog does) and never reads or answers."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        yield srv


def check(host: str, port: int, **spec: object) -> tuple[bool, str]:
    return asyncio.run(probe(host, port, HealthCheckSpec(**spec)))  # type: ignore[arg-type]


def test_http_ok_on_root(echo: EchoBackend) -> None:
    assert check(echo.host, echo.port) == (True, "status 200")


def test_http_status_outside_ranges(echo: EchoBackend) -> None:
    assert check(echo.host, echo.port, path="/status/503") == (False, "status 503")


def test_http_status_ranges_are_configurable(echo: EchoBackend) -> None:
    ranges = ((200, 299), (500, 503))
    assert check(echo.host, echo.port, path="/status/503", statuses=ranges)[0]
    assert not check(echo.host, echo.port, path="/status/404", statuses=ranges)[0]


def test_http_body_regex_matches_uuid(echo: EchoBackend) -> None:
    ok, reason = check(echo.host, echo.port, body=f"^{re.escape(echo.uuid)}$")
    assert (ok, reason) == (True, "status 200")


def test_http_body_regex_mismatch(echo: EchoBackend) -> None:
    other = "00000000-0000-0000-0000-000000000000"
    assert check(echo.host, echo.port, body=other) == (False, "body did not match")


def test_tcp_ok(echo: EchoBackend) -> None:
    assert check(echo.host, echo.port, kind="tcp")[0]


@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_closed_port_fails_fast(kind: str) -> None:
    port = free_port()
    start = time.monotonic()
    assert check("127.0.0.1", port, kind=kind, timeout=5.0) == (False, "connect refused")
    assert time.monotonic() - start < 2.0


def test_silent_listener_times_out(silent: socket.socket) -> None:
    port = silent.getsockname()[1]
    start = time.monotonic()
    assert check("127.0.0.1", port, timeout=0.3) == (False, "timeout")
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 2.0


def test_silent_listener_passes_tcp(silent: socket.socket) -> None:
    # A tcp probe only asks whether the peer accepts connections.
    assert check("127.0.0.1", silent.getsockname()[1], kind="tcp", timeout=0.3)[0]


async def _probe_canned(answer: bytes, **spec: object) -> tuple[bool, str]:
    """Probe a loopback server that writes `answer` and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        return await probe("127.0.0.1", port, HealthCheckSpec(**spec))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "status_line",
    [
        b"HTTP/1.1 +20 OK",
        b"HTTP/1.1 2_00 OK",
        b"HTTP/1.1  200 OK",
        "HTTP/1.1 \uff12\uff10\uff10 OK".encode(),
        b"HTTP/2 200",
        b"ICY 200 OK",
        b"HTTP/1.1 2000 OK",
    ],
)
def test_malformed_status_line_fails(status_line: bytes) -> None:
    answer = status_line + b"\r\nContent-Length: 0\r\n\r\n"
    assert asyncio.run(_probe_canned(answer)) == (False, "malformed status line")


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 204", b"HTTP/1.0 200 OK"])
def test_lenient_but_valid_status_lines_pass(status_line: bytes) -> None:
    answer = status_line + b"\r\nContent-Length: 0\r\n\r\n"
    assert asyncio.run(_probe_canned(answer))[0]


def test_closed_before_head_fails() -> None:
    verdict = asyncio.run(_probe_canned(b"HTTP/1.1 200 OK\r\n"))
    assert verdict == (False, "no complete response head")


def test_body_read_is_bounded_by_content_length() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokTRAILING"
    assert asyncio.run(_probe_canned(answer, body="^ok$"))[0]
