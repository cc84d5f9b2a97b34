"""Every strategy by name, built from an UpstreamSpec, and driven through a group:
tried peers, down peers and passive health come before the balancer's choice."""

from __future__ import annotations

import pytest

from ferryman.balancing import (
    ConsistentHash,
    Hash,
    IpHash,
    LeastConn,
    LeastTime,
    Outcome,
    PeakEwma,
    RandomPick,
    RoundRobin,
    create_balancer,
    known_balancers,
)
from ferryman.config.schema import PeerSpec, UpstreamSpec
from ferryman.upstream.group import UpstreamGroup
from ferryman.upstream.peer import PeerState


def upstream(balance: str, *specs: PeerSpec, **options: object) -> UpstreamSpec:
    specs = specs or tuple(PeerSpec(f"10.0.0.{i + 1}", 80) for i in range(3))
    return UpstreamSpec(name="app", servers=specs, balance=balance, **options)  # type: ignore[arg-type]


def make_group(spec: UpstreamSpec) -> UpstreamGroup:
    peers = [PeerState(s, i) for i, s in enumerate(spec.servers)]
    return UpstreamGroup(spec, peers, create_balancer(spec.balance, spec, peers))


def bit(*indexes: int) -> int:
    return sum(1 << i for i in indexes)


STRATEGIES = [
    ("round_robin", {}, RoundRobin),
    ("least_conn", {}, LeastConn),
    ("hash", {"hash_key": "$request_uri"}, Hash),
    ("hash", {"hash_key": "$request_uri", "consistent": True}, ConsistentHash),
    ("ip_hash", {}, IpHash),
    ("random", {}, RandomPick),
    ("random", {"random_two": True, "random_method": "least_time"}, RandomPick),
    ("least_time", {"least_time": "last_byte"}, LeastTime),
    ("peak_ewma", {}, PeakEwma),
]


@pytest.mark.parametrize(("balance", "options", "cls"), STRATEGIES)
def test_each_name_builds_its_strategy(balance: str, options: dict[str, object], cls: type) -> None:
    spec = upstream(balance, **options)
    peers = [PeerState(s, i) for i, s in enumerate(spec.servers)]
    assert isinstance(create_balancer(balance, spec, peers), cls)
    assert balance in known_balancers()


def _peer_fields(peers: list[PeerState]) -> list[tuple[object, ...]]:
    # Everything a strategy may keep on a peer (the compiled build has no __slots__).
    names = ("current_weight", "effective_weight", "weight", "weight_now", "latency", "active")
    return [tuple(getattr(p, n) for n in names) for p in peers]


@pytest.mark.parametrize(("balance", "options", "cls"), STRATEGIES)
def test_a_strategy_deaf_to_successes_learns_nothing_from_them(
    balance: str, options: dict[str, object], cls: type
) -> None:
    """The group skips `release` on success and neutral outcomes when a strategy says
    it does not hear them: that must lose nothing, so such a release changes nothing."""
    spec = upstream(balance, **options)
    peers = [PeerState(s, i) for i, s in enumerate(spec.servers)]
    balancer = create_balancer(balance, spec, peers)
    for p in peers:  # mid-recovery weights and a measured request: state to disturb
        p.effective_weight = 0
        p.last_header_time = p.last_total_time = 0.010
    picked = balancer.pick(peers, b"key")
    before = (_peer_fields(peers), repr(balancer))
    for outcome in (Outcome.SUCCESS, Outcome.NEUTRAL):
        balancer.release(picked, outcome)
    changed = (_peer_fields(peers), repr(balancer)) != before
    if balance in ("least_time", "peak_ewma") or options.get("random_method") == "least_time":
        assert balancer.hears_every_outcome()  # they learn latency from successes
    else:
        assert not balancer.hears_every_outcome()
        assert not changed


def test_spec_options_reach_the_strategy() -> None:
    spec = upstream("random", random_two=True, random_method="least_time", least_time="last_byte")
    peers = [PeerState(s, i) for i, s in enumerate(spec.servers)]
    assert "two least_time" in repr(create_balancer("random", spec, peers))
    spec = upstream("least_time", least_time="last_byte")
    assert "last_byte" in repr(create_balancer("least_time", spec, peers))


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "least_time", "peak_ewma"])
def test_strategies_that_need_no_peers_build_without_them(balance: str) -> None:
    create_balancer(balance, upstream(balance))


@pytest.mark.parametrize("balance", ["hash", "ip_hash", "random"])
def test_strategies_with_a_table_need_the_peers(balance: str) -> None:
    with pytest.raises(ValueError, match="needs the group's peers"):
        create_balancer(balance, upstream(balance))


