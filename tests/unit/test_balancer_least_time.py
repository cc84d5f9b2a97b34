"""`least_time`: fastest expected answer, without starving identical peers, without
sticking to a degraded one, and without oscillating. Timings are manual sequences."""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable

import pytest

from ferryman.balancing import LeastTime, Outcome, PeakEwma
from ferryman.balancing.least_time import LatencyPicker
from ferryman.config.schema import PeerSpec
from ferryman.upstream.peer import PeerState

Timing = Callable[[int, int], float]  # (peer index, request number) -> seconds
Balancer = LeastTime | PeakEwma


def make_peers(*weights: int) -> list[PeerState]:
    return [PeerState(PeerSpec(chr(ord("a") + i), 80, weight=w), i) for i, w in enumerate(weights)]


def serve(
    balancer: Balancer, peers: list[PeerState], timing: Timing, n: int, start: int = 0
) -> str:
    """n requests one after the other: pick, measure `timing`, release. The hosts picked."""
    picked = []
    for step in range(start, start + n):
        peer = balancer.pick(tuple(peers))
        peer.active += 1
        picked.append(peer.spec.host)
        peer.active -= 1
        peer.last_header_time = timing(peer.index, step)
        peer.last_total_time = -1.0
        balancer.release(peer, Outcome.SUCCESS)
    return "".join(picked)


def jitter(base: Timing, seed: int, spread: float = 0.2) -> Timing:
    """`base` times a uniform factor in [1 - spread, 1 + spread], from a seeded RNG."""
    rng = random.Random(seed)
    return lambda i, step: base(i, step) * (1.0 + spread * (2.0 * rng.random() - 1.0))


def same(seconds: float) -> Timing:
    return lambda i, step: seconds


@pytest.fixture(params=[LeastTime, PeakEwma], ids=["least_time", "peak_ewma"])
def kind(request: pytest.FixtureRequest) -> type[Balancer]:
    return request.param  # type: ignore[no-any-return]


# Shared behaviour: both use LatencyPicker -------------------------------------------


def test_unmeasured_peers_are_tried_first_in_round_robin_order(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1, 1, 1, 1)
    # Each peer answers slower than the last: a pure "fastest first" would stay on a.
    picked = serve(kind(peers), peers, lambda i, step: 0.010 * (i + 1), 5)
    assert picked == "abcde"


@pytest.mark.parametrize("seed", range(5))
def test_identical_peers_share_evenly(kind: type[Balancer], seed: int) -> None:
    # Traefik #12306: with five identical hosts one got 5 of 1,500 requests.
    peers = make_peers(1, 1, 1, 1, 1)
    counts = Counter(serve(kind(peers), peers, jitter(same(0.010), seed), 1500))
    assert sorted(counts) == list("abcde")
    for host, count in counts.items():
        assert abs(count / 1500 - 0.20) <= 0.03, (host, counts)


def test_identical_peers_with_exact_timings_rotate(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1, 1, 1, 1)
    counts = Counter(serve(kind(peers), peers, same(0.010), 1500))
    assert all(abs(c - 300) <= 5 for c in counts.values()), counts


def test_moves_away_from_a_degraded_peer_and_comes_back(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1, 1, 1, 1)
    balancer = kind(peers)
    normal = jitter(same(0.010), 1)
    serve(balancer, peers, normal, 100)

    def c_degraded(i: int, step: int) -> float:
        return 0.200 if i == 2 else normal(i, step)

    during = serve(balancer, peers, c_degraded, 1000, start=100)
    # It stops using c right after c's first slow answer ...
    first_slow = during.index("c")
    assert "c" not in during[first_slow + 1 : first_slow + 21]
    # ... and c keeps only a trickle of re-measurements (it would get 20% otherwise).
    assert during.count("c") / len(during) < 0.03
    # Not stuck: once c is healthy again it gets its share back.
    serve(balancer, peers, normal, 300, start=1100)
    after = serve(balancer, peers, normal, 500, start=1400)
    assert abs(after.count("c") / 500 - 0.20) < 0.04


def test_prefers_the_faster_of_two_but_still_measures_the_slower(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1)
    picked = serve(kind(peers), peers, jitter(lambda i, s: 0.010 if i == 0 else 0.020, 3), 1000)
    assert 0.75 < picked.count("a") / 1000 < 0.97
    assert "b" in picked[-100:]


