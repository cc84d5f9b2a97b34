"""Connection caps against a real `ferryman run`: worker_connections (per worker) and
max_connections (across every worker, counted in shared memory the master makes before
it forks). Over a cap a new connection is closed at once, without an answer, and the
proxy logs a line that says which cap; when connections close (or a worker holding
some dies), room comes back.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from support.memory import child_pids, wait_for_children
from support.procs import EchoFactory, ProxyProcess, free_port, proxy_config
from support.rawhttp import RawClient

ProxyFactory = Callable[..., ProxyProcess]
TIMEOUTS = "timeouts: {client_header: 30s, keepalive: 60s}\naccess_log: off"


def connect_and_ask(port: int) -> RawClient | None:
    """A kept-alive connection that got an answer, or None if the proxy closed it."""
    client = RawClient(port, timeout=5)
    try:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        resp = client.read_response()
    except OSError:
        resp = None
    if resp is None:
        client.close()
        return None
    assert resp.status == 200
    return client


def open_many(port: int, count: int) -> list[RawClient | None]:
    return [connect_and_ask(port) for _ in range(count)]


def wait_for_log(proc: ProxyProcess, text: str) -> None:
    deadline = time.monotonic() + 5
    while text not in proc.output():
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{proc.output()}"
        time.sleep(0.05)


@pytest.fixture
def clients() -> Iterator[list[RawClient]]:
    held: list[RawClient] = []
    yield held
    for client in held:
        client.close()


def test_worker_connections(
    echo_server: EchoFactory, proxy: ProxyFactory, clients: list[RawClient]
) -> None:
    (backend,) = echo_server(1)
    port = free_port()
    top = f"worker_connections: 20\n{TIMEOUTS}"
    p = proxy(proxy_config(port, [backend.address], top=top), port)
    accepted = open_many(port, 20)
    clients.extend(c for c in accepted if c is not None)
    assert len(clients) == 20, "a connection under the cap was refused"
    assert open_many(port, 5) == [None] * 5, "a connection over the cap was served"
    wait_for_log(p, "20 worker_connections are not enough")
    # Room comes back as connections close.
    for client in clients[:5]:
        client.close()
    del clients[:5]
    time.sleep(0.2)
    again = open_many(port, 5)
    clients.extend(c for c in again if c is not None)
    assert None not in again
    assert connect_and_ask(port) is None


def test_max_connections_across_workers(
    echo_server: EchoFactory, proxy: ProxyFactory, clients: list[RawClient]
) -> None:
    (backend,) = echo_server(1)
    port = free_port()
    top = f"max_connections: 30\nworker_connections: 1000\n{TIMEOUTS}"
    p = proxy(proxy_config(port, [backend.address], workers=2, top=top), port)
    workers = wait_for_children(p.pid, 2)
    accepted = open_many(port, 30)
    clients.extend(c for c in accepted if c is not None)
    assert len(clients) == 30, "a connection under the cap was refused"
    assert open_many(port, 10) == [None] * 10, "a connection over the global cap was served"
    wait_for_log(p, "max_connections (30 across all workers) reached")
    # Both workers took connections (SO_REUSEPORT spreads them); the cap is global,
    # not 30 per worker, or the 10 extra would have been served.
    for client in clients[:10]:
        client.close()
    del clients[:10]
    time.sleep(0.2)
    again = open_many(port, 10)
    clients.extend(c for c in again if c is not None)
    assert None not in again, "closed connections were not given back"
    assert connect_and_ask(port) is None

    # A worker that dies takes its connections with it: the master zeroes its counter.
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        now_workers = child_pids(p.pid)
        if victim not in now_workers and len(now_workers) == 2:
            break
        assert time.monotonic() < deadline, "the master did not replace the killed worker"
        time.sleep(0.05)
    alive = [c for c in clients if not c.is_closed(timeout=0.05)]
    lost = len(clients) - len(alive)
    assert 0 < lost < 30, f"the killed worker held {lost} of 30 connections"
    fresh = open_many(port, lost)
    clients.extend(c for c in fresh if c is not None)
    assert None not in fresh, "the dead worker's connections still counted"
    assert connect_and_ask(port) is None
