"""`ip_hash`: a client's /24 (IPv4) or address (IPv6) sticks to the peer nginx picks.

Expected values come from answers observed from nginx 1.22.1 (`NGINX_IP_HASH`) and from
a reference model written here from ngx_http_upstream_ip_hash_module.c.
"""

from __future__ import annotations

import ipaddress

import pytest

from ferryman.balancing import IpHash, Outcome
from ferryman.balancing.ip_hash import hashed_bytes
from ferryman.config.schema import PeerSpec
from ferryman.upstream.peer import PeerState


def make_peers(*weights: int) -> list[PeerState]:
    return [PeerState(PeerSpec("127.0.0.1", 18081 + i, weight=w), i) for i, w in enumerate(weights)]


def reference_ip_hash(address: str, weights: list[int], eligible: set[int]) -> int | None:
    """ngx_http_upstream_get_ip_hash_peer: index of the peer, None if it gives up."""
    ip = ipaddress.ip_address(address)
    data = ip.packed[:3] if ip.version == 4 else ip.packed
    total = sum(weights)
    h = 89
    for _ in range(21):
        for byte in data:
            h = (h * 113 + byte) % 6271
        w = h % total
        p = 0
        while w >= weights[p]:
            w -= weights[p]
            p += 1
        if p in eligible:
            return p
    return None


ADDRESSES = [f"10.{i}.{(i * 7) % 256}.{(i * 13) % 256}" for i in range(120)] + [
    f"2001:db8:{i:x}::{(i * 31) % 65536:x}" for i in range(60)
]

# Observed from nginx 1.22.1 (`ip_hash;` over 127.0.0.1:18081..18083, index 0..2; the
# client address set with the realip module).
NGINX_IP_HASH = {
    "192.168.1.7": 1,
    "192.168.1.200": 1,
    "10.0.0.1": 0,
    "172.16.5.4": 1,
    "8.8.8.8": 2,
    "::1": 2,
    "2001:db8::1": 2,
    "2001:db8::2": 0,
}


@pytest.mark.parametrize(("address", "index"), sorted(NGINX_IP_HASH.items()))
def test_matches_nginx_with_three_equal_peers(address: str, index: int) -> None:
    peers = make_peers(1, 1, 1)
    assert IpHash(peers).pick(tuple(peers), address.encode()) is peers[index]


@pytest.mark.parametrize("weights", [[1, 1, 1], [5, 2, 1], [2, 1, 1, 3, 1]])
def test_matches_reference_model(weights: list[int]) -> None:
    peers = make_peers(*weights)
    balancer = IpHash(peers)
    everyone = set(range(len(peers)))
    for address in ADDRESSES:
        got = balancer.pick(tuple(peers), address.encode())
        assert got.index == reference_ip_hash(address, weights, everyone)


def test_a_whole_ipv4_slash_24_sticks_to_one_peer() -> None:
    peers = make_peers(1, 1, 1)
    balancer = IpHash(peers)
    chosen = {balancer.pick(tuple(peers), f"192.168.1.{i}".encode()).index for i in range(256)}
    assert len(chosen) == 1
    # ... while different /24s spread over every peer.
    spread = {balancer.pick(tuple(peers), f"192.168.{i}.1".encode()).index for i in range(64)}
    assert spread == {0, 1, 2}


def test_ipv6_uses_the_whole_address() -> None:
    peers = make_peers(1, 1, 1)
    balancer = IpHash(peers)
    chosen = {balancer.pick(tuple(peers), f"2001:db8::{i:x}".encode()).index for i in range(64)}
    assert chosen == {0, 1, 2}


def test_rehashes_past_peers_that_are_not_candidates() -> None:
    peers = make_peers(1, 1, 1)
    balancer = IpHash(peers)
    candidates = [peers[0], peers[2]]
    moved = 0
    for address in ADDRESSES:
        got = balancer.pick(candidates, address.encode())
        assert got.index == reference_ip_hash(address, [1, 1, 1], {0, 2})
        moved += reference_ip_hash(address, [1, 1, 1], {0, 1, 2}) == 1
    assert moved > 20


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"192.168.1.7", bytes([192, 168, 1])),
        (b"::1", bytes(15) + b"\x01"),
        (b"fe80::1%eth0", bytes([0xFE, 0x80]) + bytes(13) + b"\x01"),
        (b"::ffff:1.2.3.4", bytes(10) + b"\xff\xff\x01\x02\x03\x04"),
        # Not an IP address (a Unix socket, garbage, lax spellings): nginx's 0.0.0.
        (b"unix:", b"\0\0\0"),
        (b"", b"\0\0\0"),
        (b"1.2.3", b"\0\0\0"),
        (b"1.2.3.256", b"\0\0\0"),
        (b" 1.2.3.4", b"\0\0\0"),
        (b"1.2.3.4\x00", b"\0\0\0"),
        ("\u0661.2.3.4".encode(), b"\0\0\0"),  # an Arabic-Indic digit
    ],
)
def test_hashed_bytes(key: bytes, expected: bytes) -> None:
    assert hashed_bytes(key) == expected


def test_non_ip_clients_all_share_one_peer() -> None:
    peers = make_peers(1, 1, 1)
    balancer = IpHash(peers)
    chosen = {balancer.pick(tuple(peers), key).index for key in (b"unix:", b"", b"x")}
    assert len(chosen) == 1
    assert chosen == {balancer.pick(tuple(peers), b"0.0.0.9").index}


def test_single_peer_group_uses_it() -> None:
    peers = make_peers(1)
    assert IpHash(peers).pick(tuple(peers), b"10.0.0.1") is peers[0]


def test_gives_up_after_21_looks_and_round_robins() -> None:
    peers = make_peers(1, 1)
    backups = [PeerState(PeerSpec("10.9.9.9", 80 + i, backup=True), 2 + i) for i in range(2)]
    balancer = IpHash([*peers, *backups])
    got = [balancer.pick(backups, b"10.0.0.1").spec.port for _ in range(4)]
    assert got == [80, 81, 80, 81]


def test_failure_lowers_effective_weight_like_round_robin() -> None:
    peers = make_peers(2, 1)
    balancer = IpHash(peers)
    balancer.release(peers[0], Outcome.FAILURE)
    assert peers[0].effective_weight == 0
    assert "total_weight=3" in repr(balancer)
