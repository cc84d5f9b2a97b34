"""Closed connections and finished requests are freed by reference counting, not left in
reference cycles for Python's cyclic garbage collector (whose collections hold a
worker's event loop): read from the workers' own collector counters
(`ferryman_gc_collected_objects_total` on /metrics) of a real `ferryman run`, after
traffic that closes a client connection and an upstream connection per request
(HTTP/1.1 and HTTPS, http.client) and after HTTP/2 streams (h2load over TLS).

Before the parsers let go of httptools at close (and HTTP/2 streams of their exchange),
this traffic left 1,834 objects (HTTP/1.1) and 7,097 (HTTP/2) to the collector; the
bound is 100 each, and 0 is what it finds now.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ferryman.tls.devcert import issue
from support.h2load import run_h2load
from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy

REQUESTS = 200  # each on a new client connection, each on a new upstream connection
STREAMS = 400  # HTTP/2 streams over two connections
BOUND = 100  # collected objects allowed for all of it (none expected)


@dataclass
class Stack:
    proxy: ProxyProcess
    ca: Path
    port: int
    tls_port: int
    forward_port: int
    admin_port: int
    backend: EchoBackend


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("cycles")
    cert = issue(workdir / "ca", ("localhost", "127.0.0.1"))
    backend = start_echo(workdir / "logs")
    try:
        port, tls_port, forward_port = free_port(), free_port(), free_port()
        admin_port, closed_port = free_port(), free_port()
        certs = f"[{{cert: {cert.cert}, key: {cert.key}}}]"
        text = f"""
workers: 1
admin: {{listen: "127.0.0.1:{admin_port}"}}
upstreams:
  app: {{servers: ["{backend.address}"], keepalive: 0}}
  gone: {{servers: ["127.0.0.1:{closed_port}"]}}
servers:
  - listen:
      - "127.0.0.1:{port}"
      - address: "127.0.0.1:{tls_port}"
        tls: {{certificates: {certs}}}
    routes:
      - {{path: /, upstream: app}}
      - {{path: /gone, upstream: gone}}
  - listen: "127.0.0.1:{forward_port}"
    forward: {{allow_private: true, connect_ports: [{backend.port}]}}
"""
        proxy = start_proxy(workdir / "proxy", text, port)
        ca = workdir / "ca" / "ca.pem"
        try:
            yield Stack(proxy, ca, port, tls_port, forward_port, admin_port, backend)
        finally:
            proxy.stop()
    finally:
        backend.stop()


def _scrape(admin_port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def _counters_after(stack: Stack, requests: float) -> dict[str, float]:
    """The metrics once the worker has published at least `requests` requests (it
    publishes once a second): the collector's counters then cover that traffic."""
    deadline = time.monotonic() + 10
    while True:
        now = _scrape(stack.admin_port)
        if now.get("ferryman_requests_total", 0) >= requests:
            return now
        assert time.monotonic() < deadline, f"requests never reached {requests}: {now}"
        time.sleep(0.2)


def _collected(metrics: dict[str, float]) -> float:
    return metrics["ferryman_gc_collected_objects_total"]


def _left_to_the_collector(stack: Stack, traffic: Callable[[], None], requests: int) -> float:
    """Objects the worker's collector found unreachable while `traffic` (that many
    requests) went through."""
    before = _counters_after(stack, 0)
    traffic()
    after = _counters_after(stack, before.get("ferryman_requests_total", 0) + requests)
    return _collected(after) - _collected(before)


def _each_on_a_new_connection(
    connect: Callable[[], http.client.HTTPConnection], target: Callable[[int], str], count: int
) -> None:
    for i in range(count):
        conn = connect()
        try:
            conn.request("GET", target(i), headers={"Connection": "close"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        finally:
            conn.close()


def test_the_collector_counters_are_published(stack: Stack) -> None:
    metrics = _counters_after(stack, 0)
    assert "ferryman_gc_collections_total" in metrics
    assert "ferryman_gc_collected_objects_total" in metrics


def test_a_connection_per_request_leaves_no_cycles(stack: Stack) -> None:
    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)

    def traffic() -> None:
        _each_on_a_new_connection(connect, lambda i: f"/echo?{i}", REQUESTS)

    assert _left_to_the_collector(stack, traffic, REQUESTS) < BOUND


def test_https_connection_per_request_leaves_no_cycles(stack: Stack) -> None:
    context = ssl.create_default_context(cafile=str(stack.ca))

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPSConnection("127.0.0.1", stack.tls_port, timeout=10, context=context)

    def traffic() -> None:
        _each_on_a_new_connection(connect, lambda i: f"/echo?{i}", REQUESTS // 2)

    assert _left_to_the_collector(stack, traffic, REQUESTS // 2) < BOUND


def test_http2_streams_leave_no_cycles(stack: Stack) -> None:
    def traffic() -> None:
        result = run_h2load(f"https://127.0.0.1:{stack.tls_port}/", STREAMS, 2, 20)
        assert result.succeeded == STREAMS, result.stdout

    assert _left_to_the_collector(stack, traffic, STREAMS) < BOUND


def test_failed_upstream_connects_leave_no_cycles(stack: Stack) -> None:
    # The event loop builds the upstream protocol before it connects: nothing of it may
    # stay behind when the connect fails (here, every time: 502).
    def traffic() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
        try:
            for _ in range(REQUESTS):
                conn.request("GET", "/gone")
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 502
        finally:
            conn.close()

    assert _left_to_the_collector(stack, traffic, REQUESTS) < BOUND


def test_forward_requests_and_connect_tunnels_leave_no_cycles(stack: Stack) -> None:
    target = stack.backend.address

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", stack.forward_port, timeout=10)

    def tunnels() -> None:
        for _ in range(REQUESTS // 2):
            with socket.create_connection(("127.0.0.1", stack.forward_port), timeout=10) as sock:
                sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
                sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
                assert answer.count(b"HTTP/1.1 200") == 2  # the tunnel's, then the backend's

    def traffic() -> None:
        _each_on_a_new_connection(connect, lambda i: f"http://{target}/echo?{i}", REQUESTS // 2)
        tunnels()

    assert _left_to_the_collector(stack, traffic, REQUESTS) < BOUND
