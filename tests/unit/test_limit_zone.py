"""Limit zones: the shared table (two handles on one mapping as two workers have, a
forked process updating the same entries, LRU eviction, refusal where eviction is not
allowed, state kept across a reload) and limit_conn's counting on top of it."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ferryman.config.schema import LimitConnSpec, LimitZoneSpec
from ferryman.filters.base import Deny
from ferryman.filters.conn_limit import LimitConnFilter, acquire, release
from ferryman.filters.zone import WAYS, State, ZoneFull, ZoneTable, open_zones

ONE_GROUP = 64  # any size up to a header and one group: a table of one group


def put(value: int) -> Callable[[State | None], tuple[State | None, State | None]]:
    def change(state: State | None) -> tuple[State | None, State | None]:
        return state, (value, 0)

    return change


def test_two_handles_see_one_table() -> None:
    a = ZoneTable.create("z", 64 * 1024, evicts=True)
    b = a.attach()
    assert a.hash(b"10.0.0.1") == b.hash(b"10.0.0.1")  # one hash key per table
    h = a.hash(b"10.0.0.1")
    assert a.update(h, 1, put(7)) is None
    assert b.peek(h) == (7, 0)
    assert b.update(h, 2, put(8)) == (7, 0)
    assert a.peek(h) == (8, 0)
    assert a.entries() == b.entries() == 1
    b.close()
    assert a.peek(h) == (8, 0)  # the other handle's close leaves this one working


def test_tables_hash_with_their_own_key() -> None:
    a = ZoneTable.create("a", 64 * 1024, evicts=True)
    b = ZoneTable.create("b", 64 * 1024, evicts=True)
    assert a.hash(b"k") != b.hash(b"k")
    assert a.hash(b"k") != 0


def test_remembered_hashes_stay_the_same_past_the_memory() -> None:
    # More distinct keys than a table remembers: the memory is dropped and refilled,
    # and every key still hashes as on first sight, in this handle and another.
    t = ZoneTable.create("z", 64 * 1024, evicts=True)
    keys = [b"10.0.%d.%d" % (i // 256, i % 256) for i in range(3000)]
    first = [t.hash(k) for k in keys]
    assert len(set(first)) == len(keys)
    assert [t.hash(k) for k in reversed(keys)] == first[::-1]
    assert [t.attach().hash(k) for k in keys[:10]] == first[:10]


def test_an_entry_that_moved_under_another_handle_is_still_found() -> None:
    # A handle remembers where it last saw each key. Another worker may drop the key
    # and put it back elsewhere in the group: the remembered place then holds another
    # key, and the update must still find the real entry, not add a second one.
    a = ZoneTable.create("z", ONE_GROUP, evicts=True)
    b = a.attach()
    k, other = a.hash(b"k"), a.hash(b"other")
    a.update(k, 1, put(1))  # k in the first way, remembered there by `a`
    b.update(k, 2, lambda s: (s, None))  # dropped by the other worker
    b.update(other, 3, put(2))  # the first way now holds another key
    b.update(k, 4, put(3))  # and k comes back in the second way
    assert a.update(k, 5, put(4)) == (3, 0)
    assert a.peek(other) == (2, 0)
    assert a.entries() == 2
    # And a key dropped everywhere is not found at its remembered place either.
    b.update(k, 6, lambda s: (s, None))
    assert a.peek(k) is None
    assert a.update(k, 7, put(5)) is None


def test_none_removes_an_entry() -> None:
    t = ZoneTable.create("z", ONE_GROUP, evicts=False)
    h = t.hash(b"k")
    t.update(h, 1, put(1))
    assert t.update(h, 2, lambda s: (s, None)) == (1, 0)
    assert t.peek(h) is None
    assert t.entries() == 0


def test_a_full_group_evicts_its_least_recently_used_entry() -> None:
    t = ZoneTable.create("z", ONE_GROUP, evicts=True)
    assert t.capacity == WAYS
    hashes = [t.hash(b"key%d" % i) for i in range(WAYS + 2)]
    for i, h in enumerate(hashes[:WAYS]):
        t.update(h, 100 + i, put(i))
    t.update(hashes[0], 200, put(0))  # key0 was used last now; key1 is the oldest
    t.update(hashes[WAYS], 300, put(99))
    assert t.peek(hashes[1]) is None
    assert t.peek(hashes[0]) == (0, 0)
    assert t.peek(hashes[WAYS]) == (99, 0)
    t.update(hashes[WAYS + 1], 400, put(98))
    assert t.peek(hashes[2]) is None
    assert t.entries() == WAYS


def test_a_full_group_that_may_not_evict_refuses() -> None:
    t = ZoneTable.create("z", ONE_GROUP, evicts=False)
    hashes = [t.hash(b"key%d" % i) for i in range(WAYS + 1)]
    for h in hashes[:WAYS]:
        t.update(h, 1, put(1))
    with pytest.raises(ZoneFull):
        t.update(hashes[WAYS], 2, put(1))
    # a lookup that creates nothing needs no room
    assert t.update(hashes[WAYS], 2, lambda s: (s, None)) is None
    t.update(hashes[0], 3, lambda s: (s, None))
    t.update(hashes[WAYS], 4, put(1))
    assert t.peek(hashes[WAYS]) == (1, 0)


def _increment(state: State | None) -> tuple[None, State]:
    return None, ((state[0] if state else 0) + 1, 0)


@pytest.fixture(params=[True, False], ids=["mutex", "fcntl"])
def mutexes(request: pytest.FixtureRequest) -> bool:
    """Tables locked by shared mutexes, and by fcntl (where the C library has none)."""
    used: bool = request.param
    return used


def test_a_forked_worker_and_this_one_lose_no_update(mutexes: bool) -> None:
    # Read-modify-write under the group lock: with two processes racing on one entry,
    # every increment lands.
    t = ZoneTable.create("z", 64 * 1024, evicts=False, mutexes=mutexes)
    assert ("mutexes=0" in repr(t)) != mutexes
    h = t.hash(b"shared")
    rounds = 3000
    pid = os.fork()
    if pid == 0:  # the other "worker": its own mapping of the same table
        code = 1
        try:
            mine = t.attach()
            for _ in range(rounds):
                mine.update(h, 1, _increment)
            code = 0
        finally:
            os._exit(code)
    for _ in range(rounds):
        t.update(h, 1, _increment)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert t.peek(h) == (2 * rounds, 0)


def _exit_holding_the_lock(state: State | None) -> tuple[None, State]:
    os._exit(0)


def test_a_worker_dying_with_the_lock_held_wedges_no_one(mutexes: bool) -> None:
    t = ZoneTable.create("z", ONE_GROUP, evicts=False, mutexes=mutexes)
    h = t.hash(b"k")
    t.update(h, 1, put(5))
    pid = os.fork()
    if pid == 0:  # dies inside the critical section, the group's lock held
        try:
            t.attach().update(h, 2, _exit_holding_the_lock)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # Another worker still gets the lock (in a child: a wedged lock would block this
    # process in C, where no timeout reaches).
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            mine = t.attach()
            code = 0 if mine.update(h, 3, put(6)) == (5, 0) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the lock a dead worker held was never given back")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert t.peek(h) == (6, 0)


def test_reload_keeps_the_state_of_unchanged_zones() -> None:
    specs = (
        LimitZoneSpec("one", "$remote_addr", "req", rate=1),
        LimitZoneSpec("two", "$remote_addr", "conn"),
    )
    first = open_zones(specs, "a.yaml")
    again = open_zones(
        (
            LimitZoneSpec("one", "$remote_addr", "req", rate=5),  # a new rate keeps state
            LimitZoneSpec("two", "$uri", "conn"),  # a new key starts afresh
        ),
        "b.yaml",
        first,
    )
    assert again["one"].table is first["one"].table
    assert again["one"].spec.rate == 5
    assert again["two"].table is not first["two"].table


# --- limit_conn ------------------------------------------------------------------------


def test_acquire_and_release_arithmetic() -> None:
    assert acquire(2, None) == (True, (1, 0))
    assert acquire(2, (1, 0)) == (True, (2, 0))
    assert acquire(2, (2, 0)) == (False, (2, 0))
    assert release((2, 0)) == (None, (1, 0))
    assert release((1, 0)) == (None, None)  # the last one removes the entry
    assert release(None) == (None, None)


@dataclass(frozen=True)
class _Head:
    request_line: bytes = b"GET /slow HTTP/1.1"
    host: bytes | None = b"example.test"


@dataclass(eq=False)
class _Exchange:
    remote_addr: bytes = b"10.0.0.1"
    head: _Head = _Head()


def _conn_filter(limit: int, *, dry_run: bool = False, size: int = 64 * 1024) -> LimitConnFilter:
    zones = open_zones((LimitZoneSpec("addr", "$remote_addr", "conn", size=size),), "t.yaml")
    zone = zones["addr"]
    spec = LimitConnSpec("addr", limit)
    return LimitConnFilter([(spec, zone, zone.compile_key(frozenset()))], 503, dry_run)


def test_limit_conn_counts_requests_in_flight(caplog: pytest.LogCaptureFixture) -> None:
    f = _conn_filter(2)
    a, b, c = _Exchange(), _Exchange(), _Exchange()
    assert f.check(a, 0.0) is None
    assert f.check(b, 0.0) is None
    caplog.set_level(logging.ERROR, logger="ferryman.filters.conn_limit")
    verdict = f.check(c, 0.0)
    assert isinstance(verdict, Deny) and verdict.status == 503
    assert (
        caplog.records[0]
        .getMessage()
        .startswith('limiting connections by zone "addr", key: "10.0.0.1", client: 10.0.0.1')
    )
    assert f.check(_Exchange(remote_addr=b"10.0.0.2"), 0.0) is None  # another key
    f.done(a)
    assert f.check(c, 0.0) is None
    assert f.in_flight == 3
    for ex in (b, c):
        f.done(ex)
    f.done(b)  # a second `done` gives nothing back twice
    assert f.in_flight == 1


def test_limit_conn_removes_entries_at_zero() -> None:
    f = _conn_filter(5)
    exchanges = [_Exchange(remote_addr=b"10.0.0.%d" % i) for i in range(20)]
    for ex in exchanges:
        assert f.check(ex, 0.0) is None
    table = f._limits[0].table
    assert table.entries() == 20
    for ex in exchanges:
        f.done(ex)
    assert table.entries() == 0


def test_limit_conn_dry_run_passes_and_holds_nothing_over_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = _conn_filter(1, dry_run=True)
    caplog.set_level(logging.ERROR, logger="ferryman.filters.conn_limit")
    first, second = _Exchange(), _Exchange()
    assert f.check(first, 0.0) is None
    assert f.check(second, 0.0) is None
    assert "limiting connections, dry run, by zone" in caplog.records[0].getMessage()
    assert f.in_flight == 1  # only the first counts
    f.done(second)
    f.done(first)
    assert f._limits[0].table.entries() == 0


def test_limit_conn_refuses_when_the_zone_has_no_room(caplog: pytest.LogCaptureFixture) -> None:
    f = _conn_filter(1, size=ONE_GROUP)
    for i in range(WAYS):
        assert f.check(_Exchange(remote_addr=b"10.0.1.%d" % i), 0.0) is None
    caplog.set_level(logging.CRITICAL, logger="ferryman.filters.conn_limit")
    verdict = f.check(_Exchange(remote_addr=b"10.0.2.1"), 0.0)
    assert isinstance(verdict, Deny)
    assert 'no memory in limit_conn_zone "addr"' in caplog.records[0].getMessage()
