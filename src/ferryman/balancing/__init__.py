"""Load-balancing strategies: pure selection among eligible peers, picked by name.

Each strategy is one module deriving from the `Balancer` base class (`pick` + `release`);
`registry` maps configured names to them. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from ferryman.balancing.base import Balancer, Outcome
from ferryman.balancing.hash import ConsistentHash, Hash
from ferryman.balancing.ip_hash import IpHash
from ferryman.balancing.least_conn import LeastConn
from ferryman.balancing.least_time import LeastTime
from ferryman.balancing.peak_ewma import PeakEwma
from ferryman.balancing.random_pick import RandomPick
from ferryman.balancing.registry import create_balancer, known_balancers
from ferryman.balancing.round_robin import RoundRobin

__all__ = [
    "Balancer",
    "ConsistentHash",
    "Hash",
    "IpHash",
    "LeastConn",
    "LeastTime",
    "Outcome",
    "PeakEwma",
    "RandomPick",
    "RoundRobin",
    "create_balancer",
    "known_balancers",
]
