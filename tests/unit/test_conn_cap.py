"""The global connection counter (server/conn_cap.py): per-worker slots in shared
memory, summed; the master claims and releases slots. Forked children share it."""

from __future__ import annotations

import os

from ferryman.server.conn_cap import ConnectionCap, SharedConnectionCount


def test_admit_until_the_limit_then_leave() -> None:
    count = SharedConnectionCount(8)
    a, b = count.claim(), count.claim()
    assert (a, b) == (0, 1)
    cap_a, cap_b = ConnectionCap(count, a, 3), ConnectionCap(count, b, 3)
    assert cap_a.admit() and cap_b.admit() and cap_a.admit()
    assert count.total() == 3
    assert not cap_b.admit() and not cap_a.admit()
    assert (cap_a.rejected, cap_b.rejected) == (1, 1)
    cap_a.leave()
    assert count.total() == 2 and cap_b.admit()
    cap_b.leave()
    cap_b.leave()
    cap_b.leave()  # more leaves than admits never go below zero
    assert count.get(b) == 0 and count.total() == 1


def test_release_zeroes_a_dead_workers_slot_and_reuses_it() -> None:
    count = SharedConnectionCount(4)
    slot = count.claim()
    assert slot is not None
    cap = ConnectionCap(count, slot, 10)
    for _ in range(5):
        assert cap.admit()
    count.release(slot)  # the worker died with 5 connections
    assert count.total() == 0
    assert count.claim() == slot  # lowest free slot first, zeroed


def test_claims_run_out() -> None:
    count = SharedConnectionCount(2)
    assert count.claim() == 0 and count.claim() == 1 and count.claim() is None


def test_counts_are_shared_with_forked_workers() -> None:
    count = SharedConnectionCount(4)
    parent_slot, child_slot = count.claim(), count.claim()
    assert parent_slot is not None and child_slot is not None
    pid = os.fork()
    if pid == 0:  # the child: a worker admitting two connections
        ok = False
        try:
            cap = ConnectionCap(count, child_slot, 10)
            ok = cap.admit() and cap.admit()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert count.total() == 2
    cap = ConnectionCap(count, parent_slot, 3)
    assert cap.admit() and not cap.admit()
