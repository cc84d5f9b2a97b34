"""limit_req and limit_conn through a real `ferryman run` with two workers in front of a
real echo backend, with real clients on raw sockets.

Every route has a zone of its own, so tests do not share buckets or counts. The zones
are the master's shared memory: with two workers, connections land on both (the kernel
spreads SO_REUSEPORT connections by their addresses), so a count that comes out exact
for a burst of connections shows that both workers keyed into one table.

Timing assertions are lower bounds (a delay the proxy enforces cannot come early) or
upper bounds with a wide margin; none depends on a tight schedule.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.rawhttp import RawClient, RawResponse

ZONES = """
limit_zones:
  - {name: shared, kind: req, key: $remote_addr, rate: 1r/m}
  - {name: r429, kind: req, key: $remote_addr, rate: 1r/m}
  - {name: pace, kind: req, key: $remote_addr, rate: 2r/s}
  - {name: quick, kind: req, key: $remote_addr, rate: 2r/s}
  - {name: dry, kind: req, key: $remote_addr, rate: 1r/m}
  - {name: perhost, kind: req, key: $http_x_tenant, rate: 1r/m}
  - {name: addr, kind: conn, key: $remote_addr, size: 64k}
  - {name: gone, kind: conn, key: $remote_addr, size: 64k}
  - {name: fail, kind: conn, key: $remote_addr, size: 64k}
"""

ROUTES = """
      - {path: /shared, upstream: app, upstream_uri: /,
         limit_req: [{zone: shared, burst: 4, nodelay: true}]}
      - {path: /r429, upstream: app, upstream_uri: /,
         limit_req: [{zone: r429}], limit_req_status: 429}
      - {path: /pace, upstream: app, upstream_uri: /, limit_req: [{zone: pace, burst: 3}]}
      - {path: /quick, upstream: app, upstream_uri: /,
         limit_req: [{zone: quick, burst: 3, nodelay: true}]}
      - {path: /dry, upstream: app, upstream_uri: /,
         limit_req: [{zone: dry}], limit_dry_run: true}
      - {path: /tenant, upstream: app, upstream_uri: /, limit_req: [{zone: perhost}]}
      - {path: /slow, upstream: app, limit_conn: [{zone: addr, limit: 2}]}
      - {path: /gone/, upstream: app, upstream_uri: /, limit_conn: [{zone: gone, limit: 2}]}
      - {path: /fail/, upstream: app, upstream_uri: /, limit_conn: [{zone: fail, limit: 1}]}
