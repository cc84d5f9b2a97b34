"""Bounded rings of short records in shared memory: the last requests of every worker
(`RecentLog` writes them, `read_recent` merges them), routing traces, and the admin
process's cache purge orders.

Owns the layout and the lock-free single-writer protocol, and the recent-request record
format. One ring per writer (a worker slot), so writers never contend; any process of
the generation may read any ring. Knows nothing of HTTP beyond the few attributes of an
exchange that a record copies.

An anonymous MAP_SHARED map, made by the master before it forks (like
health/shared.py). Layout per ring:

    offset 0: uint64  count      records ever written to this ring
    then `capacity` records of `record_size` bytes:
        uint64 seq      count after this record was written (0 while being written)
        uint16 length   payload bytes
        payload         truncated to record_size - 10

A writer zeroes `seq`, writes the payload, then stores `seq` and `count`. A reader
copies a record and keeps it only if `seq` is the expected one both before and after
the copy: a record overwritten meanwhile is skipped, never shown torn. Readers see a
record one store late at worst; nothing here takes a lock.
"""

from __future__ import annotations

import mmap
import struct
import time
from typing import Any, Final

__all__ = ["RecentLog", "SharedRing", "parse_record", "read_recent"]

_COUNT: Final = struct.Struct("=Q")
_HEAD: Final = struct.Struct("=QH")


class SharedRing:
    __slots__ = ("_map", "_payload_max", "_ring_size", "capacity", "record_size", "rings")

    def __init__(self, rings: int, capacity: int = 256, record_size: int = 320) -> None:
        if rings < 1 or capacity < 1 or record_size <= _HEAD.size:
            raise ValueError("a shared ring needs rings >= 1, capacity >= 1, room for a payload")
        self.rings = rings
        self.capacity = capacity
        self.record_size = record_size
        self._payload_max = record_size - _HEAD.size
        self._ring_size = _COUNT.size + capacity * record_size
        # MAP_SHARED | MAP_ANONYMOUS: inherited across fork, invisible to anyone else.
        self._map = mmap.mmap(-1, rings * self._ring_size)

    def count(self, ring: int) -> int:
        value: int = _COUNT.unpack_from(self._map, ring * self._ring_size)[0]
        return value

    def push(self, ring: int, payload: bytes) -> None:
        """Append `payload` (truncated to fit) to `ring`. Only one process writes a ring."""
        base = ring * self._ring_size
        count = self.count(ring) + 1
        at = base + _COUNT.size + ((count - 1) % self.capacity) * self.record_size
        data = payload[: self._payload_max]
        m = self._map
        _HEAD.pack_into(m, at, 0, len(data))
        m[at + _HEAD.size : at + _HEAD.size + len(data)] = data
        _COUNT.pack_into(m, at, count)
        _COUNT.pack_into(m, base, count)

    def read(self, ring: int, after: int = 0, limit: int | None = None) -> list[tuple[int, bytes]]:
        """(seq, payload) of the records of `ring` with seq > `after`, oldest first; at
        most `limit` (the newest ones) and never more than the ring holds."""
        base = ring * self._ring_size
        count = self.count(ring)
        first = max(after + 1, count - self.capacity + 1, 1)
        if limit is not None:
            first = max(first, count - limit + 1)
        out = []
        m = self._map
        for seq in range(first, count + 1):
            at = base + _COUNT.size + ((seq - 1) % self.capacity) * self.record_size
            before, length = _HEAD.unpack_from(m, at)
            if before != seq or length > self._payload_max:
                continue
            data = bytes(m[at + _HEAD.size : at + _HEAD.size + length])
            if _COUNT.unpack_from(m, at)[0] == seq:
                out.append((seq, data))
        return out

    def close(self) -> None:
        self._map.close()

    def __repr__(self) -> str:
        counts = [self.count(i) for i in range(self.rings)]
        return f"SharedRing({self.rings} x {self.capacity} x {self.record_size}B, counts={counts})"


