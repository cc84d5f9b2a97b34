"""Passing a request to the next peer (nginx proxy_next_upstream) end to end: a peer
answering 503 with Retry-After, GETs never failing while a healthy peer remains, and a
POST never sent twice unless the route allows it."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable

from support.procs import EchoFactory, ProxyProcess, free_port

ProxyFactory = Callable[..., ProxyProcess]


class Answer503:
    """An origin that answers every request with 503 and Retry-After, and counts."""

    def __init__(self, retry_after: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.retry_after = retry_after
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                if not head:
                    continue
                self.requests.append(head.split(b"\r\n", 1)[0])
                body = b"busy\n"
                conn.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: %d\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (self.retry_after, len(body), body)
                )

    def close(self) -> None:
        self.listener.close()


def config(port: int, busy: int, good: str, conditions: str) -> str:
    return f"""
workers: 1
access_log: off
upstreams:
  app:
    servers: ["127.0.0.1:{busy}", "{good}"]
servers:
  - listen: "127.0.0.1:{port}"
    routes:
      - path: /
        upstream: app
        next_upstream: [{conditions}]
"""


def call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_503_goes_to_the_next_peer_and_retry_after_is_honoured(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    (good,) = echo_server(1)
    busy = Answer503(retry_after=60)
    try:
        port = free_port()
        proxy(config(port, busy.port, good.address, "error, timeout, http_503"), port)
        answers = [call(port, "GET", "/") for _ in range(10)]
        assert answers == [(200, good.uuid.encode())] * 10
        # The 503 peer was tried once; its Retry-After (60 s) kept it out afterwards.
        assert len(busy.requests) == 1
    finally:
        busy.close()


def test_post_is_never_sent_twice_without_non_idempotent(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    (good,) = echo_server(1)
    busy = Answer503(retry_after=0)
    try:
        port = free_port()
        proxy(config(port, busy.port, good.address, "error, timeout, http_503"), port)
        statuses = [call(port, "POST", "/echo", b"x" * 10)[0] for _ in range(6)]
        # Round robin: half went to the 503 peer, and a POST is not passed on (nginx).
        assert sorted(statuses) == [200, 200, 200, 503, 503, 503]
        count = json.loads(call(good.port, "GET", "/count")[1])
        assert count["by_method"].get("POST", 0) == 3  # never a duplicate
    finally:
        busy.close()


def test_non_idempotent_lets_a_post_go_on(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    (good,) = echo_server(1)
    busy = Answer503(retry_after=0)
    try:
        port = free_port()
        proxy(config(port, busy.port, good.address, "http_503, non_idempotent"), port)
        assert all(call(port, "POST", "/echo", b"y" * 5)[0] == 200 for _ in range(4))
    finally:
        busy.close()


def test_debug_header_says_which_peer_and_why(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    (good,) = echo_server(1)
    busy = Answer503(retry_after=60)
    try:
        port = free_port()
        text = config(port, busy.port, good.address, "error, timeout, http_503")
        proxy(text + "        debug_header: true\n", port)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        first = r.getheader("X-Ferryman-Upstream") or ""
        assert f"peer={good.address}" in first and "strategy=round_robin" in first
        assert f"tried=127.0.0.1:{busy.port} (http_503)" in first
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        second = r.getheader("X-Ferryman-Upstream") or ""
        assert f"skipped=127.0.0.1:{busy.port} (failed," in second
        c.close()
    finally:
        busy.close()


def _limited(port: int, backend: str, queue: str) -> str:
    return f"""
workers: 1
access_log: off
upstreams:
  app:
    {queue}
    servers: [{{address: "{backend}", max_conns: 1}}]
servers:
  - listen: "127.0.0.1:{port}"
    routes:
      - {{path: /, upstream: app}}
