"""`least_time header|last_byte`: the peer expected to answer soonest, counting its queue.

Owns the latency estimate of each peer (`PeerState.latency`, seconds, 0.0 = no sample
yet) and the choice that minimises the expected wait. Reads the timings the group put on
the peer before `release` (`last_header_time` or `last_total_time`, -1 = not measured)
and `PeerState.active`; reads no clock and never filters by health.

The choice (`LatencyPicker`, shared with `peak_ewma` and `random ... least_time`):

- cost = estimate * (1 + active / weight): the expected time of a request that queues
  behind the ones in flight, a weight w peer serving w of them at once (for weight 1,
  `latency * (active + 1)`). Weights also act on near-equal costs below.
- Peers never measured are tried first while idle, in smooth WRR order. Once one has a
  request in flight it is costed as a typical peer, so a burst does not pile onto it.
- Costs within `_NEAR` (15%) of the lowest are a tie, broken by smooth weighted
  round-robin (nginx's, over the tied peers), so identical peers rotate instead of the
  one with the luckiest noise taking everything (Traefik #12306: 5 of 1,500 requests).
- Exploration: a peer not picked for more than `_GRACE` of its fair intervals has its
  cost discounted by exp(-overdue / `_EXPLORE`). A degraded peer is thus re-measured
  now and then (a 10x slower one gets about 1/10 of its share), and comes back once it
  recovers, instead of being judged forever on its last bad sample.

Balancers read no clock, so "time" is counted in picks: the picker's `round` advances by
1 / (total candidate weight) per pick, so a peer of weight w that gets exactly its share
is picked once every 1/w rounds; `(round - stamp) * w` is its age in fair intervals.

The estimate (`ewma`): an exponentially decayed moving average in those intervals: each
new sample weighs `_ALPHA` when it follows the previous one on schedule, more when the
old estimate is stale (a sample after k intervals keeps only (1 - _ALPHA)^k of it), so a
recovered peer is trusted again at its first fast answer. It moves away from a degraded
peer within a sample or two (0.01 s -> 0.1 s lifts the estimate to 0.0325 s at once),
and it does not oscillate: the in-flight term spreads a burst at once while the average
moves slowly. A failure doubles the estimate (at least the failed attempt's time, or
the typical one), since a fast "connection refused" must not look like a fast peer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from ferryman.balancing.base import Balancer, Outcome
from ferryman.balancing.round_robin import RoundRobin, lower_effective_weight

if TYPE_CHECKING:
    from ferryman.upstream.peer import PeerState

__all__ = ["LatencyPicker", "LeastTime", "ewma", "observe_least_time", "timing"]

# Weight of a new sample arriving on schedule (one fair interval after the last).
_ALPHA: Final = 0.25
_LOG_KEEP: Final = math.log(1.0 - _ALPHA)
# Costs within this fraction of the lowest tie (measurement noise is not a signal).
_NEAR: Final = 0.15
# Exploration: overdue after this many fair intervals, then discounted per _EXPLORE.
_GRACE: Final = 1.0
_EXPLORE: Final = 4.0
# Failures: the estimate is multiplied by this.
_FAILURE_FACTOR: Final = 2.0
# When nothing at all has been measured yet: the scale of a slow response (seconds).
_NO_TYPICAL: Final = 1.0
# A measured 0.0 (a coarse clock) must not read as "never measured".
_MIN_SAMPLE: Final = 1e-6
# Weight of a sample in the group-wide typical latency.
_TYPICAL_ALPHA: Final = 0.1


def timing(peer: PeerState, last_byte: bool) -> float:
    """The measured time of the request just released on `peer`, or -1.0."""
    return peer.last_total_time if last_byte else peer.last_header_time


def ewma(estimate: float, sample: float, keep: float) -> float:
    """least_time's estimate update: keep `keep` of the old estimate (0: no estimate)."""
    if estimate <= 0.0:
        return sample
    return estimate * keep + sample * (1.0 - keep)


