"""The robust process-shared mutexes under the limit zones, with their per-request calls
made both ways: through the compiled `_mutex_calls` wrappers and through ctypes. Real
processes (fork) on one MAP_SHARED mapping, as the workers share a zone."""

from __future__ import annotations

import glob
import mmap
import os
import signal
import struct
import time

import pytest

import ferryman.filters
from ferryman.filters.shared_locks import SLOT, MutexArray, load_pthread

COUNTER = struct.Struct("=q")
MUTEXES = 4


def _built() -> bool:
    here = os.path.dirname(ferryman.filters.__file__)
    return bool(glob.glob(os.path.join(here, "_mutex_calls.*.so")))


@pytest.fixture(params=[True, False], ids=["native", "ctypes"])
def native(request: pytest.FixtureRequest) -> bool:
    wanted: bool = request.param
    if wanted and not _built():
        pytest.fail("filters/_mutex_calls is not built: run `make accel`")
    return wanted


def test_the_native_calls_are_used_exactly_when_built() -> None:
    pthread = load_pthread()
    assert pthread is not None  # glibc has robust mutexes
    assert pthread.native == _built()
    assert load_pthread(native=False).native is False  # type: ignore[union-attr]


def _shared(native: bool) -> tuple[mmap.mmap, MutexArray]:
    mapping = mmap.mmap(-1, MUTEXES * SLOT + COUNTER.size, mmap.MAP_SHARED)
    locks = MutexArray.create(mapping, 0, MUTEXES, load_pthread(native))
    assert locks is not None
    assert locks.native == native
    return mapping, locks


def _add(mapping: mmap.mmap, locks: MutexArray, rounds: int, index: int = 1) -> None:
    # An unlocked read-modify-write loses updates when two processes race; locked, none.
    at = MUTEXES * SLOT
    for _ in range(rounds):
        locks.lock(index)
        (value,) = COUNTER.unpack_from(mapping, at)
        COUNTER.pack_into(mapping, at, value + 1)
        locks.unlock(index)


def test_two_processes_lose_no_update(native: bool) -> None:
    mapping, locks = _shared(native)
    rounds = 20000
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _add(mapping, locks, rounds)
            code = 0
        finally:
            os._exit(code)
    _add(mapping, locks, rounds)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert COUNTER.unpack_from(mapping, MUTEXES * SLOT)[0] == 2 * rounds


def test_an_index_beyond_the_array_shares_a_mutex(native: bool) -> None:
    _, locks = _shared(native)
    locks.lock(1 + MUTEXES)
    # The same mutex as index 1: a second process cannot take it while this one holds it.
    pid = os.fork()
    if pid == 0:
        os._exit(0 if _taken_within(locks, 1, 0.3) else 3)
    _, status = os.waitpid(pid, 0)
    locks.unlock(1)
    assert os.waitstatus_to_exitcode(status) == 3


def _taken_within(locks: MutexArray, index: int, seconds: float) -> bool:
    # Whether another process takes mutex `index` within `seconds`: it tries in a child
    # of its own, killed if still blocked then.
    pid = os.fork()
    if pid == 0:
        locks.lock(index)
        os._exit(0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return True
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False


def test_a_holder_that_dies_passes_the_mutex_on(native: bool) -> None:
    mapping, locks = _shared(native)
    pid = os.fork()
    if pid == 0:
        locks.lock(2)
        os._exit(0)  # dies holding it
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # EOWNERDEAD: the next locker gets it and marks it consistent (in a grandchild,
    # timed: a wedged mutex would block in C, where no timeout reaches). That one dies
    # holding it too; this process then takes it the same way, and it works as before.
    pid = os.fork()
    if pid == 0:
        os._exit(0 if _taken_within(locks, 2, 5.0) else 4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _add(mapping, locks, 3, index=2)
    assert COUNTER.unpack_from(mapping, MUTEXES * SLOT)[0] == 3
