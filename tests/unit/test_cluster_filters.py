"""The shared-zone branch of limit_req / limit_conn (filters/rate_limit.py,
filters/conn_limit.py) against a fake SharedZones that keeps the buckets and leases in
a dict with filters/rate_limit.py's own arithmetic, standing in for Redis's script.

The walks are coroutines; the fake never suspends, so each is driven to its end with
one `send(None)`: no event loop (tests/unit is pure).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

from ferryman.config.schema import LimitConnSpec, LimitReqSpec, LimitZoneSpec
from ferryman.filters.base import Delay, Deny, Verdict
from ferryman.filters.conn_limit import LimitConnFilter
from ferryman.filters.rate_limit import Bucket, LimitReqFilter, Rule, lookup, take
from ferryman.filters.zone import LimitZone, open_zones


class Down(Exception):
    """Stands in for cluster/client.py Unavailable."""


class FakeRedis:
    """SharedZones with Redis replaced by dicts; `now_ms` is its clock."""

    def __init__(self) -> None:
        self.available = True
        self.now_ms = 0
        self.buckets: dict[tuple[str, bytes], Bucket] = {}
        self.leases: dict[tuple[str, bytes], set[str]] = {}
        self.released: list[str] = []
        self.fail_after: int | None = None  # calls before it "goes down"
        self.calls = 0
        self._ids = 0

    def pending(
        self,
        walk: Coroutine[Any, Any, Deny | Delay | None],
        fallback: Callable[[], Verdict],
        orphan: Callable[[], None] | None,
    ) -> Verdict:
        try:
            return run(walk)
        except Down:
            return fallback()

    def _call(self) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise Down

    async def limit_req(
        self, zone: str, key: bytes, rate: int, burst: int, mode: str
    ) -> tuple[bool, int]:
        self._call()
        rule = Rule(zone, rate, burst, 0)
        bucket = self.buckets.get((zone, key))
        busy, excess = lookup(rule, bucket, self.now_ms)
        if mode == "check" or (mode == "check_take" and busy):
            return busy, excess
        excess, self.buckets[(zone, key)] = take(rule, bucket, self.now_ms)
        return False, excess

    async def lease(self, zone: str, key: bytes, limit: int) -> str | None:
        self._call()
        held = self.leases.setdefault((zone, key), set())
        if len(held) >= limit:
            return None
        self._ids += 1
        lease = f"l{self._ids}"
        held.add(lease)
        return lease

    def unlease(self, zone: str, key: bytes, lease: str) -> None:
        self.leases[(zone, key)].discard(lease)
        self.released.append(lease)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the fake never suspends")


@dataclass(frozen=True)
class _Head:
    host: bytes = b"example.test"
    request_line: bytes = b"GET / HTTP/1.1"


@dataclass(eq=False)  # one exchange per request, as the filters key them
class _Exchange:
    remote_addr: bytes = b"10.0.0.1"
    head: _Head = _Head()


def _zones(*specs: LimitZoneSpec) -> dict[str, LimitZone]:
    return open_zones(specs, "test.yaml")


def _req_filter(zones: dict[str, LimitZone], remote: Any, *limits: LimitReqSpec) -> LimitReqFilter:
    built = [(s, zones[s.zone], zones[s.zone].compile_key(frozenset())) for s in limits]
    return LimitReqFilter(built, 503, False, remote)


def _conn_filter(
    zones: dict[str, LimitZone], remote: Any, *limits: LimitConnSpec
) -> LimitConnFilter:
    built = [(s, zones[s.zone], zones[s.zone].compile_key(frozenset())) for s in limits]
    return LimitConnFilter(built, 503, False, remote)


def test_a_route_without_shared_zones_never_goes_remote() -> None:
    zones = _zones(LimitZoneSpec("one", "$remote_addr", "req", rate=10))
    remote = FakeRedis()
    f = _req_filter(zones, remote, LimitReqSpec("one"))
    assert f.remote is None
    assert f.check(_Exchange(), 1.0) is None
    assert remote.calls == 0


def test_shared_limit_req_decides_as_the_local_one_would() -> None:
    spec = LimitZoneSpec("one", "$remote_addr", "req", rate=10, shared=True)
    local_spec = LimitZoneSpec("one", "$remote_addr", "req", rate=10)
    remote = FakeRedis()
    shared = _req_filter(_zones(spec), remote, LimitReqSpec("one", burst=2))
    local = _req_filter(_zones(local_spec), None, LimitReqSpec("one", burst=2))
    for ms in (0, 0, 0, 0, 50, 120, 300, 300, 300, 2000):
        remote.now_ms = 100_000 + ms
        now = (100_000 + ms) / 1000
        assert shared.check(_Exchange(), now) == local.check(_Exchange(), now), ms
    assert remote.calls == 10
    # Nothing was written into the shared zone's local table: Redis held the state.
    assert _zones(spec)["one"].table.entries() == 0


def test_several_shared_limits_keep_nginxs_order_and_charge_none_on_reject() -> None:
    def specs(shared: bool) -> tuple[LimitZoneSpec, ...]:
        return (
            LimitZoneSpec("loose", "$remote_addr", "req", rate=100, shared=shared),
            LimitZoneSpec("tight", "$remote_addr", "req", rate=2, shared=shared),
        )

    limits = (LimitReqSpec("loose", burst=1), LimitReqSpec("tight", burst=3))
    remote = FakeRedis()
    shared = _req_filter(_zones(*specs(True)), remote, *limits)
    local = _req_filter(_zones(*specs(False)), None, *limits)
    for ms in (0, 0, 5, 30, 60, 90, 120, 600, 610, 1500, 1500, 1520):
        remote.now_ms = 10_000 + ms
        now = (10_000 + ms) / 1000
        assert shared.check(_Exchange(), now) == local.check(_Exchange(), now), ms
    # A request `tight` rejects leaves `loose` as it was (nginx: no bucket changes).
    loose = remote.buckets[("loose", b"10.0.0.1")]
    remote.now_ms += 50
    verdict = shared.check(_Exchange(), remote.now_ms / 1000)
    assert isinstance(verdict, Deny) and "tight" in verdict.reason
    assert remote.buckets[("loose", b"10.0.0.1")] == loose


def test_redis_failing_mid_walk_decides_with_the_local_zone() -> None:
    remote = FakeRedis()
    remote.fail_after = 0
    zones = _zones(LimitZoneSpec("one", "$remote_addr", "req", rate=1, shared=True))
    f = _req_filter(zones, remote, LimitReqSpec("one"))
    assert f.check(_Exchange(), 5.0) is None
    assert isinstance(f.check(_Exchange(), 5.0), Deny)  # the local table counted it
    assert zones["one"].table.entries() == 1


def test_redis_known_down_skips_the_round_trip() -> None:
    remote = FakeRedis()
    remote.available = False
    zones = _zones(LimitZoneSpec("one", "$remote_addr", "req", rate=1, shared=True))
    f = _req_filter(zones, remote, LimitReqSpec("one"))
    assert f.check(_Exchange(), 5.0) is None
    assert remote.calls == 0


def test_shared_limit_conn_leases_and_gives_back() -> None:
    remote = FakeRedis()
    zones = _zones(LimitZoneSpec("c", "$remote_addr", "conn", shared=True))
    f = _conn_filter(zones, remote, LimitConnSpec("c", 2))
    a, b, c = _Exchange(), _Exchange(b"10.0.0.1"), _Exchange(b"10.0.0.1")
    assert f.check(a, 1.0) is None
    assert f.check(b, 1.0) is None
    verdict = f.check(c, 1.0)
    assert isinstance(verdict, Deny) and "c" in verdict.reason
    assert f.in_flight == 2
    f.done(a)
    assert remote.released == ["l1"]
    assert f.check(c, 1.0) is None
    assert zones["c"].table.entries() == 0  # counted in Redis only


def test_limit_conn_refusal_gives_back_the_leases_it_took() -> None:
    remote = FakeRedis()
    zones = _zones(
        LimitZoneSpec("wide", "$remote_addr", "conn", shared=True),
        LimitZoneSpec("narrow", "$remote_addr", "conn", shared=True),
    )
    f = _conn_filter(zones, remote, LimitConnSpec("wide", 10), LimitConnSpec("narrow", 1))
    assert f.check(_Exchange(), 1.0) is None
    assert isinstance(f.check(_Exchange(), 1.0), Deny)
    # The refused request's lease in `wide` went back; only the first request holds.
    assert len(remote.leases[("wide", b"10.0.0.1")]) == 1
    assert remote.released == ["l3"]


@pytest.mark.parametrize("fail_after", [0, 1])
def test_limit_conn_redis_failing_counts_locally_and_leaves_nothing_remote(
    fail_after: int,
) -> None:
    remote = FakeRedis()
    remote.fail_after = fail_after
    zones = _zones(
        LimitZoneSpec("a", "$remote_addr", "conn", shared=True),
        LimitZoneSpec("b", "$remote_addr", "conn", shared=True),
    )
    f = _conn_filter(zones, remote, LimitConnSpec("a", 1), LimitConnSpec("b", 1))
    ex = _Exchange()
    assert f.check(ex, 1.0) is None
    assert all(not held for held in remote.leases.values())
    assert zones["a"].table.entries() == 1  # the local fallback counts
    f.done(ex)
    assert zones["a"].table.entries() == 0
