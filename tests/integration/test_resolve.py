"""`resolve` servers: a name is looked up again every interval, its peers follow its
addresses (added, removed, kept), and a request in flight on a removed peer finishes."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from pathlib import Path

from support.procs import ProxyProcess, free_port, start_echo

ProxyFactory = Callable[..., ProxyProcess]


def uuid_of(port: int, path: str = "/") -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_peers_follow_the_name(proxy: ProxyFactory, tmp_path: Path) -> None:
    port_b = free_port()
    a = start_echo(tmp_path / "a", "127.0.0.21", port_b)
    b = start_echo(tmp_path / "b", "127.0.0.22", port_b)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.21 svc.test\n")
    port = free_port()
    text = f"""
workers: 1
access_log: off
hosts_file: {hosts}
resolve_interval: 200ms
upstreams:
  app:
    servers: [{{address: "svc.test:{port_b}", resolve: true}}]
servers:
  - listen: "127.0.0.1:{port}"
    routes: [{{path: /, upstream: app}}]
"""
    try:
        p = proxy(text, port)
        assert {uuid_of(port)[1] for _ in range(4)} == {a.uuid}
        # A slow request in flight to the first address while the name moves away.
        slow: list[tuple[int, str]] = []
        held = threading.Thread(target=lambda: slow.append(uuid_of(port, "/slow?ms=1200")))
        held.start()
        time.sleep(0.2)
        hosts.write_text("127.0.0.22 svc.test\n")
        assert wait_for(lambda: uuid_of(port)[1] == b.uuid)
        assert {uuid_of(port)[1] for _ in range(4)} == {b.uuid}
        held.join(10)
        assert slow == [(200, a.uuid)]  # the removed peer's request finished
        # Two addresses: two peers, balanced.
        hosts.write_text("127.0.0.21 svc.test\n127.0.0.22 svc.test\n")
        assert wait_for(lambda: {uuid_of(port)[1] for _ in range(4)} == {a.uuid, b.uuid})
        assert "added" in p.output() and "removed" in p.output()
    finally:
        a.stop()
        b.stop()
