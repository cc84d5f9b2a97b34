"""Upstream group: eligibility (down, tried, health, backup tier) and in-flight counts."""

from __future__ import annotations

import pytest

from ferryman.balancing import LeastConn, Outcome, RoundRobin, create_balancer, known_balancers
from ferryman.config.schema import PeerSpec, UpstreamSpec
from ferryman.upstream.group import UpstreamGroup
from ferryman.upstream.peer import PeerState


def make_group(*specs: PeerSpec, balance: str = "round_robin") -> UpstreamGroup:
    spec = UpstreamSpec(name="app", servers=specs, balance=balance)
    peers = [PeerState(s, i) for i, s in enumerate(specs)]
    return UpstreamGroup(spec, peers, create_balancer(balance, spec, peers))


def peer(
    host: str,
    *,
    weight: int = 1,
    max_fails: int = 1,
    fail_timeout: float = 10.0,
    backup: bool = False,
    down: bool = False,
) -> PeerSpec:
    return PeerSpec(host, 80, weight, max_fails, fail_timeout, backup, down)


def bit(*indexes: int) -> int:
    mask = 0
    for i in indexes:
        mask |= 1 << i
    return mask


def pick_host(group: UpstreamGroup, now: float = 0.0, tried: int = 0) -> str | None:
    """Select and release at once (neutral), as a short request would."""
    p = group.select(now, tried)
    if p is None:
        return None
    group.release(p, Outcome.NEUTRAL, now)
    return p.spec.host


