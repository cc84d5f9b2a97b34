"""`peak_ewma`: a new peak is believed at once, and fades per sample (no clock).

The choice itself is least_time's (`LatencyPicker`); test_balancer_least_time.py runs its
starvation, degradation and oscillation tests on both balancers.
"""

from __future__ import annotations

import pytest

from ferryman.balancing import LeastTime, Outcome, PeakEwma
from ferryman.balancing.peak_ewma import peak_ewma
from ferryman.config.schema import PeerSpec
from ferryman.upstream.peer import PeerState


def make_peers(*weights: int) -> list[PeerState]:
    return [PeerState(PeerSpec(chr(ord("a") + i), 80, weight=w), i) for i, w in enumerate(weights)]


def answer(balancer: PeakEwma, peers: list[PeerState], *seconds: float) -> str:
    """One request per timing, in order; the hosts picked."""
    picked = ""
    for took in seconds:
        peer = balancer.pick(tuple(peers))
        peer.last_header_time = took
        balancer.release(peer, Outcome.SUCCESS)
        picked += peer.spec.host
    return picked


def test_the_rule() -> None:
    assert peak_ewma(0.0, 0.050, 0.9) == 0.050  # no estimate yet
    assert peak_ewma(0.010, 0.050, 0.9) == 0.050  # a peak: at once
    assert peak_ewma(0.050, 0.010, 0.9) == pytest.approx(0.050 * 0.9 + 0.010 * 0.1)


def test_a_slow_answer_is_believed_at_once() -> None:
    peers = make_peers(1)
    balancer = PeakEwma(peers)
    answer(balancer, peers, 0.010, 0.010, 0.500)
    assert peers[0].latency == 0.500


def test_a_peak_fades_per_sample() -> None:
    peers = make_peers(1)
    balancer = PeakEwma(peers)
    answer(balancer, peers, 0.100)
    answer(balancer, peers, 0.010)
    # One sample on schedule pulls the estimate a tenth of the way down.
    assert peers[0].latency == pytest.approx(0.100 * 0.9 + 0.010 * 0.1)
    answer(balancer, peers, *[0.010] * 6)
    # About halved after 6.6 samples: 0.010 + 0.090 * 0.9**7.
    assert peers[0].latency == pytest.approx(0.010 + 0.090 * 0.9**7)
    answer(balancer, peers, *[0.010] * 60)
    assert peers[0].latency == pytest.approx(0.010, rel=0.02)


def test_a_stalling_peer_sheds_load_on_the_next_pick() -> None:
    peers = make_peers(1, 1, 1)
    balancer = PeakEwma(peers)
    answer(balancer, peers, *[0.010] * 30)
    # b answers once in 200 ms: it is avoided from the very next request on.
    peer = balancer.pick(tuple(peers))
    peer.last_header_time = 0.200
    balancer.release(peer, Outcome.SUCCESS)
    assert peer.spec.host not in answer(balancer, peers, *[0.010] * 12)


def test_peaks_fade_slower_than_least_time_averages() -> None:
    ewma_peers, peak_peers = make_peers(1), make_peers(1)
    least_time, peak = LeastTime(ewma_peers), PeakEwma(peak_peers)
    for balancer, peers in ((least_time, ewma_peers), (peak, peak_peers)):
        for took in (0.010, 0.200, 0.010, 0.010):
            peer = balancer.pick(peers)
            peer.last_header_time = took
            balancer.release(peer, Outcome.SUCCESS)
    assert peak_peers[0].latency > ewma_peers[0].latency
