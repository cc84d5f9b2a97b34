"""Two `ferryman run` instances sharing one real redis-server (cluster/, docs/cluster.md):
a shared limit_req holds the total rate across both, a peer one saw fail is avoided by
the other, one's cache fill is the other's hit, and a Redis killed mid-run costs no
client request (each falls back to its local zones) while a restarted one is used again.

Also the limit_req Lua script against filters/rate_limit.py's arithmetic, step by step
on random sequences (the script takes the clock as an argument for this).

One Redis, one echo backend and the two proxies serve the module; the outage test runs
last (it restarts Redis). Load runs FERRYMAN_SLOW_SCALE times longer under `make
test-slow`; the default is a bounded few seconds.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from ferryman.cluster.limiter import LIMIT_REQ, redis_key
from ferryman.filters.rate_limit import Bucket, Rule, lookup, take
from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.rawhttp import http_get_json
from support.redis import RedisServer, start_redis

SCALE = float(os.environ.get("FERRYMAN_SLOW_SCALE", "1"))
RATE = 50  # r/s, shared by both instances
BURST = 10


def _config(port: int, redis_url: str, echo: str, dead: str, echo2: str, admin: int) -> str:
    return f"""
workers: 1
admin: {{listen: "127.0.0.1:{admin}"}}
cluster: {{url: "{redis_url}", timeout: 50ms}}
limit_zones:
  - {{name: total, kind: req, key: "all", rate: {RATE}r/s, shared: true}}
  - {{name: roomy, kind: req, key: "all", rate: 5000r/s, shared: true}}
  - {{name: slots, kind: conn, key: "all", shared: true}}
  - {{name: one, kind: conn, key: "all", shared: true}}
cache_zones:
  - {{name: shared, shared: true}}
upstreams:
  app:
    servers:
      - {{address: "{echo}"}}
  flaky:
    servers:
      - {{address: "{dead}", max_fails: 1, fail_timeout: 30s}}
      - {{address: "{echo}", max_fails: 1, fail_timeout: 30s}}
  pair:
    servers:
      - {{address: "{echo}"}}
      - {{address: "{echo2}"}}
servers:
  - listen: "127.0.0.1:{port}"
    routes:
      - path: /echo/limited
        upstream: app
        limit_req: [{{zone: total, burst: {BURST}, nodelay: true}}]
        limit_req_status: 429
      - path: /echo/busy
        upstream: app
        limit_req: [{{zone: roomy, burst: 1000, nodelay: true}}]
        limit_conn: [{{zone: slots, limit: 100}}]
      - path: /echo/cached
        upstream: app
        cache: {{zone: shared, valid: {{"200": 60s}}}}
      - path: /slow
        upstream: app
        limit_conn: [{{zone: one, limit: 1}}]
      - path: /echo/flaky
        upstream: flaky
        debug_header: true
      - path: /echo/pair
        upstream: pair
        debug_header: true
