"""The Balancer interface: `pick` one of the eligible peers, `release` it with the outcome.

A balancer never opens a connection, never reads a clock of its own and never filters
by health: the upstream group hands it only peers that may be used now, and counts
in-flight requests (`PeerState.active`) itself. (nginx ngx_http_upstream_*: get/free.)
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ferryman.upstream.peer import PeerState

__all__ = ["Balancer", "Outcome"]


class Outcome(enum.Enum):
    SUCCESS = "success"
    # Counts against max_fails (connect error, timeout, invalid response).
    FAILURE = "failure"
    # Neither: e.g. the client went away mid-request.
    NEUTRAL = "neutral"


class Balancer:
    """What every strategy derives from: `pick` and `release`, plus one question.

    A base class rather than a `typing.Protocol` so that the compiled build calls a
    strategy through its vtable: through a protocol each call is a method lookup by
    name, and the group makes one or two per request.
    """

    __slots__ = ()

    def pick(self, candidates: Sequence[PeerState], key: bytes = b"") -> PeerState:
        """Choose one of `candidates` (never empty, all eligible now). `key` is the
        request's hash key for keyed strategies (hash, ip_hash), else b""."""
        raise NotImplementedError

    def release(self, peer: PeerState, outcome: Outcome) -> None:
        """The request sent to `peer` is over. Timings of it, when the group measured
        them, are on `peer.last_header_time` / `peer.last_total_time` (seconds)."""
        raise NotImplementedError

    def hears_every_outcome(self) -> bool:
        """Whether `release` must be told of successes and neutral outcomes too. The
        strategies that learn from failures only (nginx's round-robin free) say no, and
        the group then skips the call on every request that went well."""
        return True
