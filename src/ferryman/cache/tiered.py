"""TieredStore: a worker's memory store in front of the shared disk store, and
open_store, which builds the store a cache zone asks for.

Owns the promotion of small disk entries to memory, the memory of each hot key's Vary
fields, and the check that a memory copy is still the disk's current version (another
worker may have replaced, purged or evicted it). Knows no HTTP rules and no file
formats: the disk store is the truth, memory only saves the opens and reads of hot
entries.

Coherence without a system call per hit: every change to a key's files on disk stamps
the key's slot in the directory's shared table (cache/stamps.py). A memory copy (and a
remembered Vary) is used as long as its slot holds the stamp read before it was last
checked against the disk; when the stamp moved, the disk is checked again (one stat, or
one key-file read). So another worker's purge, replace or eviction is seen by the very
next lookup here, as with the old stat per hit. Without a table (a directory that cannot
be mapped) every memory hit stats the disk.

Use (atime, for disk LRU and `inactive`) is written to the disk at most once per
`touch_interval` seconds per entry, as the disk store itself does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ferryman.cache.disk import DiskStore, DiskWriter, Identity
from ferryman.cache.entry import EntryMeta
from ferryman.cache.memory import MemoryStore
from ferryman.cache.store import BytesEntry, CachedEntry, Store

if TYPE_CHECKING:
    from ferryman.config.schema import CacheZoneSpec

__all__ = ["TieredStore", "open_store"]

# Larger entries stay on disk only: a few big bodies would push out many hot small ones,
# and the page cache already holds recently read files.
PROMOTE_MAX = 1024 * 1024
# Keys whose Vary fields are remembered before they are forgotten all at once (each
# costs a dict slot; forgetting only means one key-file read for the next lookup).
_MAX_KEYS: Final = 100_000
# No stamp recorded: check the disk on the next use.
_UNCHECKED: Final = -1


class _Known:
    """What this worker knows of a key's disk files, and when it last checked."""

    __slots__ = ("slot", "stamp", "vary")

    def __init__(self, slot: int, stamp: int, vary: tuple[bytes, ...]) -> None:
        self.slot = slot
        self.stamp = stamp
        self.vary = vary


class _Hot:
    """A memory copy's link to its disk file: the slot stamp it was checked at, and the
    last use written to the disk."""

    __slots__ = ("size", "slot", "stamp", "touched")

    def __init__(self, slot: int, stamp: int, size: int, touched: float) -> None:
        self.slot = slot
        self.stamp = stamp
        self.size = size
        self.touched = touched