"""


@dataclass
class Cluster:
    redis: RedisServer
    backend: EchoBackend
    a: ProxyProcess
    b: ProxyProcess
    dead: str
    backend2: EchoBackend
    admin_a: int
    admin_b: int

    def backend_count(self) -> int:
        return int(http_get_json(self.backend.port, "/count")["requests"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir: Path = tmp_path_factory.mktemp("cluster")
    server = start_redis(workdir / "redis")
    try:
        backend = start_echo(workdir / "logs")
        backend2 = start_echo(workdir / "logs2")
        try:
            dead = f"127.0.0.1:{free_port()}"  # nothing listens there
            procs: list[ProxyProcess] = []
            admins: list[int] = []
            try:
                for name in ("a", "b"):
                    port, admin = free_port(), free_port()
                    text = _config(port, server.url, backend.address, dead, backend2.address, admin)
                    procs.append(start_proxy(workdir / name, text, port))
                    admins.append(admin)
                    _wait_for(lambda p=procs[-1]: "reachable: sharing" in p.output(), 10)
                # Both workers subscribed to the bus: a failure announced before the
                # other's subscription would be lost (pub/sub keeps nothing), and the
                # first test would race it.
                bus = redis.Redis(host="127.0.0.1", port=server.port)
                try:
                    _wait_for(
                        lambda: dict(bus.pubsub_numsub("ferryman:bus"))[b"ferryman:bus"] >= 2, 10
                    )
                finally:
                    bus.close()
                yield Cluster(
                    server, backend, procs[0], procs[1], dead, backend2, admins[0], admins[1]
                )
            finally:
                for proc in procs:
                    proc.stop()
        finally:
            backend2.stop()
            backend.stop()
    finally:
        server.stop()


def _get(
    port: int, target: str, conn: http.client.HTTPConnection | None = None
) -> tuple[int, dict[str, str], bytes]:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", target)
        resp = c.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        if own:
            c.close()


def _wait_for(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _admin(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body or None)
        resp = c.getresponse()
        return resp.status, resp.read()
    finally:
        c.close()


def _metrics(port: int) -> dict[str, float]:
    """`name{labels}` -> value from the admin listener's /metrics."""
    status, body = _admin(port, "GET", "/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _peer_up(port: int, upstream: str, peer: str) -> float | None:
    """`ferryman_upstream_peer_up` of one peer in an instance's /metrics (None: absent)."""
    for name, value in _metrics(port).items():
        if (
            name.startswith("ferryman_upstream_peer_up{")
            and f'upstream="{upstream}"' in name
            and f'peer="{peer}"' in name
        ):
            return value
    return None


def _cluster_view(port: int) -> dict[str, object]:
    status, body = _admin(port, "GET", "/api/cluster")
    assert status == 200
    view = json.loads(body)["cluster"]
    assert isinstance(view, dict)
    return view


def _fallbacks(port: int) -> dict[str, float]:
    m = _metrics(port)
    return {
        f: m.get(f'ferryman_cluster_local_fallbacks_total{{feature="{f}"}}', -1.0)
        for f in ("limit_req", "limit_conn", "cache", "health")
    }


# ---- the script is the filter's arithmetic ----


def test_limit_req_script_matches_the_filter_arithmetic(cluster: Cluster) -> None:
    client = redis.Redis(host="127.0.0.1", port=cluster.redis.port)
    script = client.register_script(LIMIT_REQ)
    rng = random.Random(7)
    for case in range(40):
        rate, burst = rng.choice([16, 1000, 10000, 50000]), rng.choice([0, 1000, 5000])
        rule = Rule("z", rate, burst, 0)
        key = f"test:eq:{case}"
        bucket: Bucket | None = None
        now = 1_700_000_000_000 + rng.randrange(10_000)
        for _ in range(60):
            now += rng.choice([0, 1, 5, 20, 100, 1000, -5, -70_000])
            mode = rng.choice(["check", "check_take", "take"])
            got = script(keys=[key], args=[mode, rate, burst, now])
            busy, excess = lookup(rule, bucket, now)
            if mode == "check" or (mode == "check_take" and busy):
                want = [int(busy), excess]
            else:
                excess, bucket = take(rule, bucket, now)
                want = [0, excess]
            assert got == want, (case, mode, now, bucket)
            stored = client.hmget(key, "e", "l")
            if bucket is not None:
                assert [int(stored[0]), int(stored[1])] == list(bucket)
    client.close()


# ---- shared limit_req: the rate holds across both instances ----


def _load(ports: list[int], target: str, seconds: float, per_thread_rate: float) -> Counter[int]:
    """Paced keep-alive clients, two per port; the statuses they got."""
    counts: Counter[int] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        next_at = time.monotonic()
        try:
            while time.monotonic() < stop_at:
                status = _get(port, target, conn)[0]
                with lock:
                    counts[status] += 1
                next_at += 1 / per_thread_rate
                time.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(p,)) for p in ports for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 30)
    return counts


def test_shared_limit_req_holds_the_total_rate(cluster: Cluster) -> None:
    seconds = 4.0 * SCALE
    # 4 clients x 40 r/s = 160 r/s offered, over three times the shared 50 r/s.
    start = time.monotonic()
    counts = _load([cluster.a.port, cluster.b.port], "/echo/limited", seconds, 40)
    elapsed = time.monotonic() - start
    assert set(counts) <= {200, 429}, counts
    accepted = counts[200]
    expected = RATE * elapsed + BURST + 1
    # Within 15% of the shared rate (each instance alone would let ~2x through: the
    # local-only reading would be about RATE * 2 * elapsed).
    assert 0.85 * expected <= accepted <= 1.15 * expected, (accepted, expected, counts)
    assert counts[429] > accepted  # the load really was over the limit


# ---- shared limit_conn: one slot across both instances ----


