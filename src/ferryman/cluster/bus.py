"""The cluster's channel: what one instance learns that the others must act on, over
Redis pub/sub (channel `PREFIX:bus`).

Owns the messages and what a receiver does with each:

  down   a peer this instance saw fail (passive health: for the rest of its
         fail_timeout) or failing its active checks (announced every WATCH_INTERVAL
         while it fails, held PROBE_HOLD seconds): written into the machine's health
         table (health/shared.py), which every worker takes in each sweeper tick;
  ovr    an admin drain / weight override (upstream/overrides.py) changed here:
         written into the receivers' override table, which their workers apply;
  purge  a cache purge made here (cluster/cache.py): the key leaves the receivers'
         local and near tiers too (Redis's copy is already gone).

Peers are named `UPSTREAM/ADDRESS` as configured, so instances must run the same
upstream configuration (docs/cluster.md). Messages are JSON; anything malformed is
ignored. Only the lead worker (slot 0) of an instance writes health and overrides and
watches its tables; every worker takes purges (each has its own memory tiers). A lost
message (Redis down) is only a missed hint: each instance still learns by itself.
Knows nothing about requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from redis.exceptions import RedisError

from ferryman.cluster.client import RECONNECT_INTERVAL, Background, ClusterClient, Unavailable

if TYPE_CHECKING:
    from ferryman.cluster.cache import SharedStore
    from ferryman.health.shared import SharedHealth
    from ferryman.upstream.overrides import SharedOverrides

__all__ = ["MEMBERS", "MEMBER_TTL_MS", "PROBE_HOLD", "WATCH_INTERVAL", "ClusterBus"]

_log: Final = logging.getLogger(__name__)

# How often the lead worker looks at its health and override tables for news.
WATCH_INTERVAL: Final = 0.5
# How long another instance avoids a peer that fails our active checks, unless told
# again (we repeat it every WATCH_INTERVAL while it fails): it comes back at most this
# long after our checks pass again.
PROBE_HOLD: Final = 3.0
# Instances alive: a sorted set of members scored by expiry (Redis ms), refreshed by
# each instance's lead worker every 2 x WATCH_INTERVAL. ARGV: member, ttl (ms).
MEMBERS: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
"""
# An instance that stops refreshing drops out of the count after this.
MEMBER_TTL_MS: Final = 3000
# Announcing is off the request path.
_PUBLISH_TIMEOUT: Final = 1.0
# At most this many seconds of avoidance are accepted from a message.
_MAX_DOWN: Final = 3600.0


