"""The shared tables of the admin API (rings, overrides, peer counters) and the group's
drain flag and runtime weight: pure, single process (fork-sharing is the integration
tests')."""

from __future__ import annotations

import time

import pytest

from ferryman.balancing.base import Outcome
from ferryman.balancing.registry import create_balancer
from ferryman.config.schema import PeerSpec, UpstreamSpec
from ferryman.observability.peer_stats import PeerStats
from ferryman.observability.recent import RecentLog, SharedRing, parse_record, read_recent
from ferryman.upstream.group import UpstreamGroup
from ferryman.upstream.overrides import Override, SharedOverrides
from ferryman.upstream.peer import PeerState


def test_ring_keeps_the_newest_records_in_order() -> None:
    ring = SharedRing(2, capacity=4, record_size=32)
    for i in range(10):
        ring.push(0, b"r%d" % i)
    ring.push(1, b"other")
    assert ring.count(0) == 10
    assert [p for _, p in ring.read(0)] == [b"r6", b"r7", b"r8", b"r9"]
    assert [s for s, _ in ring.read(0)] == [7, 8, 9, 10]
    assert [p for _, p in ring.read(0, after=8)] == [b"r8", b"r9"]
    assert [p for _, p in ring.read(0, limit=1)] == [b"r9"]
    assert ring.read(1) == [(1, b"other")]


def test_ring_truncates_long_payloads() -> None:
    ring = SharedRing(1, capacity=2, record_size=20)
    ring.push(0, b"x" * 100)
    assert ring.read(0) == [(1, b"x" * 10)]


def test_ring_skips_a_record_being_written() -> None:
    ring = SharedRing(1, capacity=2, record_size=32)
    ring.push(0, b"a")
    ring.push(0, b"b")
    # A writer that zeroed record 2's seq and has not finished yet.
    ring._map[8 + 32 : 8 + 40] = b"\0" * 8
    assert ring.read(0) == [(1, b"a")]


def test_recent_records_merge_across_workers() -> None:
    ring = SharedRing(2, capacity=8, record_size=200)
    ring.push(1, b"2.0\t127.0.0.1\tGET\t/b\t200\t10.0.0.1:80\t0.0010\tapp\t1")
    ring.push(0, b"1.0\t127.0.0.1\tPOST\t/a\t502\t-\t-1.0000\tapp\t0")
    ring.push(0, b"garbage")
    rows = read_recent(ring, 10)
    assert [r["target"] for r in rows] == ["/a", "/b"]
    assert rows[0]["status"] == 502 and rows[0]["worker"] == 0 and rows[0]["duration"] == -1.0
    assert read_recent(ring, 1)[0]["target"] == "/b"
    assert parse_record(b"1\t2") is None


def test_overrides_register_once_and_survive_lookups() -> None:
    table = SharedOverrides(capacity=2)
    a = table.register("app", "h:1")
    assert table.register("app", "h:1") == a
    b = table.register("app", "h:2")
    assert table.register("app", "h:3") == -1  # full
    assert table.slot("app", "h:2") == b and table.slot("app", "nope") == -1
    version = table.version
    table.set_drained(a, True)
    table.set_weight(b, 7)
    assert table.version == version + 2
    assert table.get(a) == Override(True, 0)
    assert table.get(b) == Override(False, 7)
    with pytest.raises(ValueError):
        table.set_weight(b, 1001)
    with pytest.raises(IndexError):
        table.get(5)


def test_peer_stats_sum_workers() -> None:
    stats = PeerStats(workers=2, peers=3)
    stats.publish(0, 1, active=2, fails=1, requests=10, latency=0.0)
    stats.publish(1, 1, active=1, fails=0, requests=5, latency=0.02)
    stats.publish(5, 1, active=99, fails=99, requests=99, latency=9.0)  # no such worker
    t = stats.totals(1)
    assert (t.active, t.fails, t.requests, t.latency) == (3, 1, 15, 0.02)
    assert stats.totals(0).requests == 0


