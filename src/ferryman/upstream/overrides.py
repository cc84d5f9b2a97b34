"""Runtime overrides of peers, set through the admin API and applied by every worker:
drain (take no new requests) and weight.

Owns the shared table and its layout. The master makes it once, before its first fork,
and keeps it for its whole life, so an override survives reloads for every peer whose
(upstream, configured address) is unchanged; a peer that disappears simply stops being
looked up. Knows nothing of groups or balancers: workers read it each sweeper tick (only
when `version` moved) and apply it to their own `PeerState`s (app.py).

Layout (anonymous MAP_SHARED map):

    offset 0: uint64 version   bumped after every change (readers skip unchanged tables)
    then `capacity` entries of 128 bytes:
        key     112 bytes  "upstream NUL address", UTF-8, NUL padded; all NUL: free
        drained uint8      1: no new requests (in-flight ones finish)
        weight  int32      at offset 116; 0: the configured weight applies

Entries are allocated only by the master (`register`, before forking a generation), so
allocation needs no lock; the admin process only flips fields of existing entries.
"""

from __future__ import annotations

import mmap
import struct
from typing import Final

__all__ = ["MAX_WEIGHT", "Override", "SharedOverrides"]

_VERSION: Final = struct.Struct("=Q")
_WEIGHT: Final = struct.Struct("=i")
_ENTRY: Final = 128
_KEY: Final = 112
_DRAINED: Final = 112
_WEIGHT_AT: Final = 116
# nginx caps `weight=` in what it parses at a few digits; a bound keeps the balancers'
# integer arithmetic (and hash's 160 points per unit of weight) sane.
MAX_WEIGHT: Final = 1000


class Override:
    """One peer's override, as read: `weight` 0 means the configured weight."""

    __slots__ = ("drained", "weight")

    def __init__(self, drained: bool, weight: int) -> None:
        self.drained = drained
        self.weight = weight

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Override)
            and other.drained == self.drained
            and other.weight == self.weight
        )

    def __hash__(self) -> int:
        return hash((self.drained, self.weight))

    def __repr__(self) -> str:
        return f"Override(drained={self.drained}, weight={self.weight})"


class SharedOverrides:
    __slots__ = ("_map", "_slots", "capacity")

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._map = mmap.mmap(-1, _VERSION.size + capacity * _ENTRY)
        # (upstream, address) -> entry index; filled in the master, inherited by fork.
        self._slots: dict[tuple[str, str], int] = {}

    @property
    def version(self) -> int:
        value: int = _VERSION.unpack_from(self._map, 0)[0]
        return value

    def register(self, upstream: str, address: str) -> int:
        """The entry of this peer (made if new; -1 when the table is full). Master only."""
        key = (upstream, address)
        slot = self._slots.get(key)
        if slot is not None:
            return slot
        if len(self._slots) >= self.capacity:
            return -1
        raw = f"{upstream}\0{address}".encode()[:_KEY]
        slot = len(self._slots)
        at = self._at(slot)
        self._map[at : at + _KEY] = raw.ljust(_KEY, b"\0")
        self._slots[key] = slot
        return slot

    def slot(self, upstream: str, address: str) -> int:
        return self._slots.get((upstream, address), -1)

    def get(self, slot: int) -> Override:
        at = self._at(slot)
        weight: int = _WEIGHT.unpack_from(self._map, at + _WEIGHT_AT)[0]
        return Override(self._map[at + _DRAINED] == 1, weight)

    def set_drained(self, slot: int, drained: bool) -> None:
        self._map[self._at(slot) + _DRAINED] = 1 if drained else 0
        self._bump()

    def set_weight(self, slot: int, weight: int) -> None:
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight must be from 1 to {MAX_WEIGHT} (0: the configured one)")
        _WEIGHT.pack_into(self._map, self._at(slot) + _WEIGHT_AT, weight)
        self._bump()

    def _bump(self) -> None:
        _VERSION.pack_into(self._map, 0, self.version + 1)

    def _at(self, slot: int) -> int:
        if not 0 <= slot < self.capacity:
            raise IndexError(f"override slot {slot} out of range")
        return _VERSION.size + slot * _ENTRY

    def close(self) -> None:
        self._map.close()

    def __repr__(self) -> str:
        active = {
            f"{u}/{a}": self.get(s)
            for (u, a), s in self._slots.items()
            if self.get(s) != Override(False, 0)
        }
        return f"SharedOverrides(v{self.version}, {len(self._slots)} peers, {active})"
