"""Load-balancing strategies: pure selection among eligible peers, picked by name.

Each strategy is one module behind the `Balancer` protocol (`pick` + `release`);
`registry` maps configured names to them. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from ferryman.balancing.base import Balancer, Outcome
from ferryman.balancing.least_conn import LeastConn
from ferryman.balancing.registry import create_balancer, known_balancers
from ferryman.balancing.round_robin import RoundRobin

__all__ = [
    "Balancer",
    "LeastConn",
    "Outcome",
    "RoundRobin",
    "create_balancer",
    "known_balancers",
]
