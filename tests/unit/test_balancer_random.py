"""`random [two [least_conn|least_time]]` with a seeded or scripted RNG."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ferryman.balancing import Outcome, RandomPick
from ferryman.config.schema import PeerSpec
from ferryman.upstream.peer import PeerState


def make_peers(*weights: int) -> list[PeerState]:
    return [PeerState(PeerSpec(chr(ord("a") + i), 80, weight=w), i) for i, w in enumerate(weights)]


class Scripted(random.Random):
    """Returns the given `random()` values in order: each picks a weight slot."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def shares(balancer: RandomPick, candidates: list[PeerState], n: int) -> dict[str, float]:
    counts = Counter(balancer.pick(candidates).spec.host for _ in range(n))
    return {host: count / n for host, count in sorted(counts.items())}


def test_share_follows_weight() -> None:
    peers = make_peers(5, 3, 2)
    got = shares(RandomPick(peers, random.Random(1)), peers, 20_000)
    assert got == pytest.approx({"a": 0.5, "b": 0.3, "c": 0.2}, abs=0.015)


def test_same_seed_same_sequence() -> None:
    peers = make_peers(1, 1, 1, 1)
    one = RandomPick(peers, random.Random(42))
    two = RandomPick(peers, random.Random(42))
    assert [one.pick(peers).index for _ in range(50)] == [two.pick(peers).index for _ in range(50)]


def test_only_candidates_are_picked_and_they_keep_their_ratio() -> None:
    peers = make_peers(1, 1, 3, 1)
    candidates = [peers[0], peers[2]]
    got = shares(RandomPick(peers, random.Random(7)), candidates, 10_000)
    assert set(got) == {"a", "c"}
    assert got["c"] == pytest.approx(0.75, abs=0.02)


def test_draws_map_to_weight_slots_in_configured_order() -> None:
    peers = make_peers(2, 1, 1)  # slots: a a b c
    balancer = RandomPick(peers, Scripted(0.0, 0.49, 0.5, 0.99))
    assert [balancer.pick(peers).spec.host for _ in range(4)] == ["a", "a", "b", "c"]


def test_a_non_candidate_draw_costs_a_try_then_round_robin() -> None:
    peers = make_peers(1, 1, 1)
    # 21 draws all on "a", which is not a candidate: give up, round-robin over b and c.
    balancer = RandomPick(peers, Scripted(*[0.0] * 21))
    assert balancer.pick([peers[1], peers[2]]).spec.host == "b"
    balancer = RandomPick(peers, Scripted(0.0, 0.0, 0.9))
    assert balancer.pick([peers[1], peers[2]]).spec.host == "c"


def test_single_peer_group_or_candidate() -> None:
    one = make_peers(1)
    assert RandomPick(one, random.Random(1)).pick(one) is one[0]
    peers = make_peers(1, 1)
    assert RandomPick(peers, Scripted()).pick([peers[1]]) is peers[1]


def test_two_least_conn_keeps_the_less_loaded_of_the_two() -> None:
    peers = make_peers(1, 1, 1)
    peers[0].active = 5
    peers[1].active = 2
    balancer = RandomPick(peers, Scripted(0.1, 0.5), two=True)  # draws a, then b
    assert balancer.pick(peers) is peers[1]
    balancer = RandomPick(peers, Scripted(0.5, 0.1), two=True)  # draws b, then a
    assert balancer.pick(peers) is peers[1]


def test_two_least_conn_compares_per_unit_of_weight() -> None:
    peers = make_peers(4, 1)
    peers[0].active = 6  # 1.5 per unit
    peers[1].active = 2  # 2.0 per unit
    balancer = RandomPick(peers, Scripted(0.1, 0.9), two=True)
    assert balancer.pick(peers) is peers[0]


def test_two_tie_goes_to_the_second_draw_like_nginx() -> None:
    peers = make_peers(1, 1, 1)
    balancer = RandomPick(peers, Scripted(0.1, 0.9), two=True)
    assert balancer.pick(peers) is peers[2]


def test_two_redraws_the_same_peer() -> None:
    peers = make_peers(1, 1, 1)
    peers[1].active = 1
    # a, a again (a try lost), then b: a (0 active) beats b.
    balancer = RandomPick(peers, Scripted(0.1, 0.2, 0.5), two=True)
    assert balancer.pick(peers) is peers[0]


def test_two_never_picks_a_busy_peer_while_two_others_are_idle() -> None:
    peers = make_peers(1, 1, 1)
    peers[0].active = 100
    balancer = RandomPick(peers, random.Random(5), two=True, method="least_conn")
    assert all(balancer.pick(peers) is not peers[0] for _ in range(500))


def test_two_least_time_prefers_the_faster_estimate() -> None:
    peers = make_peers(1, 1, 1)
    balancer = RandomPick(peers, random.Random(3), two=True, method="least_time")
    timings = {"a": 0.050, "b": 0.010, "c": 0.020}
    for peer in peers:  # one measured request each
        peer.last_header_time = timings[peer.spec.host]
        balancer.release(peer, Outcome.SUCCESS)
    assert [p.latency for p in peers] == [0.050, 0.010, 0.020]
    got = shares(balancer, peers, 3000)
    # b wins every pair it is in (2/3 of them), c the pair (a, c).
    assert got["b"] == pytest.approx(2 / 3, abs=0.03)
    assert got["c"] == pytest.approx(1 / 3, abs=0.03)
    assert "a" not in got


def test_two_least_time_counts_requests_in_flight() -> None:
    peers = make_peers(1, 1)
    balancer = RandomPick(peers, Scripted(0.1, 0.9), two=True, method="least_time")
    peers[0].latency, peers[1].latency = 0.010, 0.015
    peers[0].active = 1  # 0.010 * 2 > 0.015 * 1
    assert balancer.pick(peers) is peers[1]


def test_two_least_time_last_byte_measures_the_whole_response() -> None:
    peers = make_peers(1, 1)
    balancer = RandomPick(peers, random.Random(1), two=True, method="least_time", last_byte=True)
    peers[0].last_header_time, peers[0].last_total_time = 0.001, 0.300
    balancer.release(peers[0], Outcome.SUCCESS)
    assert peers[0].latency == 0.300


def test_plain_random_keeps_no_latency() -> None:
    peers = make_peers(1, 1)
    balancer = RandomPick(peers, random.Random(1))
    peers[0].last_header_time = 0.5
    balancer.release(peers[0], Outcome.SUCCESS)
    assert peers[0].latency == 0.0


def test_failure_lowers_effective_weight_like_round_robin() -> None:
    peers = make_peers(2, 1)
    RandomPick(peers, random.Random(1)).release(peers[0], Outcome.FAILURE)
    assert peers[0].effective_weight == 0


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="least_conn, least_time"):
        RandomPick(make_peers(1, 1), two=True, method="fastest")


def test_repr_names_the_mode() -> None:
    peers = make_peers(1, 1)
    assert "two least_conn" in repr(RandomPick(peers, two=True))
    assert "two least_time" in repr(RandomPick(peers, two=True, method="least_time"))
    assert "two" not in repr(RandomPick(peers))