class TieredStore:
    """Memory first, then disk. Writes go to disk (the shared truth) and, when small,
    to memory too. Removal reaches both."""

    def __init__(
        self,
        memory: MemoryStore,
        disk: DiskStore,
        *,
        promote_max: int = PROMOTE_MAX,
        touch_interval: float = 1.0,
        clock: Callable[[], float] | None = None,
    ):
        self.memory = memory
        self.disk = disk
        self.promote_max = promote_max
        self.touch_interval = touch_interval
        self._clock = clock or disk._clock
        self._stamps = disk.stamps
        self._known: dict[str, _Known] = {}
        self._hot: dict[tuple[str, bytes], _Hot] = {}

    def lookup(self, key: str, variant: bytes) -> CachedEntry | None:
        hit = self.memory.lookup(key, variant)
        if hit is not None:
            hot = self._hot.get((key, variant))
            if hot is not None and self._still_current(key, variant, hit, hot):
                now = self._clock()
                if now - hot.touched >= self.touch_interval:
                    hot.touched = now
                    self.disk.touch(key, variant, hot.size)
                return hit
            self._forget_copy(key, variant)
        # The stamp is read before the file is opened: a change after the open is
        # stamped after this read, so the copy made now is checked again.
        slot = self.disk.slot(key)
        stamp = self._stamp(slot)
        entry = self.disk.lookup(key, variant)
        if entry is None or entry.meta.body_size > self.promote_max:
            return entry
        with entry:
            body = b"".join(entry.chunks())
        ident = entry.ident
        if self.memory.put(entry.meta, body, tag=ident):
            self._link(key, variant, _Hot(slot, stamp, ident[2], self._clock()))
        return BytesEntry(entry.meta, body, ident)

    def _link(self, key: str, variant: bytes, hot: _Hot) -> None:
        hot_links = self._hot
        hot_links[(key, variant)] = hot
        # Links of copies the memory tier evicted are dropped once they outnumber the
        # live ones (amortised: a flood of distinct keys cannot grow them unbounded).
        if len(hot_links) > 2 * len(self.memory) + 1024:
            self._prune_links()

    def _prune_links(self) -> None:
        memory = self.memory
        for hk in [hk for hk in self._hot if not memory.holds(*hk)]:
            del self._hot[hk]

    def _still_current(self, key: str, variant: bytes, hit: BytesEntry, hot: _Hot) -> bool:
        """The memory copy is the disk's current version: its slot's stamp has not moved
        since it was checked, or (it moved) a stat says the file is the same."""
        stamps = self._stamps
        if stamps is not None:
            stamp = stamps.stamp(hot.slot)
            if stamp == hot.stamp:
                return True
        else:
            stamp = _UNCHECKED
        ident: Identity | None = self.disk.identity(key, variant)
        if ident is None or ident != hit.tag:
            return False
        hot.stamp = stamp
        return True

    def vary_for(self, key: str) -> tuple[bytes, ...] | None:
        # The disk's key file is the truth (another worker may have stored a response
        # with other Vary fields); it is read again only when the key's stamp moved.
        known = self._known.get(key)
        if known is not None:
            stamps = self._stamps
            if stamps is not None and stamps.stamp(known.slot) == known.stamp:
                return known.vary
        slot = known.slot if known is not None else self.disk.slot(key)
        stamp = self._stamp(slot)
        vary = self.disk.vary_for(key)
        if vary is None:
            self._known.pop(key, None)
            return None
        if known is None:
            if len(self._known) >= _MAX_KEYS:
                self._known.clear()
            self._known[key] = _Known(slot, stamp, vary)
        else:
            known.stamp, known.vary = stamp, vary
        return vary

    def _stamp(self, slot: int) -> int:
        stamps = self._stamps
        return _UNCHECKED if stamps is None else stamps.stamp(slot)

    def _forget_copy(self, key: str, variant: bytes) -> None:
        self.memory.remove_variant(key, variant)
        self._hot.pop((key, variant), None)

    def begin(self, meta: EntryMeta) -> _TieredWriter:
        return _TieredWriter(self, self.disk.begin(meta))

    def update_meta(self, key: str, variant: bytes, meta: EntryMeta) -> None:
        self._forget_copy(key, variant)
        self.disk.update_meta(key, variant, meta)

    def remove(self, key: str) -> int:
        self._known.pop(key, None)
        for variant in self.memory.variants(key):
            self._hot.pop((key, variant), None)
        return max(self.memory.remove(key), self.disk.remove(key))

    def remove_prefix(self, prefix: str) -> int:
        for key in [k for k in self._known if k.startswith(prefix)]:
            del self._known[key]
        for hk in [hk for hk in self._hot if hk[0].startswith(prefix)]:
            del self._hot[hk]
        return max(self.memory.remove_prefix(prefix), self.disk.remove_prefix(prefix))

    def expire(self, now: float) -> int:
        self.memory.expire(now)
        self._prune_links()  # links of copies the memory tier dropped go too
        return self.disk.expire(now)

    def __repr__(self) -> str:
        return f"TieredStore({self.memory!r}, {self.disk!r})"


class _TieredWriter:
    """Writes through to disk, keeping a copy of small bodies for the memory tier."""

    __slots__ = ("_disk", "_parts", "_size", "_store")

    def __init__(self, store: TieredStore, disk: DiskWriter) -> None:
        self._store = store
        self._disk = disk
        self._parts: list[bytes] | None = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._disk.write(data)
        self._size += len(data)
        if self._parts is not None:
            if self._size > self._store.promote_max:
                self._parts = None
            else:
                self._parts.append(bytes(data))

    def commit(self, body_size: int) -> None:
        self._disk.commit(body_size)  # raises StoreError: nothing stored anywhere
        parts, self._parts = self._parts, None
        committed = self._disk.committed
        if committed is None:
            return
        meta, ident = committed
        store = self._store
        store._forget_copy(meta.key, meta.variant)
        # The Vary just written is the key's; remembered unchecked (see vary_for).
        store._known.pop(meta.key, None)
        if parts is not None and store.memory.put(meta, b"".join(parts), tag=ident):
            # Unchecked: the first hit stats the file and records the stamp it saw
            # (a stamp read now could already include another worker's later change).
            hot = _Hot(store.disk.slot(meta.key), _UNCHECKED, ident[2], store._clock())
            store._link(meta.key, meta.variant, hot)

    def abort(self) -> None:
        self._parts = None
        self._disk.abort()

    def __repr__(self) -> str:
        return f"_TieredWriter({self._disk!r})"


def open_store(
    zone: CacheZoneSpec, *, clock: Callable[[], float] = time.time
) -> MemoryStore | TieredStore:
    """The store for a zone, in this worker: memory only (`memory_size` bytes) when the
    zone has no path, else memory in front of the shared directory (`max_size` bytes)."""
    memory = MemoryStore(zone.memory_size, inactive=zone.inactive, clock=clock)
    if zone.path is None:
        return memory
    disk = DiskStore(zone.path, zone.max_size, inactive=zone.inactive, clock=clock)
    return TieredStore(memory, disk)


def _check(store: Store) -> None:
    """Static check that the implementations satisfy the protocol."""


if TYPE_CHECKING:
    _check(MemoryStore(0))
    _check(TieredStore(MemoryStore(0), DiskStore("", 0)))