def test_shared_limit_conn_counts_requests_in_flight_on_every_instance(cluster: Cluster) -> None:
    slots = cluster.redis
    key = redis_key("ferryman", "lc", "one", b"all")
    results: list[int] = []
    slow = threading.Thread(target=lambda: results.append(_get(cluster.a.port, "/slow?ms=1500")[0]))
    slow.start()
    _wait_for(lambda: slots.command("ZCARD", key) == ":1", 3)  # A holds the one lease
    status, _, _ = _get(cluster.b.port, "/slow?ms=1")
    assert status == 503  # refused on B: the slot is A's
    slow.join(timeout=10)
    assert results == [200]
    _wait_for(lambda: slots.command("ZCARD", key) == ":0", 3)  # given back at the end
    assert _get(cluster.b.port, "/slow?ms=1")[0] == 200


# ---- shared health: a peer one instance saw fail is avoided by the other ----


def test_peer_failed_on_one_instance_is_avoided_by_the_other(cluster: Cluster) -> None:
    dead = cluster.dead
    # Round robin over (dead, echo): within two requests A tries the dead peer, fails
    # over to the live one, and takes the dead one out for its fail_timeout.
    tried = []
    for _ in range(2):
        status, headers, _ = _get(cluster.a.port, "/echo/flaky")
        assert status == 200
        tried.append(headers.get("x-ferryman-upstream", ""))
    assert any(f"tried={dead}" in t for t in tried), tried
    failed_at = time.monotonic()
    # B's worker takes the notice in on its next tick (up to a second) and says so in
    # its metrics a flush later: wait for that, not for a fixed second, which a late
    # tick on a loaded machine can just miss.
    _wait_for(lambda: _peer_up(cluster.admin_b, "flaky", dead) == 0.0, 5)
    # B never tries it: every request skips it as failed, none has a failed attempt.
    for _ in range(6):
        status, headers, _ = _get(cluster.b.port, "/echo/flaky")
        assert status == 200
        line = headers["x-ferryman-upstream"]
        assert "tried=" not in line, line
        assert f"skipped={dead} (failed" in line, line
    assert time.monotonic() - failed_at < 10
    assert "another instance saw it fail" in cluster.b.output()


# ---- shared cache: one instance's fill is the other's hit ----


def test_cached_object_fetched_through_one_is_a_hit_on_the_other(cluster: Cluster) -> None:
    target = f"/echo/cached?obj={random.randrange(1 << 30)}"
    status, headers, body = _get(cluster.a.port, target)
    assert status == 200 and "stored" in headers["cache-status"], headers
    _wait_for(
        lambda: cluster.redis.command("EXISTS", f"ferryman:c:shared:httpapp{target}") == ":1", 3
    )
    before = cluster.backend_count()
    status, headers, body_b = _get(cluster.b.port, target)
    assert status == 200 and "hit" in headers["cache-status"], headers
    assert body_b == body
    # Only the /count request itself reached the backend: B did not go upstream.
    assert cluster.backend_count() == before + 1


# ---- Redis down: nothing fails; back: sharing again ----


