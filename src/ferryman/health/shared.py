"""Peer health shared by every worker and the active-check prober of one configuration.

An anonymous shared memory map, made by the master before it forks, so every process
of the generation sees the same pages. One 16-byte slot per peer (peers numbered across
all upstreams in configuration order):

    offset 0: float64  down_until   passive health: a worker that saw the peer fail
                                    writes until when it should be avoided; readers
                                    take the later of this and their own
    offset 8: uint8    probe_down   active health: 1 while the peer fails its checks

A reload makes a new table (the peer numbering may change); `carry_over` copies the
slots of peers the new configuration keeps unchanged, so what the old generation learned
(a peer that failed, a peer failing its checks) is not forgotten.

Writes are single aligned stores and readers tolerate a stale value for one sweeper
tick, so no lock is needed. Times are CLOCK_MONOTONIC seconds, the clock every process
of the machine shares (the event loops' `time()`).
"""

from __future__ import annotations

import mmap
import struct
from typing import Final

__all__ = ["SharedHealth"]

_SLOT: Final = 16
_DOWN_UNTIL: Final = struct.Struct("=d")


class SharedHealth:
    __slots__ = ("_map", "slots")

    def __init__(self, slots: int) -> None:
        self.slots = slots
        # MAP_SHARED | MAP_ANONYMOUS: inherited across fork, invisible to anyone else.
        self._map = mmap.mmap(-1, max(1, slots) * _SLOT)

    def down_until(self, slot: int) -> float:
        value: float = _DOWN_UNTIL.unpack_from(self._map, slot * _SLOT)[0]
        return value

    def publish_down_until(self, slot: int, until: float) -> None:
        if until > self.down_until(slot):
            _DOWN_UNTIL.pack_into(self._map, slot * _SLOT, until)

    def probe_down(self, slot: int) -> bool:
        return self._map[slot * _SLOT + 8] == 1

    def set_probe_down(self, slot: int, down: bool) -> None:
        self._map[slot * _SLOT + 8] = 1 if down else 0

    def carry_over(self, previous: SharedHealth, moves: list[tuple[int, int]]) -> None:
        """Copy (old slot, new slot) pairs from the previous generation's table."""
        for old, new in moves:
            if 0 <= old < previous.slots and 0 <= new < self.slots:
                start = old * _SLOT
                self._map[new * _SLOT : (new + 1) * _SLOT] = previous._map[start : start + _SLOT]

    def close(self) -> None:
        self._map.close()

    def __repr__(self) -> str:
        down = [i for i in range(self.slots) if self.probe_down(i)]
        return f"SharedHealth({self.slots} slots, probe-down={down})"