def test_weights_share_near_equal_peers(kind: type[Balancer]) -> None:
    # Equal timings are near-ties: smooth WRR over them follows the weights.
    peers = make_peers(3, 1)
    picked = serve(kind(peers), peers, same(0.010), 400)
    assert picked.count("a") / 400 == pytest.approx(0.75, abs=0.04)


def test_requests_in_flight_count(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1)
    balancer = kind(peers)
    peers[0].latency, peers[1].latency = 0.010, 0.015
    assert balancer.pick(peers) is peers[0]
    peers[0].active = 1  # 0.010 * (1 + 1) > 0.015 * (0 + 1)
    assert balancer.pick(peers) is peers[1]
    peers[1].active = 1  # 0.020 vs 0.030
    assert balancer.pick(peers) is peers[0]


def test_in_flight_counts_per_unit_of_weight(kind: type[Balancer]) -> None:
    peers = make_peers(4, 1)
    peers[0].latency = peers[1].latency = 0.010
    peers[0].active = 2  # 0.010 * (1 + 2/4) = 0.015 < 0.010 * (1 + 1/1) = 0.020
    peers[1].active = 1
    assert kind(peers).pick(peers) is peers[0]


def test_a_busy_unmeasured_peer_counts_as_typical(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1, 1)
    balancer = kind(peers)
    serve(balancer, peers[:2], same(0.010), 4)  # a and b measured at 10 ms
    peers[2].active = 3  # c: first request(s) still in flight
    assert balancer.pick(peers) is not peers[2]
    peers[2].active = 0
    assert balancer.pick(peers) is peers[2]


def test_failure_doubles_the_estimate(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1)
    balancer = kind(peers)
    peers[0].latency = 0.010
    peers[0].last_header_time = -1.0
    balancer.release(peers[0], Outcome.FAILURE)
    assert peers[0].latency == pytest.approx(0.020)
    # A slow failure (a timeout) counts from its own duration.
    peers[0].last_header_time = 0.5
    balancer.release(peers[0], Outcome.FAILURE)
    assert peers[0].latency == pytest.approx(1.0)


def test_a_fast_failure_does_not_make_a_peer_look_fast(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1)
    balancer = kind(peers)
    serve(balancer, peers, same(0.010), 2)
    peers[0].last_header_time = 0.0001  # "connection refused" at once
    balancer.release(peers[0], Outcome.FAILURE)
    assert peers[0].latency >= 0.020
    assert balancer.pick(peers) is peers[1]


def test_failure_with_nothing_measured_yet(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1)
    balancer = kind(peers)
    balancer.release(peers[0], Outcome.FAILURE)
    assert peers[0].latency == 2.0  # no sample anywhere: one second, doubled
    assert balancer.pick(peers) is peers[1]


def test_failure_lowers_effective_weight_like_round_robin(kind: type[Balancer]) -> None:
    peers = make_peers(2, 1)
    kind(peers).release(peers[0], Outcome.FAILURE)
    assert peers[0].effective_weight == 0


def test_unmeasured_and_neutral_outcomes_change_no_estimate(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1)
    balancer = kind(peers)
    peers[0].latency = 0.010
    peers[0].last_header_time = -1.0
    balancer.release(peers[0], Outcome.SUCCESS)
    peers[0].last_header_time = 5.0
    balancer.release(peers[0], Outcome.NEUTRAL)  # the client went away: says nothing
    assert peers[0].latency == 0.010


def test_last_byte_measures_to_the_last_byte(kind: type[Balancer]) -> None:
    peers = make_peers(1)
    balancer = kind(peers, last_byte=True)
    peers[0].last_header_time, peers[0].last_total_time = 0.001, 0.250
    balancer.release(peers[0], Outcome.SUCCESS)
    assert peers[0].latency == 0.250
    header = kind(peers := make_peers(1))
    peers[0].last_header_time, peers[0].last_total_time = 0.001, 0.250
    header.release(peers[0], Outcome.SUCCESS)
    assert peers[0].latency == 0.001


def test_a_zero_sample_is_still_a_sample(kind: type[Balancer]) -> None:
    peers = make_peers(1)
    balancer = kind(peers)
    peers[0].last_header_time = 0.0
    balancer.release(peers[0], Outcome.SUCCESS)
    assert peers[0].latency > 0.0


def test_peers_joining_later_are_handled(kind: type[Balancer]) -> None:
    balancer = kind()  # built without peers (registry default)
    peers = make_peers(1, 1, 1)
    assert serve(balancer, peers, same(0.010), 3) == "abc"


def test_empty_candidates_is_an_error(kind: type[Balancer]) -> None:
    with pytest.raises(ValueError):
        kind().pick([])


