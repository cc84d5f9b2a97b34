"""The global connection cap (Config.max_connections): client connections open at once
across every worker process, counted in shared memory.

An anonymous shared map made by the master before it forks (as health/shared.py), with
one 8-byte counter per worker process. Each counter has a single writer, its worker,
so no increment is ever lost to another process's read-modify-write; the total is the
sum of all counters. When a worker dies, the master zeroes its counter (`release`),
so a crashed worker's connections do not stay counted forever.

A worker checks and counts a connection with no await in between (DESIGN rule 8). Two
workers accepting at the same instant may both see room for one, so the cap can be
passed by at most workers - 1 connections; a cross-process lock on every accept would
cost more than that imprecision is worth (nginx's worker_connections is per worker and
has no global form at all).
"""

from __future__ import annotations

import mmap
import struct
from typing import Final

__all__ = ["ConnectionCap", "SharedConnectionCount"]

_SLOT: Final = struct.Struct("=q")
# Offset 0 holds how many slots were ever claimed (only the master writes it, and it
# only grows), so that a total sums those, not all of them; counters follow.
_BASE: Final = _SLOT.size
# More than Config.workers' maximum (1024), so that old generations still draining after
# a reload have counters too.
DEFAULT_SLOTS: Final = 4096


class SharedConnectionCount:
    """The counters. The master claims a slot for each worker it forks and releases it
    when the worker is reaped; workers only touch their own slot."""

    __slots__ = ("_free", "_map", "slots")

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        self.slots = slots
        # MAP_SHARED | MAP_ANONYMOUS: inherited across fork, invisible to anyone else.
        self._map = mmap.mmap(-1, _BASE + slots * _SLOT.size)
        # The master's bookkeeping (a worker's copy of it is never used): lowest first.
        self._free = list(range(slots - 1, -1, -1))

    def claim(self) -> int | None:
        """Master: a zeroed slot for a worker about to be forked (None: all in use)."""
        if not self._free:
            return None
        slot = self._free.pop()
        self.set(slot, 0)
        if slot >= self._used():
            _SLOT.pack_into(self._map, 0, slot + 1)
        return slot

    def release(self, slot: int) -> None:
        """Master: the worker owning `slot` is gone; its connections went with it."""
        self.set(slot, 0)
        self._free.append(slot)
        self._free.sort(reverse=True)

    def total(self) -> int:
        used = self._used()
        return sum(struct.unpack_from(f"={used}q", self._map, _BASE)) if used else 0

    def get(self, slot: int) -> int:
        value: int = _SLOT.unpack_from(self._map, _BASE + slot * _SLOT.size)[0]
        return value

    def set(self, slot: int, value: int) -> None:
        _SLOT.pack_into(self._map, _BASE + slot * _SLOT.size, value)

    def _used(self) -> int:
        used: int = _SLOT.unpack_from(self._map, 0)[0]
        return used

    def close(self) -> None:
        self._map.close()

    def __repr__(self) -> str:
        return f"SharedConnectionCount(total={self.total()} free_slots={len(self._free)})"


class ConnectionCap:
    """One worker's view: admit a connection if the total is under `limit`."""

    __slots__ = ("_count", "_own", "_slot", "limit", "rejected")

    def __init__(self, count: SharedConnectionCount, slot: int, limit: int) -> None:
        self._count = count
        self._slot = slot
        self.limit = limit
        self._own = 0
        count.set(slot, 0)
        self.rejected = 0

    def admit(self) -> bool:
        """Count one more connection, or say no; synchronous, so no other connection
        of this worker can slip in between the check and the count."""
        if self._count.total() >= self.limit:
            self.rejected += 1
            return False
        self._own += 1
        self._count.set(self._slot, self._own)
        return True

    def leave(self) -> None:
        """An admitted connection closed."""
        if self._own > 0:
            self._own -= 1
            self._count.set(self._slot, self._own)

    @property
    def open(self) -> int:
        return self._own

    def __repr__(self) -> str:
        return f"ConnectionCap(own={self._own} total={self._count.total()}/{self.limit})"