"""


def test_max_conns_queues_then_serves(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    """One request at a time reaches the peer; the others wait in the queue, in turn."""
    (backend,) = echo_server(1)
    port = free_port()
    proxy(_limited(port, backend.address, "queue: 10\n    queue_timeout: 10s"), port)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(call(port, "GET", "/slow?ms=200")[0]))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results == [200, 200, 200]


def test_a_queued_request_is_not_overtaken_by_one_pipelined_behind_the_release(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    """The slot a finished request frees goes to the longest waiter. The next request
    pipelined on the finishing connection is read at that very moment; if it could take
    the slot first, the waiter went back to the end of the queue (FIFO broken: under
    load, some requests waited a whole queue_timeout while later ones went through)."""
    (backend,) = echo_server(1)
    port = free_port()
    proxy(_limited(port, backend.address, "queue: 10\n    queue_timeout: 10s"), port)
    done: dict[str, float] = {}
    start = time.monotonic()

    def waiter() -> None:
        status, _ = call(port, "GET", "/slow?ms=300&w")
        assert status == 200
        done["waiter"] = time.monotonic() - start

    pipelined = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        # First holds the only slot for 0.5 s; second waits on this connection behind it.
        pipelined.sendall(
            b"GET /slow?ms=500&first HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /slow?ms=300&second HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        time.sleep(0.15)
        thread = threading.Thread(target=waiter)
        thread.start()  # queued at ~0.15 s, behind `first`
        got = b""
        while got.count(b"HTTP/1.1 200") < 2 or not got.endswith(backend.uuid.encode()):
            chunk = pipelined.recv(65536)
            assert chunk, got
            got += chunk
        done["second"] = time.monotonic() - start
        thread.join(10)
    finally:
        pipelined.close()
    # FIFO: the waiter (queued at 0.15 s) before `second` (read at 0.5 s): ~0.8 s and
    # ~1.1 s. Overtaken, it was the other way round.
    assert done["waiter"] < done["second"], done


def test_each_queued_request_waits_its_own_queue_timeout(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    """One timer serves the whole queue: it fires for the front waiter, then must wait
    again for the next one's deadline, not fail it early with the first nor forget it."""
    (backend,) = echo_server(1)
    port = free_port()
    proxy(_limited(port, backend.address, "queue: 5\n    queue_timeout: 600ms"), port)
    held = threading.Thread(target=call, args=(port, "GET", "/slow?ms=2500"))
    held.start()
    time.sleep(0.3)  # the only slot is taken for 2.5 s
    waited: dict[str, tuple[int, float]] = {}

    def waiter(name: str) -> None:
        sent = time.monotonic()
        status, _ = call(port, "GET", f"/?{name}")
        waited[name] = (status, time.monotonic() - sent)

    early = threading.Thread(target=waiter, args=("early",))
    early.start()
    time.sleep(0.35)
    late = threading.Thread(target=waiter, args=("late",))
    late.start()  # queued about 0.35 s after `early`: its deadline is that much later
    early.join(10)
    late.join(10)
    held.join(10)
    # Each got its 502 after about its own 600 ms (the slot was held throughout): not the
    # late one at the early one's expiry (~0.25 s after it was sent), nor never.
    for name in ("early", "late"):
        status, elapsed = waited[name]
        assert status == 502, waited
        assert 0.5 < elapsed < 1.6, waited
    assert call(port, "GET", "/")[0] == 200  # the queue and its timer are idle again


def test_max_conns_without_queue_and_queue_timeout_give_502(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    (backend,) = echo_server(1)
    for queue in ("queue: 0", "queue: 5\n    queue_timeout: 200ms"):
        port = free_port()
        proxy(_limited(port, backend.address, queue), port)
        held = threading.Thread(target=call, args=(port, "GET", "/slow?ms=1500"))
        held.start()
        time.sleep(0.3)
        assert call(port, "GET", "/")[0] == 502  # the only peer is at max_conns
        held.join(10)
        assert call(port, "GET", "/")[0] == 200  # and free again afterwards