def test_repr_names_the_timing(kind: type[Balancer]) -> None:
    assert "header" in repr(kind())
    assert "last_byte" in repr(kind(last_byte=True))


# No oscillation under concurrent load -----------------------------------------------


def simulate(balancer: Balancer, peers: list[PeerState], seconds: Timing, n: int) -> str:
    """Open-loop load: a request every 2 ms (seeded jitter) while each takes `seconds`
    times (1 + active at start): a peer slows down as it gets busy, the setting where a
    latency balancer that chases the fastest peer sends all load back and forth."""
    rng = random.Random(11)
    now = 0.0
    running: list[tuple[float, int, PeerState, float]] = []
    picked = []
    for step in range(n):
        now += 0.002 * (0.5 + rng.random())
        while running and running[0][0] <= now:
            _, _, done, took = heapq.heappop(running)
            done.active -= 1
            done.last_header_time = took
            balancer.release(done, Outcome.SUCCESS)
        peer = balancer.pick(tuple(peers))
        took = seconds(peer.index, step) * (1 + peer.active)
        peer.active += 1
        picked.append(peer.spec.host)
        heapq.heappush(running, (now + took, step, peer, took))
    return "".join(picked)


def test_identical_peers_under_load_do_not_oscillate(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1)
    picked = simulate(kind(peers), peers, jitter(same(0.010), 5), 4000)
    windows = [picked[i : i + 200] for i in range(0, 4000, 200)]
    # Every window of 200 requests is split close to evenly: no swing from one peer to
    # the other and back.
    assert all(0.35 <= w.count("a") / len(w) <= 0.65 for w in windows)


def test_a_faster_peer_under_load_gets_more_but_not_everything(kind: type[Balancer]) -> None:
    peers = make_peers(1, 1)
    picked = simulate(kind(peers), peers, jitter(lambda i, s: 0.008 if i == 0 else 0.016, 6), 4000)
    windows = [picked[i : i + 400].count("a") / 400 for i in range(400, 4000, 400)]
    assert all(0.5 <= share <= 0.9 for share in windows), windows
    assert max(windows) - min(windows) < 0.2


# least_time's estimate -------------------------------------------------------------


def test_the_first_sample_is_the_estimate_then_a_moving_average() -> None:
    peers = make_peers(1)
    balancer = LeastTime(peers)
    assert serve(balancer, peers, lambda i, step: [0.100, 0.200][step], 2) == "aa"
    # On schedule (one fair interval apart) a new sample weighs 0.25.
    assert peers[0].latency == pytest.approx(0.100 * 0.75 + 0.200 * 0.25)


def test_least_time_moves_gradually_both_ways() -> None:
    peers = make_peers(1)
    balancer = LeastTime(peers)
    serve(balancer, peers, same(0.010), 1)
    serve(balancer, peers, same(0.100), 1)
    assert peers[0].latency == pytest.approx(0.0325)  # 0.010 -> 0.1: up by a quarter
    serve(balancer, peers, same(0.100), 20)
    before = peers[0].latency
    assert before == pytest.approx(0.100, rel=0.01)
    serve(balancer, peers, same(0.010), 1)
    assert peers[0].latency == pytest.approx(before * 0.75 + 0.010 * 0.25)


def test_a_stale_estimate_gives_way_to_a_fresh_sample() -> None:
    peers = make_peers(1, 1)
    balancer = LeastTime(peers)
    serve(balancer, peers, same(0.100), 2)  # a and b measured at 100 ms
    serve(balancer, [peers[1]], same(0.100), 10)  # b alone for 10 picks; a not measured
    peers[0].last_header_time = 0.010
    balancer.release(peers[0], Outcome.SUCCESS)
    # Ten-odd fair intervals since a's last sample: the old estimate keeps 0.75**k.
    kept = (0.100 - peers[0].latency) / (0.100 - 0.010)
    assert 0.9 < kept < 1.0
    assert peers[0].latency < 0.02


def test_overdue_peers_are_discounted_not_forgotten() -> None:
    picker = LatencyPicker()
    peers = make_peers(1, 1)
    peers[0].latency, peers[1].latency = 0.010, 0.030
    # b is 3x slower: after a while it is re-measured, once, not more.
    picked = "".join(picker.pick(peers).spec.host for _ in range(40))
    assert 1 <= picked.count("b") <= 4
    gaps = [len(run) for run in picked.split("b")[:-1]]
    assert all(gap >= 4 for gap in gaps)
    assert math.isfinite(picker.round) and "round=" in repr(picker)