class LatencyPicker:
    """Latency-aware choice and its bookkeeping, for one upstream group."""

    __slots__ = ("_picked_at", "_rr", "_sampled_at", "round", "typical")

    def __init__(self, peers: Sequence[PeerState] = ()) -> None:
        size = 1 + max((p.index for p in peers), default=-1)
        # Per PeerState.index: the round the peer was last picked / last measured.
        self._picked_at: list[float] = [0.0] * size
        self._sampled_at: list[float] = [0.0] * size
        self._rr = RoundRobin()
        self.round = 0.0
        # A moving average over every sample of the group (0.0: none yet).
        self.typical = 0.0

    def pick(self, candidates: Sequence[PeerState]) -> PeerState:
        count = len(candidates)
        if count <= 1:
            if count == 0:
                raise ValueError("pick() needs at least one candidate")
            chosen = candidates[0]
            self._ensure(chosen.index)
            self._picked_at[chosen.index] = self.round
            self.round += 1.0 / chosen.weight
            return chosen
        # One pass over locals: this loop is the whole cost of a pick with many peers.
        # It inlines `cost(peer)`, then discounts peers overdue for a measurement.
        now = self.round
        picked_at = self._picked_at
        typical = self.typical if self.typical > 0.0 else _NO_TYPICAL
        total_weight = 0
        best = math.inf
        costs: list[float] = []
        for peer in candidates:
            weight = peer.weight
            total_weight += weight
            active = peer.active
            estimate = peer.latency
            if estimate <= 0.0:
                # Never measured: idle ones cost 0 (try them first), busy ones typical.
                estimate = 0.0 if active == 0 else typical
            cost = estimate * (weight + active) / weight
            index = peer.index
            if index >= len(picked_at):
                self._ensure(index)
            overdue = (now - picked_at[index]) * weight
            if overdue > _GRACE:
                cost *= math.exp((_GRACE - overdue) / _EXPLORE)
            costs.append(cost)
            if cost < best:
                best = cost
        chosen = self._break_tie(candidates, costs, best * (1.0 + _NEAR))
        picked_at[chosen.index] = now
        self.round = now + 1.0 / total_weight
        return chosen

    def advance(self, total_weight: int) -> None:
        """One pick happened elsewhere (random two least_time): the clock still moves."""
        self.round += 1.0 / total_weight

    def _break_tie(
        self, candidates: Sequence[PeerState], costs: list[float], limit: float
    ) -> PeerState:
        tied: list[PeerState] = []
        for i in range(len(candidates)):
            if costs[i] <= limit:
                tied.append(candidates[i])
        if len(tied) == 1:
            return tied[0]
        return self._rr.pick(tied, b"")

    def cost(self, peer: PeerState) -> float:
        """Expected wait on `peer`: estimate * (1 + active / weight); 0.0 when never
        measured and idle (try it first)."""
        estimate = peer.latency
        active = peer.active
        if estimate <= 0.0:
            if active == 0:
                return 0.0
            estimate = self.typical if self.typical > 0.0 else _NO_TYPICAL
        weight = peer.weight
        return estimate * (weight + active) / weight

    def keep(self, peer: PeerState, log_keep: float) -> float:
        """How much of `peer`'s old estimate a new sample keeps: exp(log_keep) per fair
        interval since the last sample, counting at least one."""
        self._ensure(peer.index)
        since = (self.round - self._sampled_at[peer.index]) * peer.weight
        return math.exp(log_keep * max(1.0, since))

    def record(self, peer: PeerState, estimate: float, sample: float) -> None:
        """Store `peer`'s new estimate, made from `sample` (seconds)."""
        peer.latency = estimate
        self._ensure(peer.index)
        self._sampled_at[peer.index] = self.round
        typical = self.typical
        self.typical = sample if typical <= 0.0 else typical + _TYPICAL_ALPHA * (sample - typical)

    def penalise(self, peer: PeerState, sample: float) -> None:
        """A failed attempt: double the estimate, starting from at least the time the
        attempt took, or the typical latency."""
        base = max(peer.latency, sample, self.typical)
        if base <= 0.0:
            base = _NO_TYPICAL
        peer.latency = base * _FAILURE_FACTOR
        self._ensure(peer.index)
        self._sampled_at[peer.index] = self.round

    def _ensure(self, index: int) -> None:
        # Peers can join after the picker was built (re-resolved names): grow on demand,
        # the newcomers counting as picked and measured now.
        missing = index + 1 - len(self._picked_at)
        if missing > 0:
            self._picked_at.extend([self.round] * missing)
            self._sampled_at.extend([self.round] * missing)

    def __repr__(self) -> str:
        return f"LatencyPicker(round={self.round:.2f}, typical={self.typical:.6f})"


class LeastTime(Balancer):
    """The `least_time` balancer; `last_byte` False measures to the response head."""

    __slots__ = ("_last_byte", "_picker")

    def __init__(self, peers: Sequence[PeerState] = (), last_byte: bool = False) -> None:
        self._picker = LatencyPicker(peers)
        self._last_byte = last_byte

    def pick(self, candidates: Sequence[PeerState], key: bytes = b"") -> PeerState:
        return self._picker.pick(candidates)

    def release(self, peer: PeerState, outcome: Outcome) -> None:
        lower_effective_weight(peer, outcome)
        observe_least_time(self._picker, peer, outcome, timing(peer, self._last_byte))

    def __repr__(self) -> str:
        mode = "last_byte" if self._last_byte else "header"
        return f"LeastTime({mode}, {self._picker!r})"


def observe_least_time(
    picker: LatencyPicker, peer: PeerState, outcome: Outcome, sample: float
) -> None:
    """Feed one finished request into `peer`'s least_time estimate. Only successes are
    measured: a neutral outcome (the client left) says nothing about the peer."""
    if outcome is Outcome.FAILURE:
        picker.penalise(peer, sample)
    elif outcome is Outcome.SUCCESS and sample >= 0.0:
        sample = max(sample, _MIN_SAMPLE)
        picker.record(peer, ewma(peer.latency, sample, picker.keep(peer, _LOG_KEEP)), sample)