class ClusterBus:
    def __init__(
        self,
        client: ClusterClient,
        instance: str,
        *,
        lead: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._instance = instance
        self.lead = lead
        self._clock = clock  # the health table's clock: CLOCK_MONOTONIC
        self.channel = f"{client.spec.prefix}:bus"
        self._health: SharedHealth | None = None
        self._slots: dict[str, int] = {}  # peer name -> health slot
        self._names: dict[int, str] = {}
        self._overrides: SharedOverrides | None = None
        self._override_slots: dict[str, int] = {}  # peer name -> override slot
        self._override_seen: dict[str, tuple[bool, int]] = {}
        self._override_version = -1
        self._stores: dict[str, SharedStore] = {}
        self._background = Background()
        self.received = self.sent = 0
        self.instances = 0  # instances alive in Redis (lead worker, while Redis is up)
        self._members: Any = None  # the MEMBERS script, registered on first use

    # ---- what is shared ----

    def share_health(self, health: SharedHealth, peers: dict[str, int]) -> None:
        self._health = health
        self._slots = dict(peers)
        self._names = {slot: name for name, slot in peers.items()}

    def share_overrides(self, overrides: SharedOverrides, peers: dict[str, int]) -> None:
        self._overrides = overrides
        self._override_slots = {name: slot for name, slot in peers.items() if slot >= 0}
        for name, slot in self._override_slots.items():
            o = overrides.get(slot)
            self._override_seen[name] = (o.drained, o.weight)

    def share_store(self, store: SharedStore) -> None:
        self._stores[store.zone] = store
        store.on_purge = self.announce_purge

    # ---- sending ----

    def announce_down(self, slot: int, seconds: float) -> None:
        name = self._names.get(slot)
        if name is not None and seconds > 0:
            if not self._client.available:
                self._client.fell_back("health")  # learned here, kept here
                return
            self._send({"t": "down", "p": name, "s": round(seconds, 3)})

    def announce_purge(self, zone: str, key: str, prefix: bool) -> None:
        self._send({"t": "purge", "z": zone, "k": key, "x": prefix})

    def _send(self, message: dict[str, Any]) -> None:
        if not self._client.available:
            return
        message["i"] = self._instance
        data = json.dumps(message, separators=(",", ":"))
        self._background.spawn(self._publish(data))

    async def _publish(self, data: str) -> None:
        with contextlib.suppress(Unavailable, RedisError):
            await self._client.run(self._client.redis.publish(self.channel, data), _PUBLISH_TIMEOUT)
            self.sent += 1

    # ---- receiving ----

    async def listen(self) -> None:
        """Subscribed while Redis is reachable; subscribes again after an outage."""
        while True:
            if not self._client.available:
                await asyncio.sleep(RECONNECT_INTERVAL / 4)
                continue
            pubsub = self._client.redis.pubsub()
            try:
                async with asyncio.timeout(RECONNECT_INTERVAL):
                    await pubsub.subscribe(self.channel)
                while self._client.available:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=RECONNECT_INTERVAL
                    )
                    if message is not None and message.get("type") == "message":
                        self.handle(message["data"])
            except (RedisError, OSError, TimeoutError) as exc:
                # The client's watcher decides whether Redis is down; this only
                # subscribes again (a restarted Redis forgets its subscribers).
                _log.debug("cluster: bus subscription lost: %s", exc)
                await asyncio.sleep(RECONNECT_INTERVAL / 4)
            finally:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(RECONNECT_INTERVAL):
                        await pubsub.aclose()

    def handle(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("i") == self._instance:
            return
        self.received += 1
        kind = message.get("t")
        if kind == "purge":
            self._take_purge(message)
        elif not self.lead:
            return
        elif kind == "down":
            self._take_down(message)
        elif kind == "ovr":
            self._take_override(message)

    def _take_down(self, message: dict[str, Any]) -> None:
        slot = self._slots.get(message.get("p"))  # type: ignore[arg-type]
        seconds = message.get("s")
        if self._health is None or slot is None or not isinstance(seconds, int | float):
            return
        if 0 < seconds <= _MAX_DOWN:
            self._health.publish_down_until(slot, self._clock() + seconds)
            _log.info(
                "cluster: %s avoided for %.1fs (another instance saw it fail)",
                message["p"],
                seconds,
            )

    def _take_purge(self, message: dict[str, Any]) -> None:
        store = self._stores.get(message.get("z"))  # type: ignore[arg-type]
        key = message.get("k")
        if store is not None and isinstance(key, str):
            store.forget(key, message.get("x") is True)

    def _take_override(self, message: dict[str, Any]) -> None:
        name, drained, weight = message.get("p"), message.get("d"), message.get("w")
        table = self._overrides
        slot = self._override_slots.get(name)  # type: ignore[arg-type]
        if table is None or slot is None or not isinstance(drained, bool):
            return
        if not isinstance(weight, int) or isinstance(weight, bool):
            return
        assert isinstance(name, str)
        current = table.get(slot)
        with contextlib.suppress(ValueError):
            if current.drained != drained:
                table.set_drained(slot, drained)
            if current.weight != weight:
                table.set_weight(slot, weight)
            self._override_seen[name] = (drained, weight)
            self._override_version = table.version
            _log.warning(
                "cluster: %s %s, weight %s (set on another instance)",
                name,
                "drained" if drained else "not drained",
                weight or "as configured",
            )

    # ---- the lead worker's watch ----

    async def watch(self) -> None:
        beat = 0
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self._client.available:
                self.check_tables()
                beat += 1
                if beat % 2 == 1:
                    await self.heartbeat()

    async def heartbeat(self) -> None:
        """Say this instance is alive and count those that are (the admin view's
        "cluster: N instances"). The member is the master's pid: one per instance."""
        key = f"{self._client.spec.prefix}:instances"
        member = f"{self._instance.split(':', 1)[0]}:{os.getppid()}"
        if self._members is None:
            self._members = self._client.redis.register_script(MEMBERS)
        with contextlib.suppress(Unavailable, RedisError):
            n = await self._client.run(
                self._members(keys=[key], args=[member, MEMBER_TTL_MS]), _PUBLISH_TIMEOUT
            )
            self.instances = int(n)

    def check_tables(self) -> None:
        """Announce peers failing our active checks, and override changes made here."""
        health = self._health
        if health is not None:
            for slot in self._names:
                if health.probe_down(slot):
                    self.announce_down(slot, PROBE_HOLD)
        table = self._overrides
        if table is None or table.version == self._override_version:
            return
        self._override_version = table.version
        for name, slot in self._override_slots.items():
            o = table.get(slot)
            now = (o.drained, o.weight)
            if self._override_seen.get(name) != now:
                self._override_seen[name] = now
                self._send({"t": "ovr", "p": name, "d": o.drained, "w": o.weight})

    # ---- tasks ----

    async def stop(self) -> None:
        await self._background.stop()

    def __repr__(self) -> str:
        role = "lead" if self.lead else "follower"
        return f"ClusterBus({self.channel}, {role}, sent={self.sent}, received={self.received})"
