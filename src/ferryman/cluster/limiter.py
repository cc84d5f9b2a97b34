"""Limit zones marked `shared`, kept in the cluster's Redis: the filters' SharedZones
(filters/base.py).

Owns the two Lua scripts and the lease bookkeeping. limit_req: one script per bucket
change runs nginx's leaky bucket with filters/rate_limit.py's integers (excess in
thousandths, rate in thousandths per second, whole milliseconds) and Redis's own clock
(`TIME` inside the script), so the instances' clocks never matter and each change is
atomic. limit_conn: a sorted set per key of lease ids scored by expiry; a slot is taken
when fewer than `limit` unexpired leases remain, renewed by its holder every
`lease_ttl / 3` while the request lasts and removed when it ends, so a dead instance's
requests stop counting `lease_ttl` after it died.

Knows nothing about requests: the filters walk their limits and call in here per
bucket; any failure (ClusterClient.run's Unavailable) makes the whole decision local.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from ferryman.cluster.client import Background, ClusterClient, Unavailable
from ferryman.filters.base import Delay, Deny, Pending, SharedZones, Verdict

__all__ = ["LEASE_ACQUIRE", "LEASE_RENEW", "LIMIT_REQ", "SharedLimiter", "redis_key"]

_log: Final = logging.getLogger(__name__)

# KEYS[1]: the bucket, a hash {e: excess (thousandths), l: last change (ms)}.
# ARGV: mode (check | check_take | take), rate (thousandths/s), burst (thousandths).
# ARGV[4], when given, stands in for Redis's clock (the equivalence tests only).
# Returns {over burst (0/1), excess with this request}. rate_limit.lookup/take, line by
# line; numbers stay below 2^53, where Lua's doubles are exact.
LIMIT_REQ: Final = """
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local mode, rate, burst = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'e', 'l')
local excess, last = tonumber(b[1]), tonumber(b[2])
local e, ms = 0, 0
if excess then
  ms = now - last
  if ms < -60000 then ms = 1 elseif ms < 0 then ms = 0 end
  e = excess - math.floor(rate * ms / 1000) + 1000
  if e < 0 then e = 0 end
end
if mode == 'check' then
  if excess and e > burst then return {1, e} end
  return {0, e}
end
if mode == 'check_take' and excess and e > burst then return {1, e} end
if (not excess) or ms > 0 then last = now end
redis.call('HSET', KEYS[1], 'e', e, 'l', last)
redis.call('PEXPIRE', KEYS[1], math.floor((e + 1000) * 1000 / rate) + 1000)
return {0, e}
"""

# KEYS[1]: the key's leases, a sorted set of lease ids scored by expiry (Redis ms).
# ARGV: limit, lease id, ttl (ms). Returns 1 when the lease was taken.
LEASE_ACQUIRE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

# KEYS[1]: as above. ARGV: ttl (ms), then the lease ids still held. Only leases that
# still exist are renewed (one that expired meanwhile stays gone).
LEASE_RENEW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

# Releases and renewals are off the request path: they may take longer than a decision.
_BACKGROUND_TIMEOUT: Final = 1.0


def redis_key(prefix: str, kind: str, zone: str, key: bytes) -> str:
    """The Redis key of one zone key. The key's digest is the Cluster hash tag, so keys
    spread over the slots; clients' raw keys never reach Redis (any bytes, any length)."""
    digest = hashlib.blake2b(key, digest_size=12).hexdigest()
    return f"{prefix}:{kind}:{zone}:{{{digest}}}"


