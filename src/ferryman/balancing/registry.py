"""Balancers by name: the table `UpstreamSpec.balance` is looked up in.

Owns the mapping from a configured name to a factory; knows nothing of how a strategy
works. Adding a strategy means one module plus one row here (nginx's directive-per-module
`ngx_http_upstream_*`; uvicorn's `HTTP_PROTOCOLS`). The table is read-only program
configuration, not runtime state, so it may live at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from ferryman.balancing.base import Balancer
from ferryman.balancing.hash import ConsistentHash, Hash
from ferryman.balancing.ip_hash import IpHash
from ferryman.balancing.least_conn import LeastConn
from ferryman.balancing.least_time import LeastTime
from ferryman.balancing.peak_ewma import PeakEwma
from ferryman.balancing.random_pick import RandomPick
from ferryman.balancing.round_robin import RoundRobin
from ferryman.config.schema import UpstreamSpec

if TYPE_CHECKING:
    from ferryman.upstream.peer import PeerState

__all__ = ["BALANCERS", "BalancerFactory", "create_balancer", "known_balancers"]

# A factory gets the whole spec, so that strategies needing more (a hash key, a method)
# read it without changing this signature, and every peer of the group (backups too):
# hash, ip_hash and random lay out the whole tier, not just the peers eligible now.
BalancerFactory = Callable[[UpstreamSpec, Sequence["PeerState"]], Balancer]


def _round_robin(spec: UpstreamSpec, peers: Sequence[PeerState]) -> Balancer:
    return RoundRobin()


def _least_conn(spec: UpstreamSpec, peers: Sequence[PeerState]) -> Balancer:
    return LeastConn()


def _hash(spec: UpstreamSpec, peers: Sequence[PeerState]) -> Balancer:
    _need_peers(spec, peers)
    return ConsistentHash(peers) if spec.consistent else Hash(peers)


def _ip_hash(spec: UpstreamSpec, peers: Sequence[PeerState]) -> Balancer:
    _need_peers(spec, peers)
    return IpHash(peers)


def _random(spec: UpstreamSpec, peers: Sequence[PeerState]) -> Balancer:
    _need_peers(spec, peers)
    return RandomPick(
        peers,
        two=spec.random_two,
        method=spec.random_method,
        last_byte=_last_byte(spec),
    )


def _least_time(spec: UpstreamSpec, peers: Sequence[PeerState]) -> Balancer:
    return LeastTime(peers, last_byte=_last_byte(spec))


def _peak_ewma(spec: UpstreamSpec, peers: Sequence[PeerState]) -> Balancer:
    return PeakEwma(peers, last_byte=_last_byte(spec))


def _last_byte(spec: UpstreamSpec) -> bool:
    if spec.least_time not in ("header", "last_byte"):
        raise ValueError(
            f"upstream {spec.name!r}: least_time must be header or last_byte, "
            f"not {spec.least_time!r}"
        )
    return spec.least_time == "last_byte"


def _need_peers(spec: UpstreamSpec, peers: Sequence[PeerState]) -> None:
    # Without the peers there is no table to hash into: a programming error, not config.
    if not peers:
        raise ValueError(
            f"upstream {spec.name!r}: balancer {spec.balance!r} needs the group's peers"
        )


# Names are exact (no aliases): one spelling in configs, logs and docs.
BALANCERS: Final[Mapping[str, BalancerFactory]] = MappingProxyType(
    {
        "round_robin": _round_robin,
        "least_conn": _least_conn,
        "hash": _hash,
        "ip_hash": _ip_hash,
        "random": _random,
        "least_time": _least_time,
        "peak_ewma": _peak_ewma,
    }
)


def known_balancers() -> tuple[str, ...]:
    return tuple(BALANCERS)


def create_balancer(name: str, spec: UpstreamSpec, peers: Sequence[PeerState] = ()) -> Balancer:
    """A new balancer named `name` for upstream `spec` and its `peers` (all of them, in
    `PeerState.index` order; hash, ip_hash and random need them). KeyError naming the
    known ones if `name` is not one."""
    try:
        factory = BALANCERS[name]
    except KeyError:
        known = ", ".join(known_balancers())
        raise KeyError(
            f"unknown balancer {name!r} for upstream {spec.name!r}; known: {known}"
        ) from None
    return factory(spec, peers)