def test_a_bad_least_time_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="header or last_byte"):
        create_balancer("least_time", upstream("least_time", least_time="first_byte"))


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="ip_hash"):
        create_balancer("iphash", upstream("iphash"))


# Through a group ---------------------------------------------------------------------


@pytest.mark.parametrize("consistent", [False, True])
def test_hash_group_sends_a_key_to_one_peer_and_retries_elsewhere(consistent: bool) -> None:
    group = make_group(upstream("hash", hash_key="$request_uri", consistent=consistent))
    first = group.select(0.0, 0, b"/cart/42")
    assert first is not None
    group.release(first, Outcome.SUCCESS, 0.0)
    for _ in range(5):
        again = group.select(0.0, 0, b"/cart/42")
        assert again is first
        group.release(again, Outcome.SUCCESS, 0.0)
    # A retry of the same request (first tried) goes to another peer, deterministically.
    retry = group.select(0.0, bit(first.index), b"/cart/42")
    assert retry is not None and retry is not first
    group.release(retry, Outcome.SUCCESS, 0.0)
    assert group.select(0.0, bit(first.index), b"/cart/42") is retry


def test_hash_group_skips_a_failed_peer_until_it_recovers() -> None:
    group = make_group(upstream("hash", hash_key="$request_uri", consistent=True))
    home = group.select(0.0, 0, b"/k")
    assert home is not None
    group.release(home, Outcome.FAILURE, 0.0)  # max_fails=1: out for fail_timeout (10 s)
    elsewhere = group.select(1.0, 0, b"/k")
    assert elsewhere is not None and elsewhere is not home
    group.release(elsewhere, Outcome.SUCCESS, 1.0)
    assert group.select(11.0, 0, b"/k") is home


def test_hash_group_with_a_down_peer_matches_nginx() -> None:
    # Observed from nginx 1.22.1, `hash $arg_k;` over three servers, the second `down`:
    # "foo", "bar" and "hello" hash to it and are rehashed, the others stay.
    specs = (
        PeerSpec("127.0.0.1", 18081),
        PeerSpec("127.0.0.1", 18082, down=True),
        PeerSpec("127.0.0.1", 18083),
    )
    group = make_group(upstream("hash", *specs, hash_key="$arg_k"))
    answers = {b"foo": 18081, b"bar": 18083, b"hello": 18081, b"/": 18083, b"user-42": 18083}
    for key, port in answers.items():
        peer = group.select(0.0, 0, key)
        assert peer is not None and peer.spec.port == port
        group.release(peer, Outcome.SUCCESS, 0.0)


def test_ip_hash_group_keeps_a_slash_24_together() -> None:
    group = make_group(upstream("ip_hash"))
    chosen = set()
    for i in range(1, 255):
        peer = group.select(0.0, 0, f"203.0.113.{i}".encode())
        assert peer is not None
        chosen.add(peer.name)
        group.release(peer, Outcome.SUCCESS, 0.0)
    assert len(chosen) == 1


def test_random_group_never_picks_tried_or_down_peers() -> None:
    specs = tuple(PeerSpec(f"10.0.0.{i + 1}", 80, down=(i == 3)) for i in range(5))
    group = make_group(upstream("random", *specs, random_two=True))
    for _ in range(200):
        peer = group.select(0.0, bit(0), b"")
        assert peer is not None and peer.index not in (0, 3)
        group.release(peer, Outcome.SUCCESS, 0.0)


def test_least_time_group_learns_from_the_timings_on_release() -> None:
    group = make_group(upstream("least_time"))
    timings = {0: 0.050, 1: 0.005, 2: 0.050}
    for _ in range(3):  # each peer measured once (unmeasured ones go first)
        peer = group.select(0.0, 0)
        assert peer is not None
        group.release(peer, Outcome.SUCCESS, 0.0, header_time=timings[peer.index])
    picked = []
    for _ in range(10):
        peer = group.select(0.0, 0)
        assert peer is not None
        picked.append(peer.index)
        group.release(peer, Outcome.SUCCESS, 0.0, header_time=timings[peer.index])
    assert picked.count(1) >= 8


def test_peak_ewma_group_uses_last_byte_when_asked() -> None:
    group = make_group(upstream("peak_ewma", least_time="last_byte"))
    peer = group.select(0.0, 0)
    assert peer is not None
    group.release(peer, Outcome.SUCCESS, 0.0, header_time=0.001, total_time=0.400)
    assert peer.latency == 0.400
