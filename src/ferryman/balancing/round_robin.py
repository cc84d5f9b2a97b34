"""Smooth weighted round-robin, exactly as nginx does it.

Owns the choice among eligible peers and the `current_weight` / `effective_weight`
fields of `PeerState`. Knows nothing of health, `down`, backups or tried peers: the
upstream group filters those out before calling `pick`.

The algorithm is `ngx_http_upstream_get_peer` (ngx_http_upstream_round_robin.c): every
candidate gains its effective weight, the richest is chosen and pays back the total. With
weights 5,1,1 this yields `a a b a c a a`, spreading the light peers out instead of
sending bursts, and it needs no random numbers and no per-request allocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ferryman.balancing.base import Balancer, Outcome

if TYPE_CHECKING:
    from ferryman.upstream.peer import PeerState

__all__ = ["RoundRobin", "lower_effective_weight"]


def lower_effective_weight(peer: PeerState, outcome: Outcome) -> None:
    """nginx's `ngx_http_upstream_free_round_robin_peer`, balancer half (shared with least_conn).

    A failure costs `weight // max_fails` of effective weight (floor 0), so a flaky peer
    gets fewer requests while it recovers; success and neutral outcomes change nothing
    (recovery happens in `pick`). Failure counting itself belongs to passive health.
    """
    if outcome is not Outcome.FAILURE:
        return
    max_fails = peer.spec.max_fails
    # max_fails=0 disables failure accounting, including this penalty (nginx).
    if max_fails > 0:
        peer.effective_weight -= peer.weight // max_fails
    if peer.effective_weight < 0:
        peer.effective_weight = 0


class RoundRobin(Balancer):
    """The `round_robin` balancer (nginx's default). Stateless: state lives on peers."""

    __slots__ = ()

    def pick(self, candidates: Sequence[PeerState], key: bytes = b"") -> PeerState:
        best: PeerState | None = None
        best_cw = 0
        total = 0
        # A plain loop over locals, no allocation: this runs once per request.
        for peer in candidates:
            ew = peer.effective_weight
            cw = peer.current_weight + ew
            peer.current_weight = cw
            total += ew
            # A peer penalised by failures earns its weight back one step per pick (nginx).
            if ew < peer.weight:
                peer.effective_weight = ew + 1
            # Strictly greater: the first of equals wins, which keeps the order stable.
            if best is None or cw > best_cw:
                best = peer
                best_cw = cw
        if best is None:
            raise ValueError("pick() needs at least one candidate")
        best.current_weight = best_cw - total
        return best

    def release(self, peer: PeerState, outcome: Outcome) -> None:
        lower_effective_weight(peer, outcome)

    def hears_every_outcome(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "RoundRobin()"
