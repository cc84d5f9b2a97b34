"""`random [two [least_conn|least_time]]`: a weighted random peer, or the better of two.

Owns the random choice, with nginx's semantics (ngx_http_upstream_random_module.c). The
random numbers come from an injected `random.Random`, so tests seed it and no module
state is shared. Knows nothing of health: peers the draw lands on that are not among the
candidates are drawn again, as nginx skips unusable ones. (This module is not named
`random.py` so as not to shadow the standard library's.)

- `random`: draw a weight slot uniformly over the whole primary tier (so a peer's chance
  is its weight over the total); a peer that is not a candidate costs a try.
- `random two`: draw until two different candidates come up, then keep the one with
  fewer requests in flight per unit of weight (`least_conn`, nginx's only and default
  method; on a tie the second drawn, as nginx) or the lower least_time cost
  (`least_time`, an nginx Plus method: estimate * (1 + active / weight), unmeasured
  peers first). Two choices give most of least-load's benefit at O(1) cost and without
  herding onto one peer (Mitzenmacher, "The Power of Two Choices").

After 20 unlucky draws (21 in all, shared by both picks of `two`) nginx falls back to
smooth weighted round-robin over the candidates, and so does this; so does a group
with a single peer. With `least_time`, release feeds the same moving average as the
`least_time` balancer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from ferryman.balancing.base import Balancer, Outcome
from ferryman.balancing.least_time import LatencyPicker, observe_least_time, timing
from ferryman.balancing.round_robin import RoundRobin, lower_effective_weight
from ferryman.balancing.weighted import WeightTable

if TYPE_CHECKING:
    from ferryman.upstream.peer import PeerState

__all__ = ["RandomPick"]

_LOOKS: Final = 21
# `two`'s comparison methods.
METHODS: Final = ("least_conn", "least_time")


class RandomPick(Balancer):
    """The `random` balancer. `two` picks the better of two; `method` is "least_conn"
    (the default for two) or "least_time"; `last_byte` picks least_time's timing."""

    __slots__ = ("_by_time", "_last_byte", "_picker", "_rng", "_rr", "_table", "_two")

    def __init__(
        self,
        peers: Sequence[PeerState] = (),
        rng: random.Random | None = None,
        two: bool = False,
        method: str = "",
        last_byte: bool = False,
    ) -> None:
        if method and method not in METHODS:
            raise ValueError(f"random: unknown method {method!r}; known: {', '.join(METHODS)}")
        self._table = WeightTable(peers)
        self._rng = rng if rng is not None else random.Random()
        self._two = two
        self._by_time = two and method == "least_time"
        self._last_byte = last_byte
        self._picker = LatencyPicker(peers)
        self._rr = RoundRobin()

    def pick(self, candidates: Sequence[PeerState], key: bytes = b"") -> PeerState:
        if len(candidates) == 1:
            chosen = candidates[0]
        elif len(self._table.peers) < 2:
            # nginx: `peers->number < 2` -> round-robin. Also a balancer built without
            # the group's peers, which has no slots to draw from.
            chosen = self._rr.pick(candidates, key)
        elif self._two:
            chosen = self._pick_two(candidates)
        else:
            chosen = self._pick_one(candidates)
        if self._by_time:
            self._picker.advance(self._table.total_weight or 1)
        return chosen

    def _draw(self) -> PeerState:
        table = self._table
        # random() * total: uniform over the slots (the bias against randrange is
        # below 2**-40 for any real total weight) at a third of the cost.
        return table.at(int(self._rng.random() * table.total_weight))

    def _pick_one(self, candidates: Sequence[PeerState]) -> PeerState:
        table = self._table
        for _ in range(_LOOKS):
            peer = self._draw()
            if table.is_candidate(peer, candidates):
                return peer
        return self._rr.pick(candidates, b"")

    def _pick_two(self, candidates: Sequence[PeerState]) -> PeerState:
        table = self._table
        first: PeerState | None = None
        for _ in range(_LOOKS):
            peer = self._draw()
            if peer is first or not table.is_candidate(peer, candidates):
                continue
            if first is None:
                first = peer
                continue
            return first if self._is_better(first, peer) else peer
        return self._rr.pick(candidates, b"")

    def _is_better(self, first: PeerState, second: PeerState) -> bool:
        """Whether `first` beats `second` strictly (ties go to the second, as nginx)."""
        if self._by_time:
            return self._picker.cost(first) < self._picker.cost(second)
        # active / weight, cross-multiplied: integers only (nginx).
        return first.active * second.weight < second.active * first.weight

    def release(self, peer: PeerState, outcome: Outcome) -> None:
        # nginx frees random peers through the round-robin free.
        lower_effective_weight(peer, outcome)
        if self._by_time:
            observe_least_time(self._picker, peer, outcome, timing(peer, self._last_byte))

    def hears_every_outcome(self) -> bool:
        return self._by_time

    def __repr__(self) -> str:
        mode = ""
        if self._two:
            mode = " two least_time" if self._by_time else " two least_conn"
        return f"RandomPick({self._table!r}{mode})"
