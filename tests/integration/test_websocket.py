"""WebSocket and other upgrades through a real `ferryman run`, to a real WebSocket
backend (tests/support/ws_backend.py, the `websockets` package), with the `websockets`
client: ws:// and wss://, messages of 1 byte to 16 MiB, an upstream that drops the
connection mid-stream, a refused Upgrade (the connection stays HTTP), h2c never
tunnelled, half-close, and the tunnel's idle timeout (nginx: proxy_read_timeout).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ferryman.tls.devcert import issue
from support.procs import Proc, ProxyProcess, free_port, start_proxy
from support.rawhttp import RawClient
from support.ws_backend import start_ws_backend

SIZES = (1, 125, 126, 65535, 65536, 1 << 20, 16 << 20)
UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@dataclass
class Stack:
    proxy: ProxyProcess
    port: int
    tls_port: int
    ca: Path
    backend: Proc

    def wss_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("ws")
    cert = issue(workdir / "ca", ("localhost", "127.0.0.1"))
    backend, backend_port = start_ws_backend(workdir)
    port, tls_port = free_port(), free_port()
    text = f"""
upstreams:
  ws: {{servers: ["127.0.0.1:{backend_port}"]}}
servers:
  - listen:
      - "127.0.0.1:{port}"
      - address: "127.0.0.1:{tls_port}"
        tls: {{certificates: [{{cert: {cert.cert}, key: {cert.key}}}]}}
    routes:
      - {{path: /, upstream: ws}}
      - {{path: /short/, upstream: ws, upstream_uri: /, read_timeout: 1s}}
"""
    try:
        proxy = start_proxy(workdir / "proxy", text, port)
        try:
            yield Stack(proxy, port, tls_port, workdir / "ca" / "ca.pem", backend)
        finally:
            proxy.stop()
    finally:
        backend.stop()


def echo_all(url: str, ssl_context: ssl.SSLContext | None = None) -> None:
    with connect(url, ssl=ssl_context, max_size=None, open_timeout=10, compression=None) as ws:
        for size in SIZES:
            data = os.urandom(size)
            ws.send(data)
            assert ws.recv(timeout=30) == data, size
        ws.send("text é")
        assert ws.recv(timeout=10) == "text é"


def test_ws_echo_1_byte_to_16_mib(stack: Stack) -> None:
    echo_all(f"ws://127.0.0.1:{stack.port}/echo")


def test_wss_echo_1_byte_to_16_mib(stack: Stack) -> None:
    echo_all(f"wss://localhost:{stack.tls_port}/echo", stack.wss_context())


@pytest.mark.parametrize("secure", [False, True])
def test_upstream_dropping_mid_stream_closes_the_client(stack: Stack, secure: bool) -> None:
    url = (
        f"wss://localhost:{stack.tls_port}/drop" if secure else f"ws://127.0.0.1:{stack.port}/drop"
    )
    with connect(url, ssl=stack.wss_context() if secure else None, open_timeout=10) as ws:
        ws.send(b"first")
        assert ws.recv(timeout=10) == b"first"
        with pytest.raises(ConnectionClosed):
            ws.send(b"second")
            ws.recv(timeout=10)


def test_refused_upgrade_leaves_the_connection_http(stack: Stack) -> None:
    """The backend answers 403, not 101: no tunnel; the next request on the same
    connection, even one sent right behind the Upgrade request, is a normal request."""
    with RawClient(stack.port) as c:
        c.send(UPGRADE.format(path="/refuse").encode() + b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        first = c.read_response()
        assert first is not None and first.status == 403
        second = c.read_response()
        assert second is not None and second.status == 200
        assert json.loads(second.body)["path"] == "/after"
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        third = c.read_response()
        assert third is not None and json.loads(third.body)["path"] == "/later"


def test_bytes_after_a_refused_upgrade_are_checked_as_a_request(stack: Stack) -> None:
    with RawClient(stack.port) as c:
        c.send(UPGRADE.format(path="/refuse").encode() + b"\x81\x85garbage-frame\r\n\r\n")
        first = c.read_response()
        assert first is not None and first.status == 403
        second = c.read_response()
        assert second is not None and second.status == 400
        assert c.is_closed()


def test_h2c_upgrade_is_never_tunnelled(stack: Stack) -> None:
    with RawClient(stack.port) as c:
        c.send(
            b"GET /h2c HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\n"
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        )
        resp = c.read_response()
        assert resp is not None and resp.status == 200
        seen = {n.lower() for n in json.loads(resp.body)["headers"]}
        assert "upgrade" not in seen and "http2-settings" not in seen
        assert c.is_closed()


def test_client_half_close_ends_the_tunnel(stack: Stack) -> None:
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as s:
        s.sendall(UPGRADE.format(path="/echo").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
        s.shutdown(socket.SHUT_WR)
        # The backend sees EOF and closes; the proxy closes the client in turn.
        s.settimeout(10)
        while s.recv(4096):
            pass


def test_idle_tunnel_times_out_after_read_timeout(stack: Stack) -> None:
    with connect(
        f"ws://127.0.0.1:{stack.port}/short/echo", open_timeout=10, ping_interval=None
    ) as ws:
        ws.send(b"x")
        assert ws.recv(timeout=5) == b"x"
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert time.monotonic() - started < 5
    assert "tunnel idle past read_timeout" in stack.proxy.output()
