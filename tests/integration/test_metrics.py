"""GET /metrics on the admin listener of a real `ferryman run` with two workers, read with
prometheus_client's own text parser: request counters and histograms match the traffic
sent (summed across both workers), cache and limit/access counters, retries, and peer
health flipping when a backend dies, kept across a reload for the unchanged peer.
"""

from __future__ import annotations

import http.client
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.procs import EchoBackend, ProxyProcess, free_port, start_echoes, start_proxy

SERVER = "metrics.test"


def config_text(port: int, admin_port: int, backends: list[EchoBackend], gen: int) -> str:
    peers = "".join(
        f'      - {{address: "{b.address}", max_fails: 1, fail_timeout: 60s}}\n' for b in backends
    )
    return f"""
workers: 2
admin: {{listen: "127.0.0.1:{admin_port}"}}
cache_zones: [{{name: mem, memory_size: 8m}}]
limit_zones: [{{name: tight, kind: req, key: $remote_addr, rate: 1r/m}}]
upstreams:
  app:
    servers:
{peers}
servers:
  - listen: "127.0.0.1:{port}"
    server_names: [{SERVER}]
    routes:
      - {{path: /, upstream: app}}
      - {{path: /cache, upstream: app, cache: {{zone: mem}}}}
      - {{path: /limited, upstream: app, upstream_uri: /, limit_req: [{{zone: tight}}],
         limit_req_status: 429}}
      - {{path: /private, upstream: app, access: [{{deny: all, name: nobody}}]}}
      - path: /gen
        add_headers: [{{name: X-Gen, value: "{gen}", always: true}}]
        script: [{{return: {{status: 204}}}}]
"""


