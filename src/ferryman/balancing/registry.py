"""Balancers by name: the table `UpstreamSpec.balance` is looked up in.

Owns the mapping from a configured name to a factory; knows nothing of how a strategy
works. Adding a strategy means one module plus one row here (nginx's directive-per-module
`ngx_http_upstream_*`; uvicorn's `HTTP_PROTOCOLS`). The table is read-only program
configuration, not runtime state, so it may live at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from ferryman.balancing.base import Balancer
from ferryman.balancing.least_conn import LeastConn
from ferryman.balancing.round_robin import RoundRobin
from ferryman.config.schema import UpstreamSpec

__all__ = ["BALANCERS", "BalancerFactory", "create_balancer", "known_balancers"]

# A factory gets the whole spec so that strategies needing more (a hash key, a warm-up
# time) can read it without changing this signature.
BalancerFactory = Callable[[UpstreamSpec], Balancer]


def _round_robin(spec: UpstreamSpec) -> Balancer:
    return RoundRobin()


def _least_conn(spec: UpstreamSpec) -> Balancer:
    return LeastConn()


# Names are exact (no aliases): one spelling in configs, logs and docs.
BALANCERS: Final[Mapping[str, BalancerFactory]] = MappingProxyType(
    {
        "round_robin": _round_robin,
        "least_conn": _least_conn,
    }
)


def known_balancers() -> tuple[str, ...]:
    return tuple(BALANCERS)


def create_balancer(name: str, spec: UpstreamSpec) -> Balancer:
    """A new balancer for upstream `spec`; KeyError naming the known ones if `name` is not."""
    try:
        factory = BALANCERS[name]
    except KeyError:
        known = ", ".join(known_balancers())
        raise KeyError(
            f"unknown balancer {name!r} for upstream {spec.name!r}; known: {known}"
        ) from None
    return factory(spec)
