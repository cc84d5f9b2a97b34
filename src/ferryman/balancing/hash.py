"""`hash KEY [consistent]`: the same key goes to the same peer, as nginx maps it.

Owns the mapping from a request's hash key (already built from `$request_uri`,
`$remote_addr`, ... by the caller; here it is just bytes) to a peer, so that Ferryman
and nginx in front of the same servers send a given key to the same one. Knows nothing
of variables, health or tried peers: a peer the mapping lands on that is not among the
candidates is skipped the way nginx skips an unusable one.

Two methods, both from ngx_http_upstream_hash_module.c:

- `Hash` (plain): crc32 of the key, Cache::Memcached style. Each try adds
  `(crc32(TRY KEY) >> 16) & 0x7fff` to a running sum (TRY is the decimal try number,
  absent on the first), and the sum modulo the total weight picks a weight slot.
  Adding or removing a server moves most keys.
- `ConsistentHash` (`consistent`): a ketama ring, Cache::Memcached::Fast style. Each
  peer puts `160 * weight` points on it, point j being `crc32(HOST "\\0" PORT PREV)`
  with PREV the previous point's value as 4 little-endian bytes (zero for the first);
  a key goes to the first point at or after `crc32(KEY)`, clockwise. Removing one of N
  servers moves only the keys that were on its points, about 1/N of them.

Both give up after 20 skips (21 looks) and fall back to smooth weighted round-robin
over the candidates, as nginx does; so do an empty key and a group with one peer.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from ferryman.balancing.base import Balancer, Outcome
from ferryman.balancing.round_robin import RoundRobin, lower_effective_weight
from ferryman.balancing.weighted import WeightTable

if TYPE_CHECKING:
    from ferryman.upstream.peer import PeerState

__all__ = ["ConsistentHash", "Hash", "ring_points"]

# nginx: `if (++hp->tries > 20)` falls back to round-robin, so 21 looks in all.
_LOOKS: Final = 21
# crc32 state after the decimal try number that prefixes the key on try 1..20.
_RETRY_PREFIX: Final = tuple(zlib.crc32(str(n).encode("ascii")) for n in range(_LOOKS))
# Ketama: points per unit of weight (nginx, libketama, Cache::Memcached::Fast).
_POINTS_PER_WEIGHT: Final = 160


class Hash(Balancer):
    """nginx `hash KEY` without `consistent`."""

    __slots__ = ("_rr", "_table")

    def __init__(self, peers: Sequence[PeerState]) -> None:
        self._table = WeightTable(peers)
        self._rr = RoundRobin()

    def pick(self, candidates: Sequence[PeerState], key: bytes = b"") -> PeerState:
        table = self._table
        # nginx: `peers->number < 2 || key.len == 0` -> round-robin.
        if len(table.peers) < 2 or not key:
            return self._rr.pick(candidates, key)
        total_weight = table.total_weight
        acc = 0
        for tries in range(_LOOKS):
            crc = zlib.crc32(key, _RETRY_PREFIX[tries]) if tries else zlib.crc32(key)
            acc += (crc >> 16) & 0x7FFF
            peer = table.at(acc % total_weight)
            if table.is_candidate(peer, candidates):
                return peer
        return self._rr.pick(candidates, key)

    def release(self, peer: PeerState, outcome: Outcome) -> None:
        # nginx frees hash peers through the round-robin free.
        lower_effective_weight(peer, outcome)

    def hears_every_outcome(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Hash({self._table!r})"


def ring_points(server: str, weight: int) -> list[int]:
    """The ketama points of one peer, in generation order (ngx_http_upstream_update_chash).

    `server` is the address as configured, `host:port` (`[v6]:port`): nginx splits it
    at the last colon followed only by digits.
    """
    host, sep, port = server.rpartition(":")
    if not sep or not (port.isascii() and (port.isdigit() or not port)):
        host, port = server, ""
    base = zlib.crc32(host.encode() + b"\0" + port.encode())
    points: list[int] = []
    prev = 0
    for _ in range(_POINTS_PER_WEIGHT * weight):
        prev = zlib.crc32(prev.to_bytes(4, "little"), base)
        points.append(prev)
    return points


class ConsistentHash(Balancer):
    """nginx `hash KEY consistent`: a ketama ring over the primary peers."""

    __slots__ = ("_hashes", "_owners", "_rr", "_servers", "_table")

    def __init__(self, peers: Sequence[PeerState]) -> None:
        self._table = WeightTable(peers)
        self._rr = RoundRobin()
        # Peers sharing a configured address share its points (nginx matches points to
        # peers by `peer->server`); `_servers[s]` are the peers of server s.
        slot_of: dict[str, int] = {}
        servers: list[list[PeerState]] = []
        pairs: list[tuple[int, int]] = []
        for peer in self._table.peers:
            address = peer.spec.address
            slot = slot_of.setdefault(address, len(servers))
            if slot == len(servers):
                servers.append([])
            servers[slot].append(peer)
            pairs.extend((h, slot) for h in ring_points(address, peer.spec.weight))
        # Sorted by hash; on equal hashes the first configured server keeps the point
        # (nginx keeps whichever its qsort puts first: only a crc32 collision differs).
        pairs.sort(key=_point_hash)
        hashes: list[int] = []
        owners: list[int] = []
        for h, slot in pairs:
            if not hashes or hashes[-1] != h:
                hashes.append(h)
                owners.append(slot)
        self._hashes = hashes
        self._owners = owners
        self._servers: tuple[tuple[PeerState, ...], ...] = tuple(tuple(s) for s in servers)

    def pick(self, candidates: Sequence[PeerState], key: bytes = b"") -> PeerState:
        hashes = self._hashes
        # nginx: `peers->single || key.len == 0` -> round-robin.
        if len(self._table.peers) < 2 or not key or not hashes:
            return self._rr.pick(candidates, key)
        count = len(hashes)
        # The first point at or after the key's hash, wrapping past the last.
        at = bisect_left(hashes, zlib.crc32(key))
        for tries in range(_LOOKS):
            peer = self._at_server(self._owners[(at + tries) % count], candidates)
            if peer is not None:
                return peer
        return self._rr.pick(candidates, key)

    def _at_server(self, slot: int, candidates: Sequence[PeerState]) -> PeerState | None:
        """The peer of server `slot` to use, or None if none of its peers is a candidate.

        nginx runs smooth weighted round-robin over the server's eligible peers; with the
        usual one peer per server that only lets a penalised peer regain one point.
        """
        peers = self._servers[slot]
        table = self._table
        if len(peers) == 1:
            peer = peers[0]
            if not table.is_candidate(peer, candidates):
                return None
            if peer.effective_weight < peer.weight:
                peer.effective_weight += 1
            return peer
        eligible = [p for p in peers if table.is_candidate(p, candidates)]
        if not eligible:
            return None
        return self._rr.pick(eligible, b"")

    def release(self, peer: PeerState, outcome: Outcome) -> None:
        lower_effective_weight(peer, outcome)

    def hears_every_outcome(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"ConsistentHash({len(self._servers)} servers, {len(self._hashes)} points)"


def _point_hash(pair: tuple[int, int]) -> int:
    return pair[0]
