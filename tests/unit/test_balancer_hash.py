"""`hash KEY [consistent]`: the same keys go to the same servers as with nginx.

Expected values come from two places: answers observed from nginx 1.22.1 in front of
three servers (`NGINX_*` tables), and a reference model written here from the algorithm
in ngx_http_upstream_hash_module.c, with its own bitwise CRC-32 (no zlib), so that the
balancer's use of zlib's running crc is checked too.
"""

from __future__ import annotations

from bisect import bisect_left

import pytest

from ferryman.balancing import ConsistentHash, Hash, Outcome
from ferryman.balancing.hash import ring_points
from ferryman.config.schema import PeerSpec
from ferryman.upstream.peer import PeerState


def make_peers(*weights: int, host: str = "127.0.0.1", port: int = 18081) -> list[PeerState]:
    return [PeerState(PeerSpec(host, port + i, weight=w), i) for i, w in enumerate(weights)]


def crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, reflected), bit by bit: nginx's ngx_crc32_short/long."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


KEYS = [f"/item/{i}".encode() for i in range(150)] + [
    b"foo",
    b"/",
    b"user-42",
    "ключ".encode(),
    b"\x00\xff",
]


# Plain hash -------------------------------------------------------------------------


def reference_hash(key: bytes, weights: list[int], eligible: set[int]) -> int | None:
    """ngx_http_upstream_get_hash_peer: index of the peer, None if it gives up."""
    total = sum(weights)
    acc = 0
    for tries in range(21):
        prefix = str(tries).encode() if tries else b""
        acc += (crc32(prefix + key) >> 16) & 0x7FFF
        w = acc % total
        p = 0
        while w >= weights[p]:
            w -= weights[p]
            p += 1
        if p in eligible:
            return p
    return None


# Observed from nginx 1.22.1: `hash $arg_k;` over 127.0.0.1:18081..18083 (index 0..2),
# and the same with weights 5, 2, 1.
NGINX_HASH_EQUAL = {
    b"foo": 1,
    b"bar": 1,
    b"/": 2,
    b"/index.html": 2,
    b"/api/v1/users": 2,
    b"/static/app.js": 2,
    b"user-42": 2,
    b"hello": 1,
}
NGINX_HASH_5_2_1 = {
    b"foo": 0,
    b"bar": 2,
    b"/": 0,
    b"/index.html": 0,
    b"/api/v1/users": 1,
    b"/static/app.js": 0,
    b"user-42": 1,
    b"hello": 0,
}


@pytest.mark.parametrize(("key", "index"), sorted(NGINX_HASH_EQUAL.items()))
def test_hash_matches_nginx_with_three_equal_peers(key: bytes, index: int) -> None:
    peers = make_peers(1, 1, 1)
    assert Hash(peers).pick(tuple(peers), key) is peers[index]


@pytest.mark.parametrize(("key", "index"), sorted(NGINX_HASH_5_2_1.items()))
def test_hash_matches_nginx_with_weights(key: bytes, index: int) -> None:
    peers = make_peers(5, 2, 1)
    assert Hash(peers).pick(tuple(peers), key) is peers[index]


@pytest.mark.parametrize("weights", [[1, 1, 1], [5, 2, 1], [1, 3, 1, 2, 7, 1]])
def test_hash_matches_reference_model(weights: list[int]) -> None:
    peers = make_peers(*weights)
    balancer = Hash(peers)
    everyone = set(range(len(peers)))
    for key in KEYS:
        assert balancer.pick(tuple(peers), key).index == reference_hash(key, weights, everyone)


def test_hash_rehashes_past_peers_that_are_not_candidates() -> None:
    peers = make_peers(1, 1, 1)
    balancer = Hash(peers)
    candidates = [peers[0], peers[2]]
    moved = 0
    for key in KEYS:
        got = balancer.pick(candidates, key)
        assert got.index == reference_hash(key, [1, 1, 1], {0, 2})
        if reference_hash(key, [1, 1, 1], {0, 1, 2}) == 1:
            moved += 1
        else:
            # A key whose peer is a candidate stays where it was.
            assert got is balancer.pick(tuple(peers), key)
    assert moved > 20  # the rehash path really ran


def test_hash_spreads_keys_by_weight() -> None:
    peers = make_peers(3, 1)
    balancer = Hash(peers)
    counts = [0, 0]
    for i in range(4000):
        counts[balancer.pick(tuple(peers), f"/k/{i}".encode()).index] += 1
    assert abs(counts[0] / 4000 - 0.75) < 0.03


