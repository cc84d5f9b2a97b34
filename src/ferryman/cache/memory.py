"""MemoryStore: one worker's cache entries in memory, least recently used evicted first
once a byte budget is exceeded.

Owns the entries' bodies and LRU order. Knows no HTTP rules (cache/policy.py) and
nothing of other workers: each worker has its own (nginx keeps only keys in shared
memory; bodies in memory are per worker here, like a per-process page cache).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from ferryman.cache.entry import EntryMeta
from ferryman.cache.store import BytesEntry, StoreError

__all__ = ["MemoryStore"]

# Per-entry bookkeeping (dict slots, tuples, the meta object) charged to the budget so
# that many tiny entries cannot exceed it by far.
_OVERHEAD = 256


def _cost(meta: EntryMeta, body_len: int) -> int:
    fields = sum(len(n) + len(v) + 4 for n, v in meta.headers)
    return body_len + fields + len(meta.key) + len(meta.variant) + _OVERHEAD


class _Slot:
    __slots__ = ("cost", "entry", "last_used")

    def __init__(self, entry: BytesEntry, cost: int, last_used: float) -> None:
        self.entry = entry
        self.cost = cost
        self.last_used = last_used


class MemoryStore:
    """LRU by bytes: `max_bytes` bounds the bodies plus a per-entry overhead."""

    def __init__(
        self,
        max_bytes: int,
        *,
        inactive: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = max_bytes
        self.inactive = inactive
        self._clock = clock
        # Least recently used first; lookups move an entry to the end.
        self._slots: OrderedDict[tuple[str, bytes], _Slot] = OrderedDict()
        self._variants: dict[str, set[bytes]] = {}
        self._vary: dict[str, tuple[bytes, ...]] = {}
        self.bytes = 0

    # -- reading --

    def lookup(self, key: str, variant: bytes) -> BytesEntry | None:
        slot = self._slots.get((key, variant))
        if slot is None:
            return None
        self._slots.move_to_end((key, variant))
        slot.last_used = self._clock()
        return slot.entry

    def vary_for(self, key: str) -> tuple[bytes, ...] | None:
        return self._vary.get(key)

    def holds(self, key: str, variant: bytes) -> bool:
        return (key, variant) in self._slots

    def variants(self, key: str) -> list[bytes]:
        return list(self._variants.get(key, ()))

    def __len__(self) -> int:
        return len(self._slots)

    # -- writing --

    def begin(self, meta: EntryMeta) -> _MemoryWriter:
        return _MemoryWriter(self, meta)

    def put(self, meta: EntryMeta, body: bytes, tag: object = None) -> bool:
        """Store a whole body (small ones: a tiered promotion or a committed writer);
        False when it alone exceeds the budget."""
        cost = _cost(meta, len(body))
        if cost > self.max_bytes:
            return False
        self._drop((meta.key, meta.variant))
        self._slots[(meta.key, meta.variant)] = _Slot(
            BytesEntry(meta, body, tag), cost, self._clock()
        )
        self._variants.setdefault(meta.key, set()).add(meta.variant)
        self._vary[meta.key] = meta.vary
        self.bytes += cost
        self._evict()
        return True

    def update_meta(self, key: str, variant: bytes, meta: EntryMeta) -> None:
        slot = self._slots.get((key, variant))
        if slot is None:
            return
        meta = replace(meta, body_size=slot.entry.meta.body_size)
        slot.entry = BytesEntry(meta, slot.entry.body, slot.entry.tag)
        self._vary[key] = meta.vary

    # -- removing --

    def remove(self, key: str) -> int:
        variants = self._variants.get(key, set())
        count = len(variants)
        for variant in list(variants):
            self._drop((key, variant))
        return count

    def remove_prefix(self, prefix: str) -> int:
        return sum(self.remove(k) for k in [k for k in self._variants if k.startswith(prefix)])

    def remove_variant(self, key: str, variant: bytes) -> bool:
        return self._drop((key, variant))

    def expire(self, now: float) -> int:
        """Remove entries unused for `inactive` seconds (the LRU order is use order)."""
        removed = 0
        while self._slots:
            slot_key, slot = next(iter(self._slots.items()))
            if now - slot.last_used < self.inactive:
                break
            self._drop(slot_key)
            removed += 1
        return removed

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self._slots:
            self._drop(next(iter(self._slots)))

    def _drop(self, slot_key: tuple[str, bytes]) -> bool:
        slot = self._slots.pop(slot_key, None)
        if slot is None:
            return False
        self.bytes -= slot.cost
        key, variant = slot_key
        variants = self._variants.get(key)
        if variants is not None:
            variants.discard(variant)
            if not variants:
                del self._variants[key]
                self._vary.pop(key, None)
        return True

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._slots)} entries, {self.bytes}/{self.max_bytes} bytes)"


class _MemoryWriter:
    """Buffers a body; gives up buffering (and stores nothing) past the budget."""

    __slots__ = ("_done", "_parts", "_size", "_store", "meta")

    def __init__(self, store: MemoryStore, meta: EntryMeta) -> None:
        self._store = store
        self.meta = meta
        self._parts: list[bytes] | None = []
        self._size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        self._size += len(data)
        if self._parts is None:
            return
        if self._size > self._store.max_bytes:
            self._parts = None  # too large to keep; commit will store nothing
            return
        self._parts.append(bytes(data))

    def commit(self, body_size: int) -> None:
        if self._done:
            raise StoreError("writer already finished")
        self._done = True
        parts, self._parts = self._parts, None
        if body_size != self._size:
            raise StoreError(f"body is {self._size} bytes, expected {body_size}")
        if parts is not None:
            self._store.put(replace(self.meta, body_size=body_size), b"".join(parts))

    def abort(self) -> None:
        self._done = True
        self._parts = None

    def __repr__(self) -> str:
        return f"_MemoryWriter({self.meta.key!r}, {self._size} bytes)"
