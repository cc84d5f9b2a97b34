"""One worker's membership in the cluster: builds and runs the shared parts.

Owns the wiring (app.py calls `join` while building a worker) and the background
tasks (Redis watcher, bus subscription, the lead worker's table watch, lease
renewal), started once the worker's loop runs and stopped when it drains. Knows
nothing about requests: the filters reach Redis through `limiter` (filters/base.py
SharedZones), the cache through each shared zone's SharedStore, health through the
group's `on_failure` hook and the machine's health table.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ferryman.cache.memory import MemoryStore
from ferryman.cluster.bus import ClusterBus
from ferryman.cluster.cache import SharedStore
from ferryman.cluster.client import ClusterClient
from ferryman.cluster.limiter import SharedLimiter
from ferryman.config.schema import ClusterSpec, Config

if TYPE_CHECKING:
    from ferryman.cache.handler import CacheZone
    from ferryman.health.shared import SharedHealth
    from ferryman.upstream.group import UpstreamGroup
    from ferryman.upstream.overrides import SharedOverrides
    from ferryman.upstream.peer import PeerState

__all__ = ["ClusterAgent", "peer_names"]

# The near tier (entries fetched from Redis) gets this share of the zone's memory.
_NEAR_SHARE: Final = 4


def peer_names(config: Config) -> dict[str, int]:
    """`UPSTREAM/ADDRESS` -> the peer's slot in the health table (app.py's numbering:
    peers across all upstreams, in configuration order)."""
    names: dict[str, int] = {}
    slot = 0
    for up in config.upstreams:
        for peer in up.servers:
            names[f"{up.name}/{peer.address}"] = slot
            slot += 1
    return names


class ClusterAgent:
    def __init__(self, spec: ClusterSpec, slot: int, client: ClusterClient | None = None) -> None:
        self.spec = spec
        self.client = client or ClusterClient.from_spec(spec)
        # Unique per worker process: bus messages carry it so a sender ignores its own.
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.limiter = SharedLimiter(self.client, self.instance, spec.lease_ttl)
        self.bus = ClusterBus(self.client, self.instance, lead=slot == 0)
        self.stores: dict[str, SharedStore] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def join(cls, config: Config, slot: int) -> ClusterAgent | None:
        return None if config.cluster is None else cls(config.cluster, slot)

    # ---- wiring (app.build_worker) ----

    def share_health(
        self, config: Config, health: SharedHealth, groups: list[UpstreamGroup]
    ) -> None:
        """Peers this worker sees fail are announced; others' announcements go into
        `health`, which every worker of the machine takes in each tick."""
        if not self.spec.health:
            return
        self.bus.share_health(health, peer_names(config))
        for group in groups:
            group.on_failure = self._announcing(group.on_failure)

    def _announcing(self, local: Callable[[PeerState], None] | None) -> Callable[[PeerState], None]:
        bus = self.bus

        def on_failure(peer: PeerState) -> None:
            if local is not None:
                local(peer)
            bus.announce_down(peer.slot, peer.health.unavailable_until - time.monotonic())

        return on_failure

    def share_overrides(self, config: Config, overrides: SharedOverrides) -> None:
        """Admin drains and weights made on any instance apply on all (lead worker)."""
        names = {
            f"{up.name}/{peer.address}": overrides.slot(up.name, peer.address)
            for up in config.upstreams
            for peer in up.servers
        }
        self.bus.share_overrides(overrides, names)

    def share_caches(self, config: Config, zones: dict[str, CacheZone]) -> None:
        """Each cache zone marked `shared` gets a Redis tier behind its store."""
        for spec in config.cache_zones:
            zone = zones.get(spec.name)
            if not spec.shared or zone is None:
                continue
            near = MemoryStore(
                max(1, spec.memory_size // _NEAR_SHARE), inactive=spec.inactive, clock=zone.clock
            )
            store = SharedStore(
                spec.name, zone.store, near, self.client, inactive=spec.inactive, clock=zone.clock
            )
            zone.store = store
            zone.remote = store
            self.stores[spec.name] = store
            self.bus.share_store(store)

    # ---- running ----

    def start(self) -> None:
        """Called on the worker's running loop."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self.client.start()
        self._tasks.append(loop.create_task(self.bus.listen()))
        self._tasks.append(loop.create_task(self.limiter.renew_forever()))
        if self.bus.lead:
            self._tasks.append(loop.create_task(self.bus.watch()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.limiter.stop()
        await self.bus.stop()
        for store in self.stores.values():
            await store.stop()
        await self.client.stop()

    def status(self) -> dict[str, Any]:
        """For logs, metrics and the admin API: is Redis in use, and the counters."""
        return {
            "redis": repr(self.client.target),
            "address": _address(self.client),
            "available": self.client.available,
            "checked": self.client.checked,
            "failed_calls": self.client.failures,
            "outages": self.client.outages,
            "local_fallbacks": self.limiter.fallbacks,
            "fallbacks": dict(self.client.fallbacks),
            "instances": self.bus.instances,
            "leases": len(self.limiter.leases),
            "bus_sent": self.bus.sent,
            "bus_received": self.bus.received,
        }

    def __repr__(self) -> str:
        return f"ClusterAgent({self.instance}, {self.client!r})"


def _address(client: ClusterClient) -> str:
    """Where Redis is, for people (no credentials): `host:port`, or the mode and nodes."""
    target = client.target
    nodes = ",".join(f"{h}:{p}" for h, p in target.nodes)
    if target.mode == "single":
        return nodes
    return f"{target.mode} {nodes}" + (f"/{target.service}" if target.service else "")