def test_hash_empty_key_falls_back_to_round_robin() -> None:
    peers = make_peers(1, 1, 1)
    balancer = Hash(peers)
    assert [balancer.pick(tuple(peers), b"").index for _ in range(6)] == [0, 1, 2, 0, 1, 2]


def test_hash_single_peer_group_uses_it() -> None:
    peers = make_peers(1)
    assert Hash(peers).pick(tuple(peers), b"anything") is peers[0]


def test_hash_gives_up_after_21_looks_and_round_robins() -> None:
    # Candidates the table does not hold (a backup tier) can never be hit by the hash.
    peers = make_peers(1, 1)
    backups = [PeerState(PeerSpec("10.9.9.9", 80 + i, backup=True), 2 + i) for i in range(2)]
    balancer = Hash([*peers, *backups])
    got = [balancer.pick(backups, b"/same").spec.port for _ in range(4)]
    assert got == [80, 81, 80, 81]


def test_hash_is_stable_for_list_and_tuple_candidates() -> None:
    peers = make_peers(1, 1, 1, 1)
    balancer = Hash(peers)
    for key in KEYS[:40]:
        assert balancer.pick(list(peers), key) is balancer.pick(tuple(peers), key)


def test_hash_failure_lowers_effective_weight_like_round_robin() -> None:
    peers = make_peers(4, 1)
    Hash(peers).release(peers[0], Outcome.FAILURE)
    assert peers[0].effective_weight == 0


# Consistent hash ---------------------------------------------------------------------


def reference_points(server: str, weight: int) -> list[int]:
    """ngx_http_upstream_update_chash for one peer: crc32(HOST \\0 PORT PREV_HASH)."""
    host, _, port = server.rpartition(":")
    points = []
    prev = 0
    for _ in range(160 * weight):
        prev = crc32(host.encode() + b"\0" + port.encode() + prev.to_bytes(4, "little"))
        points.append(prev)
    return points


class ReferenceRing:
    def __init__(self, peers: list[PeerState]) -> None:
        pairs = sorted(
            (h, p.index) for p in peers for h in reference_points(p.spec.address, p.spec.weight)
        )
        self.hashes = [h for h, _ in pairs]
        self.owners = [i for _, i in pairs]

    def lookup(self, key: bytes, eligible: set[int]) -> int | None:
        at = bisect_left(self.hashes, crc32(key))
        for tries in range(21):
            owner = self.owners[(at + tries) % len(self.hashes)]
            if owner in eligible:
                return owner
        return None


# Observed from nginx 1.22.1: `hash $arg_k consistent;` over 127.0.0.1:18081..18083.
NGINX_CHASH_EQUAL = {
    b"foo": 0,
    b"bar": 2,
    b"/": 0,
    b"/index.html": 2,
    b"/api/v1/users": 0,
    b"/static/app.js": 1,
    b"user-42": 0,
    b"hello": 2,
}


@pytest.mark.parametrize(("key", "index"), sorted(NGINX_CHASH_EQUAL.items()))
def test_consistent_matches_nginx_with_three_equal_peers(key: bytes, index: int) -> None:
    peers = make_peers(1, 1, 1)
    assert ConsistentHash(peers).pick(tuple(peers), key) is peers[index]


def test_ring_points_are_nginx_ketama_points() -> None:
    for server, weight in [("127.0.0.1:18081", 1), ("backend.example:8080", 2)]:
        assert ring_points(server, weight) == reference_points(server, weight)
    # An IPv6 address splits at its last colon: host "[::1]", port "8080".
    assert ring_points("[::1]:8080", 1) == reference_points("[::1]:8080", 1)
    assert len(ring_points("a:1", 3)) == 480


@pytest.mark.parametrize("weights", [[1, 1, 1], [3, 1, 2], [1, 1, 1, 1, 1]])
def test_consistent_matches_reference_ring(weights: list[int]) -> None:
    peers = make_peers(*weights)
    ring = ReferenceRing(peers)
    balancer = ConsistentHash(peers)
    for key in KEYS:
        assert balancer.pick(tuple(peers), key).index == ring.lookup(key, set(range(len(peers))))


def mapping(balancer: ConsistentHash, candidates: list[PeerState], n: int) -> list[str]:
    return [balancer.pick(candidates, f"/obj/{i}".encode()).name for i in range(n)]