class SharedLimiter:
    """One worker's side of the shared limit zones (filters/base.py SharedZones)."""

    def __init__(self, client: ClusterClient, instance: str, lease_ttl: float) -> None:
        self._client = client
        self._prefix = client.spec.prefix
        self._instance = instance
        self._ttl_ms = max(1000, int(lease_ttl * 1000))
        self._lease_ttl = lease_ttl
        redis = client.redis
        self._req = redis.register_script(LIMIT_REQ)
        self._acquire = redis.register_script(LEASE_ACQUIRE)
        self._renew = redis.register_script(LEASE_RENEW)
        self._ids = itertools.count(1)
        # Leases held now: id -> Redis key (renewed until given back).
        self.leases: dict[str, str] = {}
        # Background calls in flight (a reference keeps each task alive).
        self._background = Background()
        self.fallbacks = 0  # decisions taken locally because Redis failed mid-way

    @property
    def available(self) -> bool:
        return self._client.available

    def for_filter(self, kind: str) -> SharedZones:
        """This limiter as filter kind `kind` (limit_req, limit_conn) sees it: the
        decisions it takes locally are counted under its name (metrics)."""
        return _FilterView(self, kind)

    # ---- the decision ----

    def pending(
        self,
        walk: Coroutine[Any, Any, Deny | Delay | None],
        fallback: Callable[[], Verdict],
        orphan: Callable[[], None] | None,
        kind: str = "limit_req",
    ) -> Verdict:
        loop = asyncio.get_running_loop()
        out: asyncio.Future[Deny | Delay | None] = loop.create_future()
        self._background.spawn(self._settle(walk, fallback, orphan, out, kind))
        return Pending(out)

    async def _settle(
        self,
        walk: Coroutine[Any, Any, Deny | Delay | None],
        fallback: Callable[[], Verdict],
        orphan: Callable[[], None] | None,
        out: asyncio.Future[Deny | Delay | None],
        kind: str,
    ) -> None:
        try:
            verdict = await walk
        except Unavailable:
            verdict = self._local(fallback, kind)
        except Exception:
            # A script error is our bug, not the client's: decide as if alone.
            _log.exception("cluster: shared limit failed, deciding with the local zone")
            verdict = self._local(fallback, kind)
        if out.cancelled():
            # The exchange ended while waiting: nothing may stay held for it.
            if verdict is None and orphan is not None:
                orphan()
            return
        out.set_result(verdict)

    def _local(self, fallback: Callable[[], Verdict], kind: str) -> Deny | Delay | None:
        self.fallbacks += 1
        self._client.fell_back(kind)
        verdict = fallback()
        assert not isinstance(verdict, Pending)  # the local path never waits
        return verdict

    async def limit_req(
        self, zone: str, key: bytes, rate: int, burst: int, mode: str
    ) -> tuple[bool, int]:
        rkey = redis_key(self._prefix, "lr", zone, key)
        busy, excess = await self._client.run(self._req(keys=[rkey], args=[mode, rate, burst]))
        return bool(busy), int(excess)

    # ---- limit_conn leases ----

    async def lease(self, zone: str, key: bytes, limit: int) -> str | None:
        rkey = redis_key(self._prefix, "lc", zone, key)
        lease = f"{self._instance}:{next(self._ids)}"
        taken = await self._client.run(
            self._acquire(keys=[rkey], args=[limit, lease, self._ttl_ms])
        )
        if not taken:
            return None
        self.leases[lease] = rkey
        return lease

    def unlease(self, zone: str, key: bytes, lease: str) -> None:
        rkey = self.leases.pop(lease, None)
        if rkey is None or not self._client.available:
            return  # unknown, or Redis gone: the lease expires by itself
        self._background.spawn(
            self._client.quietly(self._client.redis.zrem(rkey, lease), _BACKGROUND_TIMEOUT)
        )

    async def renew_forever(self) -> None:
        """Every lease_ttl / 3, push the expiry of every lease still held."""
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            if self.leases and self._client.available:
                await self.renew()

    async def renew(self) -> None:
        by_key: dict[str, list[str]] = {}
        for lease, rkey in self.leases.items():
            by_key.setdefault(rkey, []).append(lease)
        pipe = self._client.redis.pipeline(transaction=False)
        for rkey, leases in by_key.items():
            await self._renew(keys=[rkey], args=[self._ttl_ms, *leases], client=pipe)
        await self._client.quietly(pipe.execute(), _BACKGROUND_TIMEOUT)

    # ---- background calls ----

    async def stop(self) -> None:
        await self._background.stop()

    def __repr__(self) -> str:
        return (
            f"SharedLimiter({len(self.leases)} leases held, {self.fallbacks} local fallbacks, "
            f"{self._client!r})"
        )


class _FilterView:
    """One filter kind's handle on the worker's SharedLimiter: every call goes to it;
    a decision sent to the local zones because Redis is down counts under `kind`."""

    __slots__ = ("_client", "_kind", "_limiter")

    def __init__(self, limiter: SharedLimiter, kind: str) -> None:
        self._limiter = limiter
        self._client = limiter._client
        self._kind = kind

    @property
    def available(self) -> bool:
        if self._client.available:
            return True
        self._client.fell_back(self._kind)  # the filter now decides with its local zone
        return False

    def pending(
        self,
        walk: Coroutine[Any, Any, Deny | Delay | None],
        fallback: Callable[[], Verdict],
        orphan: Callable[[], None] | None,
        kind: str = "",
    ) -> Verdict:
        return self._limiter.pending(walk, fallback, orphan, kind or self._kind)

    async def limit_req(
        self, zone: str, key: bytes, rate: int, burst: int, mode: str
    ) -> tuple[bool, int]:
        return await self._limiter.limit_req(zone, key, rate, burst, mode)

    async def lease(self, zone: str, key: bytes, limit: int) -> str | None:
        return await self._limiter.lease(zone, key, limit)

    def unlease(self, zone: str, key: bytes, lease: str) -> None:
        self._limiter.unlease(zone, key, lease)

    def for_filter(self, kind: str) -> SharedZones:
        return self._limiter.for_filter(kind)

    def __repr__(self) -> str:
        return f"SharedLimiter.for_filter({self._kind!r}) of {self._limiter!r}"