"""


def _config(port: int, backend: EchoBackend) -> str:
    return (
        f"workers: 2\n{ZONES}"
        f'upstreams:\n  app:\n    servers:\n      - {{address: "{backend.address}"}}\n'
        f'servers:\n  - listen: "127.0.0.1:{port}"\n    routes:{ROUTES}'
    )


@dataclass(frozen=True)
class Stack:
    backend: EchoBackend
    proxy: ProxyProcess

    def log_lines(self, pattern: str) -> list[str]:
        return [line for line in self.proxy.output().splitlines() if re.search(pattern, line)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("limits")
    backend = start_echo(workdir / "logs")
    try:
        port = free_port()
        proxy = start_proxy(workdir / "proxy", _config(port, backend), port)
        try:
            yield Stack(backend, proxy)
        finally:
            proxy.stop()
    finally:
        backend.stop()


def get(port: int, target: str, *headers: str, timeout: float = 15.0) -> RawResponse:
    """One request on a connection of its own."""
    extra = "".join(f"{h}\r\n" for h in headers)
    with RawClient(port, timeout=timeout) as client:
        client.send(
            f"GET {target} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n".encode()
        )
        resp = client.read_response()
    assert resp is not None, f"no answer to {target}"
    return resp


def at_once(count: int, send: Callable[[], RawResponse]) -> list[tuple[int, float]]:
    """`count` requests from as many threads released together: (status, seconds)."""
    barrier = threading.Barrier(count)
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait(timeout=10)
        start = time.monotonic()
        resp = send()
        with lock:
            results.append((resp.status, time.monotonic() - start))

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == count, "a request did not finish"
    return results


def test_a_burst_is_limited_across_both_workers(stack: Stack) -> None:
    # 1r/m with burst=4 nodelay: five pass (the first and a burst of four), the rest get
    # 503; separately counting workers would have let up to ten through.
    results = at_once(10, lambda: get(stack.proxy.port, "/shared"))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 5 + [503] * 5
    lines = stack.log_lines(r'limiting requests, excess: [45]\.\d{3} by zone "shared"')
    assert len(lines) == 5
    assert 'key: "127.0.0.1", client: 127.0.0.1, request: "GET /shared HTTP/1.1"' in lines[0]


def test_429_carries_retry_after(stack: Stack) -> None:
    assert get(stack.proxy.port, "/r429").status == 200
    resp = get(stack.proxy.port, "/r429")
    assert resp.status == 429
    # 1r/m drains one request in 62.5 s by nginx's integers, rounded up to whole seconds
    assert resp.header(b"retry-after") in (b"62", b"63")


def test_delayed_requests_wait_their_turn(stack: Stack) -> None:
    # 2r/s, burst 3, no nodelay: four requests at once leave 0, 0.5, 1.0 and 1.5 s late.
    results = at_once(4, lambda: get(stack.proxy.port, "/pace"))
    assert [status for status, _ in results] == [200] * 4
    times = sorted(seconds for _, seconds in results)
    assert times[-1] >= 1.4
    assert times[-1] - times[0] >= 1.0
    assert times[-1] < 15
    assert stack.log_lines(r'delaying request, excess: \d\.\d{3}, by zone "pace"')


def test_nodelay_requests_do_not_wait(stack: Stack) -> None:
    # The same zone settings with nodelay: the burst passes at once.
    results = at_once(4, lambda: get(stack.proxy.port, "/quick"))
    assert [status for status, _ in results] == [200] * 4
    assert max(seconds for _, seconds in results) < 1.4  # the delayed ones need >= 1.5 s
    assert not stack.log_lines(r'by zone "quick"')


def test_an_empty_key_is_not_limited_and_each_key_has_its_bucket(stack: Stack) -> None:
    port = stack.proxy.port
    assert [get(port, "/tenant").status for _ in range(3)] == [200] * 3  # no X-Tenant
    assert get(port, "/tenant", "X-Tenant: a").status == 200
    assert get(port, "/tenant", "X-Tenant: a").status == 503
    assert get(port, "/tenant", "X-Tenant: b").status == 200


def test_dry_run_passes_everything_and_logs(stack: Stack) -> None:
    assert [get(stack.proxy.port, "/dry").status for _ in range(4)] == [200] * 4
    lines = stack.log_lines(r'limiting requests, dry run, excess: 1\.000 by zone "dry"')
    assert len(lines) == 3


def _slow(port: int, ms: int, prefix: str = "") -> RawClient:
    """A request to the backend's /slow left in flight on an open connection."""
    client = RawClient(port, timeout=15)
    client.send(f"GET {prefix}/slow?ms={ms} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return client


def test_limit_conn_counts_requests_in_flight(stack: Stack) -> None:
    port = stack.proxy.port
    held = [_slow(port, 1500) for _ in range(2)]
    try:
        time.sleep(0.3)  # both reach the backend (and count) before the third
        refused = get(port, "/slow?ms=1")
        assert refused.status == 503
        for client in held:
            resp = client.read_response()
            assert resp is not None and resp.status == 200
    finally:
        for client in held:
            client.close()
    # both finished: their counts went back
    assert [get(port, "/slow?ms=1").status for _ in range(3)] == [200] * 3
    assert stack.log_lines(r'limiting connections by zone "addr", key: "127.0.0.1"')


def test_limit_conn_releases_when_the_client_goes_away(stack: Stack) -> None:
    port = stack.proxy.port
    held = [_slow(port, 10_000, "/gone") for _ in range(2)]
    time.sleep(0.3)
    assert get(port, "/gone/slow?ms=1").status == 503
    for client in held:
        # Gone at once (a reset), long before the backend would answer. A FIN alone is a
        # half-close, after which the client may still read its answer (RFC 9112 9.6).
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
    deadline = time.monotonic() + 5
    status = 0
    while time.monotonic() < deadline:
        status = get(port, "/gone/slow?ms=1").status
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200, "the counts of the clients that left were not given back"
    assert stack.log_lines(r'limiting connections by zone "gone"')


def test_limit_conn_releases_when_the_upstream_fails(stack: Stack) -> None:
    # limit 1; the backend's /close drops the connection: 502, and the count goes back.
    port = stack.proxy.port
    assert [get(port, "/fail/close").status for _ in range(3)] == [502] * 3
    assert get(port, "/fail/slow?ms=1").status == 200


def test_reload_keeps_the_state_of_an_unchanged_zone(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A proxy of its own: the zone spec stays, the route's status changes. The new
    # workers find the bucket the old ones filled (nginx keeps a zone across reloads).
    workdir = tmp_path_factory.mktemp("limits-reload")
    port = free_port()
    zone = "limit_zones: [{name: keep, kind: req, key: $remote_addr, rate: 1r/m}]\n"

    def config(status: int) -> str:
        return (
            f"workers: 2\n{zone}"
            f'upstreams:\n  app:\n    servers: ["{stack.backend.address}"]\n'
            f'servers:\n  - listen: "127.0.0.1:{port}"\n    routes:\n'
            f"      - {{path: /, upstream: app, limit_req: [{{zone: keep}}],"
            f" limit_req_status: {status}}}\n"
        )

    proxy = start_proxy(workdir, config(503), port)
    try:
        assert get(port, "/").status == 200
        assert get(port, "/").status == 503
        proxy.config_path.write_text(config(429))
        os.kill(proxy.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        status = 503
        while status == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
            status = get(port, "/").status
        # the new configuration answers, and its bucket is still the full one
        assert status == 429
    finally:
        proxy.stop()