def test_removing_one_of_n_peers_moves_about_one_nth_of_keys() -> None:
    n_keys = 5000
    peers = make_peers(*[1] * 10, host="10.0.0.1", port=9000)
    before = mapping(ConsistentHash(peers), peers, n_keys)
    gone = peers[3]
    rest = [p for p in peers if p is not gone]
    after = mapping(ConsistentHash(rest), rest, n_keys)
    moved = [i for i in range(n_keys) if before[i] != after[i]]
    # Only the keys of the removed peer move, and they are about 1/N of all.
    assert all(before[i] == gone.name for i in moved)
    assert sum(1 for b in before if b == gone.name) == len(moved)
    assert abs(len(moved) / n_keys - 0.1) < 0.03
    # They spread over the others instead of piling onto one neighbour.
    assert len({after[i] for i in moved}) >= 5


def test_adding_a_peer_only_takes_keys_for_itself() -> None:
    n_keys = 5000
    peers = make_peers(*[1] * 5, host="10.0.0.1", port=9000)
    before = mapping(ConsistentHash(peers[:4]), peers[:4], n_keys)
    after = mapping(ConsistentHash(peers), peers, n_keys)
    moved = [i for i in range(n_keys) if before[i] != after[i]]
    assert all(after[i] == peers[4].name for i in moved)
    assert abs(len(moved) / n_keys - 0.2) < 0.04


def test_a_peer_that_is_not_a_candidate_is_skipped_clockwise() -> None:
    # Walking past a down peer's points gives what a ring without it gives.
    n_keys = 2000
    peers = make_peers(*[1] * 5, host="10.0.0.1", port=9000)
    down = peers[2]
    rest = [p for p in peers if p is not down]
    skipped = mapping(ConsistentHash(peers), rest, n_keys)
    assert skipped == mapping(ConsistentHash(rest), rest, n_keys)
    assert down.name not in skipped


def test_weight_gives_a_proportional_share_of_the_ring() -> None:
    peers = make_peers(3, 1, host="10.0.0.1", port=9000)
    names = mapping(ConsistentHash(peers), peers, 8000)
    assert abs(names.count(peers[0].name) / 8000 - 0.75) < 0.05


def test_consistent_empty_key_and_single_peer_use_round_robin() -> None:
    peers = make_peers(1, 1)
    balancer = ConsistentHash(peers)
    assert [balancer.pick(tuple(peers), b"").index for _ in range(4)] == [0, 1, 0, 1]
    one = make_peers(1)
    assert ConsistentHash(one).pick(tuple(one), b"k") is one[0]


def test_consistent_gives_up_after_21_points_and_round_robins() -> None:
    peers = make_peers(1, 1)
    backups = [PeerState(PeerSpec("10.9.9.9", 80 + i, backup=True), 2 + i) for i in range(2)]
    balancer = ConsistentHash([*peers, *backups])
    got = [balancer.pick(backups, b"/same").spec.port for _ in range(4)]
    assert got == [80, 81, 80, 81]


def test_peers_sharing_an_address_share_its_points_and_rotate() -> None:
    # nginx matches ring points to peers by their configured server; two peers with
    # the same one (a name resolving to two addresses) share the points and alternate.
    spec = PeerSpec("backend.example", 80)
    twins = [PeerState(spec, 0, "10.0.0.1"), PeerState(spec, 1, "10.0.0.2")]
    other = PeerState(PeerSpec("other.example", 80), 2)
    peers = [*twins, other]
    balancer = ConsistentHash(peers)
    key = next(
        k for k in (f"/t/{i}".encode() for i in range(100)) if balancer.pick(peers, k) is not other
    )
    got = {balancer.pick(peers, key).connect_host for _ in range(4)}
    assert got == {"10.0.0.1", "10.0.0.2"}


def test_consistent_penalised_peer_regains_a_point_when_picked() -> None:
    peers = make_peers(3, 3)
    balancer = ConsistentHash(peers)
    for p in peers:
        balancer.release(p, Outcome.FAILURE)
        assert p.effective_weight == 0
    chosen = balancer.pick(tuple(peers), b"k")
    assert chosen.effective_weight == 1


def test_repr_says_what_it_holds() -> None:
    peers = make_peers(1, 2)
    assert "2 peers" in repr(Hash(peers)) and "total_weight=3" in repr(Hash(peers))
    assert "2 servers" in repr(ConsistentHash(peers))
