"""slow_start: a peer that comes back ramps its weight from 1 to its value over the
configured time, under round-robin and least_conn. Pure: time is passed in."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ferryman.balancing.base import Outcome
from ferryman.balancing.registry import create_balancer
from ferryman.config.schema import PeerSpec, UpstreamSpec
from ferryman.upstream.group import UpstreamGroup
from ferryman.upstream.peer import PeerState


def group(balance: str) -> UpstreamGroup:
    spec = UpstreamSpec(
        name="app",
        servers=(
            PeerSpec("a", 1, weight=10, max_fails=1, fail_timeout=5.0, slow_start=10.0),
            PeerSpec("b", 2, weight=10, max_fails=1, fail_timeout=5.0),
        ),
        balance=balance,
    )
    peers = [PeerState(s, i) for i, s in enumerate(spec.servers)]
    return UpstreamGroup(spec, peers, create_balancer(balance, spec, peers))


def shares(g: UpstreamGroup, now: float, n: int = 1000) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        peer = g.select(now, 0)
        assert peer is not None
        seen[peer.spec.host] += 1
        g.release(peer, Outcome.SUCCESS, now)
    return seen


def fail_a(g: UpstreamGroup, now: float) -> None:
    a = g.peers[0]
    g.peers[0].active += 1  # as select would have counted it
    g.release(a, Outcome.FAILURE, now)


def test_round_robin_ramps_the_weight_back_up() -> None:
    g = group("round_robin")
    assert shares(g, 0.0)["a"] == 500
    fail_a(g, 0.0)  # out until t=5, then ramping until t=15
    assert shares(g, 2.0)["a"] == 0
    early = shares(g, 6.0)["a"]  # 10% into the ramp: weight 1 of 10
    assert 60 < early < 120, early
    middle = shares(g, 10.0)["a"]  # half way: weight 5
    assert early < middle < 400, middle
    assert shares(g, 16.0)["a"] == 500  # full weight again


def test_least_conn_does_not_flood_a_recovering_peer() -> None:
    g = group("least_conn")
    fail_a(g, 0.0)
    b = g.peers[1]
    b.active = 5  # b is busy; a is idle but only at weight 1 of 10 at t=6
    a_picks = 0
    for _ in range(10):
        peer = g.select(6.0, 0)
        assert peer is not None
        a_picks += peer.spec.host == "a"
        # hold it: in-flight counts decide least_conn
    # a (weight 1) takes requests until its load per weight reaches b's (5 per 10).
    assert 0 < a_picks < 10
    assert g.peers[0].weight_now == 1


def test_slow_start_is_refused_with_hash_methods(tmp_path: Path) -> None:
    from ferryman.config.load import load_config
    from ferryman.config.native import load_native
    from ferryman.errors import ConfigError

    text = """
upstreams:
  app:
    balance: ip_hash
    servers: [{address: "127.0.0.1:1", slow_start: 10s}, "127.0.0.1:2"]
servers:
  - listen: "127.0.0.1:8080"
    routes: [{path: /, upstream: app}]
"""
    with pytest.raises(ConfigError) as info:
        load_native(text, "t.yaml")
    assert info.value.where == "t.yaml: upstreams.app.servers[0]"
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "events { }\nhttp {\n upstream app { ip_hash;\n server 127.0.0.1:1 slow_start=10s; }\n"
        " server { listen 8080; location / { proxy_pass http://app; } }\n}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(conf))
    assert info.value.where.endswith("nginx.conf:4") and "slow_start" in info.value.reason
