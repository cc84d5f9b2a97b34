"""Active health checks end to end: a prober process probes every peer, and all the
workers avoid a peer that fails its checks (the verdict is shared through the table
the master maps before forking)."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Callable

from ferryman.health.shared import SharedHealth
from support.procs import EchoFactory, ProxyProcess, free_port

ProxyFactory = Callable[..., ProxyProcess]


class Silent:
    """Accepts connections, records each request line, never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.heads: list[bytes] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                self.heads.append(conn.recv(4096))

    def close(self) -> None:
        self.listener.close()
        for c in self.held:
            c.close()


def test_a_peer_failing_its_checks_is_avoided_by_every_worker(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    (good,) = echo_server(1)
    silent = Silent()
    try:
        port = free_port()
        text = f"""
workers: 2
access_log: off
timeouts: {{client_header: 2s}}  # a tenth of it is the workers' tick: 0.2 s
upstreams:
  app:
    health_check: {{path: /, interval: 200ms, timeout: 200ms, fails: 1, passes: 1}}
    servers: ["127.0.0.1:{silent.port}", "{good.address}"]
servers:
  - listen: "127.0.0.1:{port}"
    routes:
      - {{path: /, upstream: app, read_timeout: 10s}}
"""
        p = proxy(text, port)
        # The prober marks the peer down, then each worker reads that on its sweeper
        # tick (0.2 s here): wait for the first, then give the second several ticks.
        deadline = time.monotonic() + 10
        while "fails its health checks" not in p.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "fails its health checks" in p.output()
        time.sleep(1.0)
        for _ in range(20):  # new connections: spread over both workers
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/")
            r = c.getresponse()
            assert (r.status, r.read().decode()) == (200, good.uuid)
            c.close()
        # Only the prober ever reached the silent peer.
        assert silent.heads
        assert all(b"ferryman-health-check" in h for h in silent.heads if h)
    finally:
        silent.close()


def test_shared_health_is_seen_across_fork() -> None:
    shared = SharedHealth(3)
    pid = os.fork()
    if pid == 0:
        shared.set_probe_down(2, True)
        shared.publish_down_until(1, 1234.5)
        os._exit(0)
    os.waitpid(pid, 0)
    assert shared.probe_down(2) and not shared.probe_down(0)
    assert shared.down_until(1) == 1234.5
    shared.publish_down_until(1, 1000.0)  # an earlier time never overwrites a later one
    assert shared.down_until(1) == 1234.5
