"""`peak_ewma`: least expected wait with a pessimistic estimate (Finagle, Linkerd).

Owns the peak-sensitive estimate of each peer (`PeerState.latency`, seconds, 0.0 = no
sample yet); the choice among peers is least_time's `LatencyPicker` (cost = estimate *
(1 + active / weight), never-measured peers first, near-ties by smooth WRR, overdue
peers re-measured). Reads no clock and never filters by health.

The estimate follows Finagle's `PeakEwma` / linkerd2-proxy's `peak_ewma`: a sample
above the estimate replaces it at once (a slow response is believed immediately, so a
peer that starts to stall sheds load on the very next pick), and below it the estimate
decays towards the samples as an exponentially weighted moving average.

Finagle and Linkerd decay with wall-clock time (tau = 10 s). Balancers here read no
clock, so the decay is per sample, in the picker's fair intervals (a sample after k of
the peer's fair intervals keeps (1 - `_DECAY`)^k of the old peak, at least one
interval's worth). Per sample rather than per second means a peer's peak fades after a
number of answers rather than after a time, the same at 10 and at 10,000 requests per
second; while a peer gets no traffic its peak does not fade, but the picker's
exploration discount brings it back for a fresh sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from ferryman.balancing.base import Balancer, Outcome
from ferryman.balancing.least_time import LatencyPicker, timing
from ferryman.balancing.round_robin import lower_effective_weight

if TYPE_CHECKING:
    from ferryman.upstream.peer import PeerState

__all__ = ["PeakEwma", "peak_ewma"]

# Below the peak, each on-schedule sample pulls the estimate this far towards itself:
# a peak halves in about 6.6 such samples (slower than least_time's average, since a
# peak is meant to be remembered for a while).
_DECAY: Final = 0.1
_LOG_KEEP: Final = math.log(1.0 - _DECAY)
_MIN_SAMPLE: Final = 1e-6


def peak_ewma(estimate: float, sample: float, keep: float) -> float:
    """Jump up to a new peak; otherwise keep `keep` of the old estimate."""
    if sample >= estimate:
        return sample
    return estimate * keep + sample * (1.0 - keep)


class PeakEwma(Balancer):
    """The `peak_ewma` balancer; `last_byte` False measures to the response head."""

    __slots__ = ("_last_byte", "_picker")

    def __init__(self, peers: Sequence[PeerState] = (), last_byte: bool = False) -> None:
        self._picker = LatencyPicker(peers)
        self._last_byte = last_byte

    def pick(self, candidates: Sequence[PeerState], key: bytes = b"") -> PeerState:
        return self._picker.pick(candidates)

    def release(self, peer: PeerState, outcome: Outcome) -> None:
        lower_effective_weight(peer, outcome)
        sample = timing(peer, self._last_byte)
        picker = self._picker
        if outcome is Outcome.FAILURE:
            picker.penalise(peer, sample)
        elif outcome is Outcome.SUCCESS and sample >= 0.0:
            sample = max(sample, _MIN_SAMPLE)
            estimate = peak_ewma(peer.latency, sample, picker.keep(peer, _LOG_KEEP))
            picker.record(peer, estimate, sample)

    def __repr__(self) -> str:
        mode = "last_byte" if self._last_byte else "header"
        return f"PeakEwma({mode}, {self._picker!r})"