def make_group(balance: str = "round_robin") -> UpstreamGroup:
    spec = UpstreamSpec(
        name="app",
        servers=tuple(PeerSpec(host="10.0.0.1", port=p) for p in (1, 2, 3)),
        balance=balance,
    )
    peers = [PeerState(s, i) for i, s in enumerate(spec.servers)]
    return UpstreamGroup(spec, peers, create_balancer(balance, spec, peers))


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "hash", "random"])
def test_a_drained_peer_is_never_selected(balance: str) -> None:
    group = make_group(balance)
    drained = group.peers[0]
    group.set_drained(drained, True)
    picked = set()
    for i in range(60):
        peer = group.select(0.0, 0, b"k%d" % i)
        assert peer is not None
        picked.add(peer.name)
        group.release(peer, Outcome.SUCCESS, 0.0)
    assert drained.name not in picked and len(picked) == 2
    group.set_drained(drained, False)
    names = set()
    # Enough picks (and keys) that random and hash reach every peer: (2/3)^60 is nil.
    for i in range(60):
        peer = group.select(0.0, 0, b"k%d" % i)
        assert peer is not None
        names.add(peer.name)
        group.release(peer, Outcome.SUCCESS, 0.0)
    assert drained.name in names


def test_all_drained_means_no_peer() -> None:
    group = make_group()
    for p in group.peers:
        group.set_drained(p, True)
    assert group.select(0.0, 0) is None
    assert not group.has_candidate(0.0, 0)


@pytest.mark.parametrize("balance", ["round_robin", "hash"])
def test_runtime_weight_shifts_the_share(balance: str) -> None:
    group = make_group(balance)
    heavy = group.peers[2]
    up = UpstreamSpec(name="app", servers=tuple(p.spec for p in group.peers), balance=balance)
    group.set_weight(heavy, 8, lambda: create_balancer(balance, up, group.peers))
    assert heavy.spec.weight == 8 and heavy.weight_now == 8
    counts = {p.name: 0 for p in group.peers}
    for i in range(1000):
        peer = group.select(0.0, 0, b"key-%d" % i)
        assert peer is not None
        counts[peer.name] += 1
        peer.active -= 1
    assert counts[heavy.name] > 650, counts


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


class _Head:
    def __init__(self, target: bytes) -> None:
        self.method = b"GET"
        self.target = target


class _Ex:
    def __init__(self, target: bytes) -> None:
        self.started = time.monotonic() - 0.5
        self.remote_addr = b"127.0.0.1"
        self.head = _Head(target)
        self.status = 200
        self.peer = _Named("10.0.0.1:80")
        self.group = _Named("app")


def test_recent_log_writes_on_flush_only_what_the_ring_keeps() -> None:
    ring = SharedRing(1, capacity=4, record_size=200)
    log = RecentLog(ring, 0)
    for i in range(10):
        ex = _Ex(b"/r%d" % i)
        log.add(ex.started + 0.5, ex.started, ex.remote_addr, ex.head, ex.status, ex.peer, ex.group)
    assert ring.count(0) == 0  # nothing formatted on the request's path
    log.flush()
    rows = read_recent(ring, 10)
    # The ring keeps 4: only the newest 4 were formatted and written.
    assert ring.count(0) == 4
    assert [r["target"] for r in rows] == ["/r6", "/r7", "/r8", "/r9"]
    assert rows[0]["duration"] == 0.5 and rows[0]["peer"] == "10.0.0.1:80"
    assert abs(rows[0]["time"] - time.time()) < 60
    log.flush()
    assert ring.count(0) == 4


def test_recent_log_formats_at_most_per_tick() -> None:
    from ferryman.observability.recent import PER_TICK

    ring = SharedRing(1, capacity=256, record_size=200)
    log = RecentLog(ring, 0)
    for i in range(PER_TICK + 36):
        ex = _Ex(b"/t%d" % i)
        log.add(ex.started + 0.5, ex.started, ex.remote_addr, ex.head, ex.status, ex.peer, ex.group)
    log.flush()
    rows = read_recent(ring, 256)
    assert len(rows) == PER_TICK
    assert rows[-1]["target"] == f"/t{PER_TICK + 35}"