@dataclass
class Stack:
    proxy: ProxyProcess
    port: int
    admin_port: int
    backends: list[EchoBackend]

    def scrape(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        assert resp.status == 200, body[:200]
        assert resp.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
        return {f.name: f for f in text_string_to_metric_families(body.decode())}

    def wait_for(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Scrape until `check` holds: workers publish once a second."""
        deadline = time.monotonic() + timeout
        fams = self.scrape()
        while not check(fams) and time.monotonic() < deadline:
            time.sleep(0.2)
            fams = self.scrape()
        return fams


def value(fams: dict[str, Any], family: str, sample: str | None = None, **labels: str) -> float:
    """The sum of the samples of `family` named `sample` whose labels include `labels`."""
    name = sample or family
    return sum(
        s.value
        for s in fams[family].samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def get(port: int, target: str, conn: http.client.HTTPConnection | None = None) -> int:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", target, headers={"Host": SERVER})
        resp = c.getresponse()
        resp.read()
        return resp.status
    finally:
        if own:
            c.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("metrics")
    backends = start_echoes(workdir, "127.0.0.1", [0, 0])
    try:
        port, admin_port = free_port(), free_port()
        proxy = start_proxy(workdir / "proxy", config_text(port, admin_port, backends, 0), port)
        try:
            stack = Stack(proxy, port, admin_port, backends)
            stack.wait_for(lambda f: value(f, "ferryman_workers") == 2)
            yield stack
        finally:
            proxy.stop()
    finally:
        for b in backends:
            b.stop()


ROOT = {"server": SERVER, "location": "/", "upstream": "app"}
REQUESTS = "ferryman_requests_total"


def test_requests_and_histograms_summed_across_workers(stack: Stack) -> None:
    before = stack.scrape()
    ok0 = value(before, "ferryman_requests", REQUESTS, code="200", **ROOT)
    missing0 = value(before, "ferryman_requests", REQUESTS, code="404", **ROOT)
    # New connections each: SO_REUSEPORT spreads them over both workers.
    sent_ok, sent_404 = 120, 7
    for _ in range(sent_ok):
        assert get(stack.port, "/") == 200
    for _ in range(sent_404):
        assert get(stack.port, "/status/404") == 404
    hist = "ferryman_request_duration_seconds"

    def settled(f: dict[str, Any]) -> bool:
        return value(f, "ferryman_requests", REQUESTS, **ROOT) == ok0 + missing0 + 127

    fams = stack.wait_for(settled)
    assert value(fams, "ferryman_workers") == 2
    assert value(fams, "ferryman_requests", REQUESTS, code="200", **ROOT) == ok0 + sent_ok
    assert value(fams, "ferryman_requests", REQUESTS, code="404", **ROOT) == missing0 + sent_404
    assert value(fams, "ferryman_requests", REQUESTS, **{"class": "4xx"}, **ROOT) >= sent_404
    count = value(fams, hist, hist + "_count", **ROOT)
    assert count == ok0 + missing0 + 127
    assert value(fams, hist, hist + "_bucket", le="+Inf", **ROOT) == count
    up = "ferryman_upstream_duration_seconds"
    assert value(fams, up, up + "_count", **ROOT) == count
    out = "ferryman_response_body_bytes"
    assert value(fams, out, out + "_total", **ROOT) > 0
    assert value(fams, "ferryman_connections_active") >= 0


def test_cache_results_counted(stack: Stack) -> None:
    # One keep-alive connection: one worker, so its memory zone answers the second.
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        target = f"/cache?id=m{os.getpid()}&cc=max-age%3D60"
        assert get(stack.port, target, conn) == 200
        assert get(stack.port, target, conn) == 200
        assert get(stack.port, target, conn) == 200
    finally:
        conn.close()
    name = "ferryman_cache_requests_total"
    fams = stack.wait_for(
        lambda f: value(f, "ferryman_cache_requests", name, zone="mem", result="hit") >= 2
    )
    assert value(fams, "ferryman_cache_requests", name, zone="mem", result="miss") == 1
    assert value(fams, "ferryman_cache_requests", name, zone="mem", result="hit") == 2


def test_limit_and_access_rejections_counted(stack: Stack) -> None:
    statuses = [get(stack.port, "/limited") for _ in range(5)]
    refused = statuses.count(429)
    assert statuses.count(200) == 1 and refused == 4, statuses
    assert [get(stack.port, "/private") for _ in range(3)] == [403] * 3
    name = "ferryman_rejections_total"
    limited = {"server": SERVER, "location": "/limited", "upstream": "app"}

    # Each worker publishes its own counters once a second, so one worker's share can
    # arrive a tick after another's: wait for every count the test reads below.
    def settled(f: dict[str, Any]) -> bool:
        return (
            value(f, "ferryman_rejections", name, filter="access") == 3
            and value(f, "ferryman_rejections", name, filter="limit_req") == refused
            and value(f, "ferryman_requests", REQUESTS, code="429", **limited) == refused
        )

    fams = stack.wait_for(settled)
    assert value(fams, "ferryman_rejections", name, filter="limit_req", rule="tight") == refused
    assert value(fams, "ferryman_rejections", name, filter="access") == 3
    assert value(fams, "ferryman_requests", REQUESTS, code="429", **limited) == refused


def test_peer_health_flips_and_survives_a_reload(stack: Stack) -> None:
    """Runs last: it stops a backend."""
    alive, dead = stack.backends
    peer_up = "ferryman_upstream_peer_up"
    fams = stack.scrape()
    assert value(fams, peer_up, upstream="app", peer=dead.address) == 1
    dead.stop()
    # Both workers try the dead peer once in their rotation: each request still
    # succeeds (retried on the live peer), and the dead peer is marked down.
    for _ in range(12):
        assert get(stack.port, "/") == 200
    retries = ("ferryman_upstream_retries", "ferryman_upstream_retries_total")

    def settled(f: dict[str, Any]) -> bool:
        # Peer health is shared at once; the counters arrive with each worker's next
        # snapshot (once a second): wait for both.
        return value(f, peer_up, upstream="app", peer=dead.address) == 0 and value(f, *retries) >= 1

    fams = stack.wait_for(settled)
    assert value(fams, peer_up, upstream="app", peer=dead.address) == 0
    assert value(fams, peer_up, upstream="app", peer=alive.address) == 1
    assert value(fams, *retries) >= 1
    requests_before = value(fams, "ferryman_requests", REQUESTS)

    # Reload (a changed header only): the peer is unchanged, so the new generation knows
    # it is down without sending it a request (none is sent to / from here on).
    stack.proxy.config_path.write_text(config_text(stack.port, stack.admin_port, stack.backends, 1))
    os.kill(stack.proxy.pid, signal.SIGHUP)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=5)
        conn.request("GET", "/gen", headers={"Host": SERVER})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.getheader("X-Gen") == "1":
            break
        time.sleep(0.1)
    assert resp.getheader("X-Gen") == "1"

    def new_generation_only(f: dict[str, Any]) -> bool:
        return value(f, "ferryman_config_generation") == 1 and value(f, "ferryman_workers") == 2

    fams = stack.wait_for(new_generation_only, timeout=20)
    assert new_generation_only(fams)
    time.sleep(1.5)  # a flush after the new workers' first health sync
    fams = stack.scrape()
    assert value(fams, peer_up, upstream="app", peer=dead.address) == 0
    assert value(fams, peer_up, upstream="app", peer=alive.address) == 1
    # Counters do not go back on reload: the old workers' counts were folded in.
    assert value(fams, "ferryman_requests", REQUESTS) >= requests_before
