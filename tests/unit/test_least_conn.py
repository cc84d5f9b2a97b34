"""Weighted least connections: lowest active/weight wins, ties rotate like round-robin."""

from __future__ import annotations

import pytest

from ferryman.balancing import LeastConn, Outcome
from ferryman.config.schema import PeerSpec
from ferryman.upstream.peer import PeerState


def make_peers(*weights: int, max_fails: int = 1) -> list[PeerState]:
    return [
        PeerState(PeerSpec(host=chr(ord("a") + i), port=80, weight=w, max_fails=max_fails), i)
        for i, w in enumerate(weights)
    ]


def set_active(peers: list[PeerState], *active: int) -> None:
    for p, n in zip(peers, active, strict=True):
        p.active = n


def test_picks_the_peer_with_fewest_active() -> None:
    peers = make_peers(1, 1, 1)
    set_active(peers, 3, 1, 2)
    assert LeastConn().pick(peers) is peers[1]


def test_comparison_is_per_unit_of_weight() -> None:
    peers = make_peers(1, 4)
    # a: 2/1 = 2.0, b: 6/4 = 1.5 -> b, although it has more connections.
    set_active(peers, 2, 6)
    assert LeastConn().pick(peers) is peers[1]
    # a: 1/1 = 1.0, b: 6/4 = 1.5 -> a.
    set_active(peers, 1, 6)
    assert LeastConn().pick(peers) is peers[0]


def test_unique_minimum_leaves_round_robin_state_alone() -> None:
    peers = make_peers(1, 1)
    set_active(peers, 0, 1)
    LeastConn().pick(peers)
    assert [p.current_weight for p in peers] == [0, 0]


def test_idle_peers_rotate_in_order() -> None:
    peers = make_peers(1, 1, 1)
    lc = LeastConn()
    seq = "".join(lc.pick(peers).spec.host for _ in range(9))
    assert seq == "abc" * 3


def test_ties_use_smooth_weighted_round_robin() -> None:
    peers = make_peers(5, 1, 1)
    lc = LeastConn()
    seq = "".join(lc.pick(peers).spec.host for _ in range(14))
    assert seq == "aabacaa" * 2


def test_ties_rotate_only_among_the_tied() -> None:
    peers = make_peers(1, 1, 1, 1)
    set_active(peers, 2, 1, 2, 1)
    lc = LeastConn()
    seq = "".join(lc.pick(peers).spec.host for _ in range(4))
    assert seq == "bdbd"


def test_weighted_ties_count_as_ties() -> None:
    peers = make_peers(1, 2)
    # 1/1 == 2/2: a tie, so round-robin with weights 1:2 decides.
    set_active(peers, 1, 2)
    lc = LeastConn()
    seq = "".join(lc.pick(peers).spec.host for _ in range(6))
    assert seq == "bab" * 2


def test_sequential_requests_that_stay_open_spread_out() -> None:
    # The group raises `active` after each pick; emulate that.
    peers = make_peers(1, 1, 1)
    lc = LeastConn()
    for _ in range(6):
        lc.pick(peers).active += 1
    assert [p.active for p in peers] == [2, 2, 2]


def test_empty_candidates_is_an_error() -> None:
    with pytest.raises(ValueError):
        LeastConn().pick([])


def test_release_failure_lowers_effective_weight_like_round_robin() -> None:
    peers = make_peers(4, max_fails=2)
    lc = LeastConn()
    lc.release(peers[0], Outcome.FAILURE)
    assert peers[0].effective_weight == 2
    lc.release(peers[0], Outcome.SUCCESS)
    lc.release(peers[0], Outcome.NEUTRAL)
    assert peers[0].effective_weight == 2
