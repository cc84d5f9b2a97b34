"""The primary peers of a group as nginx's keyed and random methods see them.

Owns two facts about the whole configured tier, which `pick` cannot learn from its
`candidates` (only the peers eligible now): which peer owns a given weight slot, and
whether a peer the table chose is among the candidates. Knows nothing of keys, hashes
or random numbers; `hash`, `ip_hash` and `random` build on it.

nginx (`ngx_http_upstream_get_hash_peer`, `..._ip_hash_peer`, `..._random_peer`) lays the
primary peers out in configured order, peer i owning `weight_i` consecutive slots of
`0 .. total_weight - 1`, and maps a number to a peer by walking that list. Down peers
keep their slots (nginx's `total_weight` counts them): a peer going down must not move
the keys of the others. Backups have no slots: those methods refuse `backup` in nginx.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ferryman.upstream.peer import PeerState

__all__ = ["WeightTable"]


class WeightTable:
    """Slots by weight over the primary peers, and a cheap `is this one eligible?`."""

    __slots__ = ("_ends", "_full", "_ids", "peers", "total_weight")

    def __init__(self, peers: Sequence[PeerState]) -> None:
        self.peers: tuple[PeerState, ...] = tuple(p for p in peers if not p.spec.backup)
        ends: list[int] = []
        total = 0
        for p in self.peers:
            total += p.weight
            ends.append(total)
        # ends[i] is one past the last slot of peers[i]; bisect replaces nginx's linear
        # walk (same answer, O(log n) with 1,000 peers).
        self._ends = ends
        self.total_weight = total
        self._ids = frozenset(id(p) for p in self.peers)
        # The candidates tuple last found to hold the whole tier (the group passes the
        # same tuple on every first attempt while nothing is down or failed).
        self._full: tuple[PeerState, ...] | None = None

    def at(self, slot: int) -> PeerState:
        """The peer owning `slot` (0 <= slot < total_weight)."""
        return self.peers[bisect_right(self._ends, slot)]

    def is_candidate(self, peer: PeerState, candidates: Sequence[PeerState]) -> bool:
        """Whether `peer` (one of this table's) is among `candidates`."""
        full = self._full
        if full is not None and candidates is full:
            return True
        if isinstance(candidates, tuple) and self._is_whole_tier(candidates):
            self._full = candidates
            return True
        return peer in candidates

    def _is_whole_tier(self, candidates: tuple[PeerState, ...]) -> bool:
        # A tuple is immutable, so once checked it can be recognised by identity.
        if len(candidates) != len(self.peers):
            return False
        return frozenset(id(p) for p in candidates) == self._ids

    def __len__(self) -> int:
        return len(self.peers)

    def __repr__(self) -> str:
        return f"WeightTable({len(self.peers)} peers, total_weight={self.total_weight})"
