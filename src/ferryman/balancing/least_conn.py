"""Weighted least connections, exactly as nginx does it.

Owns the choice of the peer with the fewest in-flight requests per unit of weight
(`active / weight`). It reads `PeerState.active`, which the upstream group maintains,
and never filters by health, `down` or tried peers: the group does that first.

The algorithm is `ngx_http_upstream_get_least_conn_peer`
(ngx_http_upstream_least_conn_module.c): find the minimal ratio by cross-multiplication
(`a.active * b.weight < b.active * a.weight`, integers only, no float rounding); if
several peers tie, run smooth weighted round-robin over just those, starting from the
first of them, so that an idle group still rotates instead of always picking the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ferryman.balancing.base import Balancer, Outcome
from ferryman.balancing.round_robin import lower_effective_weight

if TYPE_CHECKING:
    from ferryman.upstream.peer import PeerState

__all__ = ["LeastConn"]


def _least_loaded(candidates: Sequence[PeerState]) -> tuple[int, bool]:
    """Index of the first peer with minimal active/weight, and whether another ties it."""
    first = candidates[0]
    best_at = 0
    best_active = first.active
    best_weight = first.weight_now
    many = False
    for i in range(1, len(candidates)):
        peer = candidates[i]
        weight = peer.weight_now
        lhs = peer.active * best_weight
        rhs = best_active * weight
        if lhs < rhs:
            best_at, best_active, best_weight, many = i, peer.active, weight, False
        elif lhs == rhs:
            many = True
    return best_at, many


def _round_robin_among_ties(candidates: Sequence[PeerState], start: int) -> PeerState:
    """Smooth weighted round-robin over the peers from `start` on that tie `candidates[start]`.

    Peers before `start` have a larger ratio by construction, so nginx starts there too.
    """
    best = candidates[start]
    active = best.active
    weight = best.weight_now
    # The start peer is the first tie the loop meets; seeding with the value it is about
    # to reach makes the loop keep it unless a later tie climbs strictly higher.
    best_cw = best.current_weight + best.effective_weight
    total = 0
    for i in range(start, len(candidates)):
        peer = candidates[i]
        if peer.active * weight != active * peer.weight_now:
            continue
        ew = peer.effective_weight
        cw = peer.current_weight + ew
        peer.current_weight = cw
        total += ew
        if ew < peer.weight:
            peer.effective_weight = ew + 1
        # Strictly greater: the first of equals wins (the start peer, on a fresh group).
        if cw > best_cw:
            best = peer
            best_cw = cw
    best.current_weight -= total
    return best


class LeastConn(Balancer):
    """The `least_conn` balancer. Stateless: state lives on peers."""

    __slots__ = ()

    def pick(self, candidates: Sequence[PeerState], key: bytes = b"") -> PeerState:
        if not candidates:
            raise ValueError("pick() needs at least one candidate")
        best_at, many = _least_loaded(candidates)
        if not many:
            # A unique minimum touches no round-robin state, as in nginx (total is 0).
            return candidates[best_at]
        return _round_robin_among_ties(candidates, best_at)

    def release(self, peer: PeerState, outcome: Outcome) -> None:
        # Same penalty as round_robin: nginx's least_conn frees through the rr free.
        lower_effective_weight(peer, outcome)

    def hears_every_outcome(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "LeastConn()"
