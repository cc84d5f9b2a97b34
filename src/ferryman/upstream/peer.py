"""Runtime state of one peer, apart from its frozen spec.

`PeerState` is mutable and keyed by address, so a reload can carry it over for peers
that did not change. Balancers read and write the fields they own (`current_weight`,
`effective_weight`); the group owns `active`; passive health owns `health`.
"""

from __future__ import annotations

from ferryman.config.schema import PeerSpec
from ferryman.health.passive import PassiveHealth

__all__ = ["PeerState"]


class PeerState:
    __slots__ = (
        "active",
        "connect_host",
        "current_weight",
        "drained",
        "effective_weight",
        "health",
        "index",
        "last_header_time",
        "last_total_time",
        "latency",
        "name",
        "probe_down",
        "recovered_at",
        "requests",
        "slot",
        "spec",
        "weight",
        "weight_now",
    )

    def __init__(self, spec: PeerSpec, index: int, connect_host: str | None = None) -> None:
        self.spec = spec
        self.index = index
        # The address to connect to, after --add-host / DNS; `spec.host` may be a name.
        self.connect_host = connect_host or spec.host
        # What logs and headers show ($upstream_addr): the resolved address, as nginx does.
        self.name = (
            f"[{self.connect_host}]:{spec.port}"
            if ":" in self.connect_host
            else f"{self.connect_host}:{spec.port}"
        )
        self.active = 0
        self.requests = 0
        # Smooth weighted round-robin state (nginx ngx_http_upstream_round_robin.c).
        self.current_weight = 0
        self.effective_weight = spec.weight
        self.health = PassiveHealth(spec.max_fails, spec.fail_timeout)
        # Timings of the last finished request (seconds, -1: not measured), and the
        # decayed average a latency-aware balancer keeps (0: no sample yet).
        self.last_header_time = -1.0
        self.last_total_time = -1.0
        self.latency = 0.0
        # Active health (set from the shared table each tick) and this peer's slot in it.
        self.probe_down = False
        self.slot = -1
        # Admin API drain (upstream/overrides.py): selected by no new request.
        self.drained = False
        # slow_start: when the peer became usable again, and the weight it has now
        # (spec.weight except while ramping back up).
        self.recovered_at = float("-inf")
        self.weight_now = spec.weight
        # spec.weight, kept beside it (set_weight changes both): the balancers read it
        # per candidate per request, and a frozen spec's field is a lookup by name.
        self.weight = spec.weight

    def __repr__(self) -> str:
        return (
            f"PeerState({self.name} w={self.spec.weight} active={self.active} "
            f"cw={self.current_weight} ew={self.effective_weight} {self.health!r})"
        )
