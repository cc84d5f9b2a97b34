"""Smooth weighted round-robin: the exact nginx sequences, and the failure penalty."""

from __future__ import annotations

import pytest

from ferryman.balancing import Outcome, RoundRobin
from ferryman.config.schema import PeerSpec
from ferryman.upstream.peer import PeerState


def make_peers(*weights: int, max_fails: int = 1) -> list[PeerState]:
    return [
        PeerState(PeerSpec(host=chr(ord("a") + i), port=80, weight=w, max_fails=max_fails), i)
        for i, w in enumerate(weights)
    ]


def picks(balancer: RoundRobin, peers: list[PeerState], n: int) -> str:
    return "".join(balancer.pick(peers).spec.host for _ in range(n))


def test_weights_5_1_1_give_the_nginx_sequence_repeated() -> None:
    peers = make_peers(5, 1, 1)
    assert picks(RoundRobin(), peers, 21) == "aabacaa" * 3


def test_sequence_returns_to_zero_state_after_one_cycle() -> None:
    peers = make_peers(5, 1, 1)
    picks(RoundRobin(), peers, 7)
    assert [p.current_weight for p in peers] == [0, 0, 0]


def test_equal_weights_rotate_exactly() -> None:
    peers = make_peers(1, 1, 1, 1)
    assert picks(RoundRobin(), peers, 12) == "abcd" * 3


def test_equal_weights_above_one_rotate_exactly() -> None:
    peers = make_peers(3, 3, 3)
    assert picks(RoundRobin(), peers, 9) == "abc" * 3


def test_share_is_proportional_to_weight() -> None:
    peers = make_peers(3, 2, 1)
    seq = picks(RoundRobin(), peers, 600)
    assert (seq.count("a"), seq.count("b"), seq.count("c")) == (300, 200, 100)


def test_single_candidate_is_always_picked() -> None:
    peers = make_peers(4)
    assert picks(RoundRobin(), peers, 3) == "aaa"


def test_subset_of_candidates_only_picks_from_subset() -> None:
    peers = make_peers(1, 1, 1)
    rr = RoundRobin()
    assert picks(rr, [peers[0], peers[2]], 4) == "acac"


def test_empty_candidates_is_an_error() -> None:
    with pytest.raises(ValueError):
        RoundRobin().pick([])


def test_failure_lowers_effective_weight_then_pick_recovers_it() -> None:
    peers = make_peers(5, 1, 1, max_fails=2)
    rr = RoundRobin()
    a = peers[0]
    rr.release(a, Outcome.FAILURE)
    # weight 5 // max_fails 2 = 2
    assert a.effective_weight == 3
    rr.release(a, Outcome.FAILURE)
    assert a.effective_weight == 1
    # Each pick over `a` gives one point back, up to its configured weight.
    rr.pick(peers)
    assert a.effective_weight == 2
    for _ in range(10):
        rr.pick(peers)
    assert a.effective_weight == 5


def test_penalised_peer_gets_fewer_picks_while_recovering() -> None:
    peers = make_peers(5, 5)
    rr = RoundRobin()
    rr.release(peers[0], Outcome.FAILURE)  # max_fails=1: 5 // 1 = 5, down to 0
    assert peers[0].effective_weight == 0
    seq = picks(rr, peers, 4)
    assert seq.count("b") > seq.count("a")


def test_effective_weight_floors_at_zero() -> None:
    peers = make_peers(2, max_fails=1)
    rr = RoundRobin()
    for _ in range(3):
        rr.release(peers[0], Outcome.FAILURE)
    assert peers[0].effective_weight == 0


def test_max_fails_zero_means_no_penalty() -> None:
    peers = make_peers(5, max_fails=0)
    RoundRobin().release(peers[0], Outcome.FAILURE)
    assert peers[0].effective_weight == 5


@pytest.mark.parametrize("outcome", [Outcome.SUCCESS, Outcome.NEUTRAL])
def test_success_and_neutral_change_nothing(outcome: Outcome) -> None:
    peers = make_peers(5, 1)
    rr = RoundRobin()
    rr.pick(peers)
    before = [(p.current_weight, p.effective_weight) for p in peers]
    rr.release(peers[0], outcome)
    assert [(p.current_weight, p.effective_weight) for p in peers] == before
