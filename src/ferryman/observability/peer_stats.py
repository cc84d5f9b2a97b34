"""Per-peer counters of every worker, published for the admin process (and metrics).

Owns the shared table: one row per (worker slot, peer slot), peers numbered as in
health/shared.py (across all upstreams, in configuration order). Each worker writes only
its own rows, once per sweeper tick (app.py), so the hot path pays nothing; readers sum
the rows. Knows nothing of HTTP or of how the numbers are used.

Row (32 bytes): int32 active, uint32 fails, uint64 requests, float64 latency (the
balancer's decayed average, seconds; 0: none), float64 spare. Values may be one tick old.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["PeerStats", "PeerTotals"]

_ROW: Final = struct.Struct("=iIQdd")


@dataclass(frozen=True, slots=True)
class PeerTotals:
    active: int
    fails: int
    requests: int
    latency: float


class PeerStats:
    __slots__ = ("_map", "peers", "workers")

    def __init__(self, workers: int, peers: int) -> None:
        self.workers = workers
        self.peers = peers
        self._map = mmap.mmap(-1, max(1, workers * peers) * _ROW.size)

    def publish(
        self, worker: int, peer: int, active: int, fails: int, requests: int, latency: float
    ) -> None:
        if 0 <= worker < self.workers and 0 <= peer < self.peers:
            at = (worker * self.peers + peer) * _ROW.size
            _ROW.pack_into(self._map, at, active, fails, requests, latency, 0.0)

    def totals(self, peer: int) -> PeerTotals:
        """Summed over workers; latency is the mean of the workers that have one."""
        active = fails = requests = 0
        latencies = []
        for w in range(self.workers):
            a, f, r, lat, _ = _ROW.unpack_from(self._map, (w * self.peers + peer) * _ROW.size)
            active += a
            fails += f
            requests += r
            if lat > 0:
                latencies.append(lat)
        latency = sum(latencies) / len(latencies) if latencies else 0.0
        return PeerTotals(active, fails, requests, latency)

    def close(self) -> None:
        self._map.close()

    def __repr__(self) -> str:
        return f"PeerStats({self.workers} workers x {self.peers} peers)"
