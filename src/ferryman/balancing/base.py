"""The Balancer interface: `pick` one of the eligible peers, `release` it with the outcome.

A balancer never opens a connection, never reads a clock of its own and never filters
by health: the upstream group hands it only peers that may be used now, and counts
in-flight requests (`PeerState.active`) itself. (nginx ngx_http_upstream_*: get/free.)
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ferryman.upstream.peer import PeerState

__all__ = ["Balancer", "Outcome"]


class Outcome(enum.Enum):
    SUCCESS = "success"
    # Counts against max_fails (connect error, timeout, invalid response).
    FAILURE = "failure"
    # Neither: e.g. the client went away mid-request.
    NEUTRAL = "neutral"


class Balancer(Protocol):
    def pick(self, candidates: Sequence[PeerState], key: bytes) -> PeerState:
        """Choose one of `candidates` (never empty, all eligible now). `key` is the
        request's hash key for keyed strategies (hash, ip_hash), else b""."""
        ...

    def release(self, peer: PeerState, outcome: Outcome) -> None:
        """The request sent to `peer` is over. Timings of it, when the group measured
        them, are on `peer.last_header_time` / `peer.last_total_time` (seconds)."""
        ...