# Fields of a recent-request record, in order: tab-separated, tabs/newlines in values
# replaced (they come from the client), and the target cut to keep records short.
RECENT_FIELDS: Final = (
    "time",
    "client",
    "method",
    "target",
    "status",
    "peer",
    "duration",
    "upstream",
    "worker",
)
_TARGET_MAX: Final = 160
_CLEAN: Final = bytes.maketrans(b"\t\r\n", b"   ")


PER_TICK: Final = 64


class RecentLog:
    """A worker's writer of finished requests into its ring (`WorkerContext.recent`).

    A request costs a tuple stored in a small ring of slots; the records are formatted
    and written to the ring on the sweeper's tick (`flush`), only the newest PER_TICK
    (64) of them. At 50,000 requests a second that is 64 formatted records per tick instead
    of 5,000; readers see a request one tick (0.1 s) after it ended at most."""

    __slots__ = ("_count", "_next", "_pending", "ring", "slot")

    def __init__(self, ring: SharedRing, slot: int) -> None:
        self.ring = ring
        self.slot = slot
        # At most PER_TICK records a tick: formatting runs on the event loop, and 256 of
        # them held the requests behind the flush for about 0.25 ms. Under load the ring
        # then holds the newest PER_TICK of each of its last ticks; below 640 requests a
        # second (at the 0.1 s tick), every one.
        # A list used as a ring (`_next` the slot to fill, `_count` how many are held):
        # compiled, a store into it is native, where a bounded deque's append is a
        # method call by name.
        self._pending: list[tuple[Any, ...] | None] = [None] * min(ring.capacity, PER_TICK)
        self._next = 0
        self._count = 0

    def add(
        self,
        now: float,
        started: float,
        remote_addr: bytes,
        head: Any,
        status: int,
        peer: Any,
        group: Any,
    ) -> None:
        """One finished request; `now` is its monotonic clock reading at the end.
        Formatted later, on the tick (`flush`)."""
        pending = self._pending
        i = self._next
        pending[i] = (now, started, remote_addr, head, status, peer, group)
        i += 1
        self._next = 0 if i == len(pending) else i
        if self._count < len(pending):
            self._count += 1

    def flush(self) -> None:
        count = self._count
        if not count:
            return
        pending = self._pending
        size = len(pending)
        self._count = 0
        # Wall-clock end times from the monotonic readings: one clock pair per flush.
        offset = time.time() - time.monotonic()
        slot = b"%d" % self.slot
        push = self.ring.push
        first = (self._next - count) % size
        for k in range(count):
            i = (first + k) % size
            record = pending[i]
            pending[i] = None  # the head and peer are not held past the tick
            assert record is not None
            now, started, remote_addr, head, status, peer, group = record
            line = b"\t".join(
                (
                    b"%.3f" % (now + offset),
                    remote_addr,
                    head.method.translate(_CLEAN),
                    head.target[:_TARGET_MAX].translate(_CLEAN),
                    b"%d" % status,
                    peer.name.encode() if peer is not None else b"-",
                    b"%.4f" % (now - started if started else -1.0),
                    group.name.encode() if group is not None else b"-",
                    slot,
                )
            )
            push(self.slot, line)


def read_recent(ring: SharedRing, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` requests across every worker's ring, oldest first."""
    rows: list[dict[str, Any]] = []
    for r in range(ring.rings):
        for _seq, data in ring.read(r, limit=limit):
            row = parse_record(data)
            if row is not None:
                rows.append(row)
    rows.sort(key=lambda row: row["time"])
    return rows[-limit:] if limit > 0 else []


def parse_record(data: bytes) -> dict[str, Any] | None:
    parts = data.decode("utf-8", "replace").split("\t")
    if len(parts) != len(RECENT_FIELDS):
        return None
    row: dict[str, Any] = dict(zip(RECENT_FIELDS, parts, strict=True))
    # Our own numbers, written by `record` above (not untrusted input).
    try:
        row["time"] = float(row["time"])
        row["status"] = int(row["status"])
        row["duration"] = float(row["duration"])
        row["worker"] = int(row["worker"])
    except ValueError:
        return None
    return row
