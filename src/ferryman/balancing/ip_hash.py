"""`ip_hash`: a client address sticks to one peer, as nginx maps it.

Owns the mapping from the client address (the `key`, as ASCII text: b"192.168.1.7",
b"2001:db8::1") to a peer. Knows nothing of sockets, `X-Forwarded-For` or health: the
caller decides which address is the client's, the group which peers are eligible.

The algorithm is ngx_http_upstream_ip_hash_module.c. The hash reads the first three
octets of an IPv4 address (so a whole /24 lands on one peer, which keeps clients behind
a NAT pool together) or all 16 bytes of an IPv6 one; anything else (a Unix socket)
hashes like the three bytes 0.0.0. Starting from 89, each byte does
`hash = (hash * 113 + byte) % 6271`, and `hash % total_weight` picks a weight slot. If
that peer is not a candidate, the same loop runs again from the current hash, up to 20
times, then smooth weighted round-robin takes over.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from ferryman.balancing.base import Balancer, Outcome
from ferryman.balancing.round_robin import RoundRobin, lower_effective_weight
from ferryman.balancing.weighted import WeightTable

if TYPE_CHECKING:
    from ferryman.upstream.peer import PeerState

__all__ = ["IpHash", "hashed_bytes"]

_LOOKS: Final = 21
# nginx `ngx_http_upstream_ip_hash_pseudo_addr`: what a non-IP client hashes as.
_PSEUDO: Final = b"\0\0\0"


def hashed_bytes(key: bytes) -> bytes:
    """The address bytes nginx's ip_hash reads: 3 for IPv4, 16 for IPv6, else 3 zeros.

    Parsing is `inet_pton`'s, which is strict (no `+1`, octal, or spaces); an IPv4
    address written in IPv6 form (`::ffff:1.2.3.4`) is IPv6, as it is for nginx on a
    dual-stack socket.
    """
    try:
        text = key.decode("ascii")
    except UnicodeDecodeError:
        return _PSEUDO
    try:
        if ":" in text:
            # A zone index (`fe80::1%eth0`) is not part of the address.
            return socket.inet_pton(socket.AF_INET6, text.partition("%")[0])
        return socket.inet_pton(socket.AF_INET, text)[:3]
    except (OSError, ValueError):
        return _PSEUDO


class IpHash(Balancer):
    """The `ip_hash` balancer."""

    __slots__ = ("_rr", "_table")

    def __init__(self, peers: Sequence[PeerState]) -> None:
        self._table = WeightTable(peers)
        self._rr = RoundRobin()

    def pick(self, candidates: Sequence[PeerState], key: bytes = b"") -> PeerState:
        table = self._table
        # nginx: `peers->number < 2` -> round-robin.
        if len(table.peers) < 2:
            return self._rr.pick(candidates, key)
        address = hashed_bytes(key)
        total_weight = table.total_weight
        h = 89
        for _ in range(_LOOKS):
            for byte in address:
                h = (h * 113 + byte) % 6271
            peer = table.at(h % total_weight)
            if table.is_candidate(peer, candidates):
                return peer
        return self._rr.pick(candidates, key)

    def release(self, peer: PeerState, outcome: Outcome) -> None:
        # nginx frees ip_hash peers through the round-robin free.
        lower_effective_weight(peer, outcome)

    def hears_every_outcome(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"IpHash({self._table!r})"