def _served_by_b(cluster: Cluster, n: int) -> Counter[str]:
    """Which `pair` peer instance B sent each of `n` requests to (its debug header)."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        status, headers, _ = _get(cluster.b.port, "/echo/pair")
        assert status == 200
        peer = headers["x-ferryman-upstream"].split("peer=", 1)[1]
        seen[peer.split(";", 1)[0].strip()] += 1
    return seen


def test_admin_drain_on_one_instance_applies_on_the_other(cluster: Cluster) -> None:
    drained = cluster.backend2.address
    assert _served_by_b(cluster, 10)[drained] > 0  # round robin: both peers serve
    path = f"/api/upstreams/pair/peers/{drained}"
    status, body = _admin(cluster.admin_a, "POST", path + "/drain")
    assert status == 200 and json.loads(body)["draining"] is True
    started = time.monotonic()
    _wait_for(lambda: drained not in _served_by_b(cluster, 4), 5)
    took = time.monotonic() - started
    # A's lead worker sees the change within 0.5 s and publishes it; B's lead writes it
    # into B's table and B's workers apply it on their next tick (docs/cluster.md).
    assert took < 2.5, took
    assert _served_by_b(cluster, 20)[drained] == 0  # and it stays drained on B
    status, body = _admin(cluster.admin_b, "GET", "/api/upstreams")
    pair = next(u for u in json.loads(body)["upstreams"] if u["name"] == "pair")
    assert [p["draining"] for p in pair["peers"] if p["address"] == drained] == [True]
    status, body = _admin(cluster.admin_a, "POST", path + "/undrain")
    assert status == 200 and json.loads(body)["draining"] is False
    started = time.monotonic()
    _wait_for(lambda: _served_by_b(cluster, 4)[drained] > 0, 5)
    assert time.monotonic() - started < 2.5


def test_redis_killed_mid_run_loses_no_request_and_restart_restores_sharing(
    cluster: Cluster,
) -> None:
    seconds = 5.0 * SCALE
    results: list[Counter[int]] = []
    errors: list[BaseException] = []

    def run(target: str) -> None:
        try:
            results.append(_load([cluster.a.port, cluster.b.port], target, seconds, 25))
        except BaseException as exc:  # a client request failed at the socket level
            errors.append(exc)

    loads = [threading.Thread(target=run, args=(t,)) for t in ("/echo/busy", "/echo/cached?hot=1")]
    for t in loads:
        t.start()
    time.sleep(seconds * 0.25)
    cluster.redis.kill()
    time.sleep(seconds * 0.35)
    cluster.redis.start()  # empty, same port
    for t in loads:
        t.join(timeout=seconds + 60)
    assert not errors, errors
    total: Counter[int] = Counter()
    for c in results:
        total.update(c)
    assert set(total) == {200}, total  # every request answered, none refused or failed
    assert total[200] > 100 * SCALE
    for proxy in (cluster.a, cluster.b):
        out = proxy.output()
        assert "unreachable" in out and "local-only" in out
    # Sharing is back: each instance says so, and a fill on B is a hit on A.
    for proxy in (cluster.a, cluster.b):
        _wait_for(
            lambda p=proxy: (
                p.output().rfind("reachable: sharing") > p.output().rfind("unreachable")
            ),
            5,
        )
    target = f"/echo/cached?after={random.randrange(1 << 30)}"
    assert "stored" in _get(cluster.b.port, target)[1]["cache-status"]
    _wait_for(
        lambda: cluster.redis.command("EXISTS", f"ferryman:c:shared:httpapp{target}") == ":1", 3
    )
    assert "hit" in _get(cluster.a.port, target)[1]["cache-status"]


def _snapshot_cluster(port: int, timeout: float = 5.0) -> dict[str, object]:
    """The `cluster` part of the first `snapshot` event on /api/events."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            for block in data.split(b"\n\n")[:-1]:
                if block.startswith(b"event: snapshot\n"):
                    snap = json.loads(block.split(b"data: ", 1)[1])
                    assert isinstance(snap["cluster"], dict)
                    return snap["cluster"]
    raise AssertionError(f"no snapshot event: {data[:300]!r}")


def test_redis_outage_shows_in_metrics_and_the_admin_view(cluster: Cluster) -> None:
    """Runs last: stops Redis and starts it again."""
    ports = (cluster.admin_a, cluster.admin_b)
    for port in ports:
        _wait_for(lambda p=port: _metrics(p).get("ferryman_cluster_redis_up") == 1.0, 10)
    _wait_for(lambda: _cluster_view(cluster.admin_a)["instances"] == 2, 5)
    view = _cluster_view(cluster.admin_a)
    assert view["up"] is True and view["redis"] == f"127.0.0.1:{cluster.redis.port}"
    assert _snapshot_cluster(cluster.admin_a)["up"] is True
    before = _fallbacks(cluster.admin_a)
    assert min(before.values()) >= 0  # every feature is exported, from 0
    failed = _metrics(cluster.admin_a)["ferryman_cluster_redis_failed_calls_total"]

    cluster.redis.kill()
    for port in ports:
        _wait_for(lambda p=port: _metrics(p).get("ferryman_cluster_redis_up") == 0.0, 5)
    # Requests keep being answered, each shared decision taken locally and counted.
    for i in range(10):
        assert _get(cluster.a.port, "/echo/busy")[0] == 200  # limit_req + limit_conn
        assert _get(cluster.a.port, f"/echo/cached?outage={i}")[0] == 200  # a local miss

    def moved() -> bool:
        now = _fallbacks(cluster.admin_a)
        return all(now[f] >= before[f] + 10 for f in ("limit_req", "limit_conn", "cache"))

    _wait_for(moved, 3)
    assert _metrics(cluster.admin_a)["ferryman_cluster_redis_failed_calls_total"] > failed
    view = _cluster_view(cluster.admin_a)
    assert view["up"] is False and view["workers_up"] == 0
    assert _snapshot_cluster(cluster.admin_b)["up"] is False  # what the banner shows

    cluster.redis.start()  # empty, same port
    for port in ports:
        _wait_for(lambda p=port: _metrics(p).get("ferryman_cluster_redis_up") == 1.0, 8)
    assert _cluster_view(cluster.admin_b)["up"] is True
    assert _snapshot_cluster(cluster.admin_a)["up"] is True