def test_rotates_over_primaries() -> None:
    g = make_group(peer("a"), peer("b"), peer("c"))
    assert [pick_host(g) for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_tried_peers_are_excluded() -> None:
    g = make_group(peer("a"), peer("b"), peer("c"))
    for _ in range(4):
        assert pick_host(g, tried=bit(0, 2)) == "b"


def test_all_tried_gives_none() -> None:
    g = make_group(peer("a"), peer("b"))
    assert g.select(0.0, bit(0, 1)) is None


def test_down_peers_are_excluded() -> None:
    g = make_group(peer("a", down=True), peer("b"), peer("c", down=True))
    assert {pick_host(g) for _ in range(5)} == {"b"}


def test_failed_peer_is_skipped_then_returns_after_fail_timeout() -> None:
    g = make_group(peer("a", fail_timeout=10.0), peer("b", fail_timeout=10.0))
    a = g.select(100.0, 0)
    assert a is not None and a.spec.host == "a"
    g.release(a, Outcome.FAILURE, 100.0)
    assert [pick_host(g, now=t) for t in (101.0, 105.0, 109.9)] == ["b", "b", "b"]
    assert {pick_host(g, now=110.0 + i) for i in range(4)} == {"a", "b"}


def test_success_after_return_clears_failures() -> None:
    g = make_group(peer("a", max_fails=2), peer("b", max_fails=2))
    a = g.peers[0]
    g.release(g_select(g, "a", 0.0), Outcome.FAILURE, 0.0)
    assert a.health.fails == 1
    g.release(g_select(g, "a", 1.0), Outcome.SUCCESS, 1.0)
    assert a.health.fails == 0


def g_select(g: UpstreamGroup, host: str, now: float) -> PeerState:
    """Select until `host` comes up (releasing the others neutrally)."""
    for _ in range(len(g.peers) * 4):
        p = g.select(now, 0)
        assert p is not None
        if p.spec.host == host:
            return p
        g.release(p, Outcome.NEUTRAL, now)
    raise AssertionError(f"{host} never selected")


def test_backup_used_only_when_all_primaries_unavailable() -> None:
    g = make_group(peer("a"), peer("b"), peer("z", backup=True))
    assert {pick_host(g) for _ in range(6)} == {"a", "b"}
    # One primary left (a tried): still no backup.
    assert pick_host(g, tried=bit(0)) == "b"
    for host in ("a", "b"):
        g.release(g_select(g, host, 0.0), Outcome.FAILURE, 0.0)
    assert [pick_host(g, now=1.0) for _ in range(3)] == ["z", "z", "z"]
    # Primaries come back after fail_timeout (10 s by default) and take over again.
    assert {pick_host(g, now=10.0 + i) for i in range(4)} == {"a", "b"}


def test_backup_used_when_primaries_tried_or_down() -> None:
    g = make_group(peer("a"), peer("b", down=True), peer("z", backup=True))
    assert pick_host(g, tried=bit(0)) == "z"
    assert g.select(0.0, bit(0, 2)) is None


def test_all_unavailable_gives_none_and_resets_fails() -> None:
    g = make_group(peer("a"), peer("b"), peer("z", backup=True))
    for host in ("a", "b"):
        g.release(g_select(g, host, 0.0), Outcome.FAILURE, 0.0)
    g.release(g_select(g, "z", 0.0), Outcome.FAILURE, 0.0)
    assert g.select(1.0, 0) is None
    assert [p.health.fails for p in g.peers] == [0, 0, 0]
    # Quick recovery: the very next request may try them again, within fail_timeout.
    assert pick_host(g, now=1.0) in {"a", "b"}


def test_single_primary_ignores_max_fails() -> None:
    g = make_group(peer("a", max_fails=1))
    for t in range(5):
        p = g.select(float(t), 0)
        assert p is not None
        g.release(p, Outcome.FAILURE, float(t))
    assert pick_host(g, now=5.0) == "a"


def test_single_primary_still_respects_down_and_tried() -> None:
    assert make_group(peer("a", down=True)).select(0.0, 0) is None
    assert make_group(peer("a")).select(0.0, bit(0)) is None


def test_single_primary_with_backup_never_falls_back_on_failures() -> None:
    g = make_group(peer("a"), peer("z", backup=True))
    p = g.select(0.0, 0)
    assert p is not None
    g.release(p, Outcome.FAILURE, 0.0)
    assert pick_host(g, now=1.0) == "a"
    assert pick_host(g, now=1.0, tried=bit(0)) == "z"


def test_backup_tier_honours_max_fails() -> None:
    g = make_group(peer("a", down=True), peer("y", backup=True), peer("z", backup=True))
    g.release(g_select(g, "y", 0.0), Outcome.FAILURE, 0.0)
    assert {pick_host(g, now=1.0) for _ in range(3)} == {"z"}


def test_active_and_requests_go_up_on_select_and_active_down_on_release() -> None:
    g = make_group(peer("a"), peer("b"))
    first = g.select(0.0, 0)
    second = g.select(0.0, 0)
    assert first is not None and second is not None and first is not second
    assert (first.active, second.active) == (1, 1)
    third = g.select(0.0, 0)
    assert third is first
    assert (first.active, first.requests) == (2, 2)
    g.release(first, Outcome.SUCCESS, 0.0)
    g.release(third, Outcome.NEUTRAL, 0.0)
    g.release(second, Outcome.FAILURE, 0.0)
    assert [(p.active, p.requests) for p in g.peers] == [(0, 2), (0, 1)]


def test_none_does_not_touch_counters() -> None:
    g = make_group(peer("a", down=True), peer("b", down=True))
    assert g.select(0.0, 0) is None
    assert [(p.active, p.requests) for p in g.peers] == [(0, 0), (0, 0)]


def test_release_feeds_the_balancer() -> None:
    g = make_group(peer("a", weight=4, max_fails=2), peer("b"))
    a = g_select(g, "a", 0.0)
    ew = a.effective_weight
    g.release(a, Outcome.FAILURE, 0.0)
    assert a.effective_weight == max(ew - 2, 0)


def test_least_conn_group_prefers_idle_peer() -> None:
    g = make_group(peer("a"), peer("b"), balance="least_conn")
    held = g.select(0.0, 0)
    assert held is not None
    for _ in range(3):
        assert pick_host(g) != held.spec.host


def test_duplicate_indexes_are_rejected() -> None:
    spec = UpstreamSpec(name="app", servers=(peer("a"), peer("b")))
    peers = [PeerState(s, 0) for s in spec.servers]
    with pytest.raises(ValueError, match="index"):
        UpstreamGroup(spec, peers, RoundRobin())


def test_properties_and_repr() -> None:
    g = make_group(peer("a"), peer("z", backup=True))
    assert g.name == "app"
    assert [p.spec.host for p in g.peers] == ["a", "z"]
    text = repr(g)
    assert "app" in text and "a:80" in text and "backup" in text and "RoundRobin" in text


# The registry is how groups get their balancer (UpstreamSpec.balance).


def test_registry_knows_exact_names() -> None:
    assert known_balancers() == (
        "round_robin",
        "least_conn",
        "hash",
        "ip_hash",
        "random",
        "least_time",
        "peak_ewma",
    )
    spec = UpstreamSpec(name="app", servers=())
    assert isinstance(create_balancer("round_robin", spec), RoundRobin)
    assert isinstance(create_balancer("least_conn", spec), LeastConn)


def test_registry_unknown_name_lists_known_ones() -> None:
    spec = UpstreamSpec(name="app", servers=())
    with pytest.raises(KeyError, match="round_robin, least_conn") as info:
        create_balancer("roundrobin", spec)
    assert "'roundrobin'" in str(info.value) and "'app'" in str(info.value)
