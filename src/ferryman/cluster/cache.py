"""A cache zone marked `shared`: a tier in the cluster's Redis behind the zone's own
store, so one instance's fill is every instance's hit.

Owns the Redis layout of cached responses and the two asynchronous paths that keep
Redis off the synchronous Store interface (cache/store.py):

  - write-behind: a committed entry whose body is at most `cache_max_object` bytes is
    published to Redis by a background task after it is visible locally; the request
    never waits for Redis;
  - fetch on miss: on a local miss the cache handler asks `fetch` (its RemoteTier hook,
    cache/handler.py) once per request; the entries found for the key are put into a
    near memory tier of this worker and the handler looks again. Concurrent misses of a
    key share one fetch. While Redis is unreachable `fetch` says so at once and the
    request goes on as a plain miss.

Lookups read the zone's store first (memory stays the first tier; then its disk), then
the near tier. Purges remove the key here, in Redis and (through the bus) in the other
instances. Layout: one hash per key, `PREFIX:c:ZONE:KEY`, a field `v:VARIANT` per
variant holding a 4-byte meta length, the meta (cache/entry.py encode_meta) and the
body; the hash expires when its freshest variant is no longer servable (freshness plus
stale windows; entries with validators are kept `inactive` longer for revalidation).
Knows no HTTP rules beyond the meta's own numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import struct
import time
from collections.abc import Callable
from typing import Any, Final

from redis.exceptions import RedisError

from ferryman.cache.entry import EntryMeta, decode_meta, encode_meta
from ferryman.cache.memory import MemoryStore
from ferryman.cache.store import CachedEntry, EntryWriter, Store
from ferryman.cluster.client import Background, ClusterClient, Unavailable

__all__ = ["SharedStore", "pack_entry", "unpack_entry"]

_log: Final = logging.getLogger(__name__)
_LEN: Final = struct.Struct(">I")
# Writes are off the request path and may carry a body: a longer bound than decisions.
_WRITE_TIMEOUT: Final = 1.0
# A purge by prefix walks the zone's keys in Redis this many at a time.
_SCAN_COUNT: Final = 500


def pack_entry(meta: EntryMeta, body: bytes) -> bytes:
    raw = encode_meta(meta)
    return _LEN.pack(len(raw)) + raw + body


def unpack_entry(data: bytes) -> tuple[EntryMeta, bytes]:
    """(meta, body); ValueError on anything malformed (Redis holds what we wrote, but a
    version skew between instances must not crash a worker)."""
    if len(data) < _LEN.size:
        raise ValueError("truncated entry")
    (size,) = _LEN.unpack_from(data, 0)
    end = _LEN.size + size
    if end > len(data):
        raise ValueError("truncated meta")
    meta = decode_meta(data[_LEN.size : end])
    body = data[end:]
    if meta.body_size != len(body):
        raise ValueError("body size differs from the meta's")
    return meta, body


class SharedStore:
    """The zone's store (`local`) + the near tier + Redis, behind the Store interface,
    and the zone's RemoteTier (`fetch`)."""

    def __init__(
        self,
        zone: str,
        local: Store,
        near: MemoryStore,
        client: ClusterClient,
        *,
        inactive: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.zone = zone
        self.local = local
        self.near = near
        self._client = client
        self._max_object = client.spec.cache_max_object
        self._base = f"{client.spec.prefix}:c:{zone}:"
        self._inactive = inactive
        self._clock = clock
        # Key -> callbacks of the requests waiting on its fetch.
        self._fetching: dict[str, list[Callable[[], None]]] = {}
        self._background = Background()
        # Told of each purge made here, to tell the other instances (the bus).
        self.on_purge: Callable[[str, str, bool], None] | None = None
        self.published = self.fetched = self.skipped = 0

    def _rkey(self, key: str) -> str:
        return self._base + key

    # ---- Store: reads ----

    def lookup(self, key: str, variant: bytes) -> CachedEntry | None:
        entry = self.local.lookup(key, variant)
        return entry if entry is not None else self.near.lookup(key, variant)

    def vary_for(self, key: str) -> tuple[bytes, ...] | None:
        vary = self.local.vary_for(key)
        return vary if vary is not None else self.near.vary_for(key)

    # ---- RemoteTier: fetch on a local miss ----

    def fetch(self, key: str, done: Callable[[], None]) -> bool:
        if not self._client.available:
            self._client.fell_back("cache")  # a local miss not asked of Redis
            return False
        waiting = self._fetching.get(key)
        if waiting is not None:
            waiting.append(done)
            return True
        self._fetching[key] = [done]
        self._background.spawn(self._fetch(key))
        return True

    async def _fetch(self, key: str) -> None:
        try:
            fields = await self._client.run(self._client.redis.hgetall(self._rkey(key)))
            self._take_in(key, fields)
        except Unavailable:
            # A miss; Redis is marked down and the next requests do not wait.
            self._client.fell_back("cache")
        except Exception:
            _log.exception("cache zone %s: reading %r from Redis failed", self.zone, key)
        finally:
            for done in self._fetching.pop(key, []):
                done()

    def _take_in(self, key: str, fields: dict[bytes, bytes]) -> None:
        for name, value in fields.items():
            if not name.startswith(b"v:"):
                continue
            try:
                meta, body = unpack_entry(value)
            except ValueError as exc:
                _log.warning("cache zone %s: bad entry for %r in Redis: %s", self.zone, key, exc)
                continue
            if meta.key == key and self.near.put(meta, body):
                self.fetched += 1

    # ---- Store: writes ----

    def begin(self, meta: EntryMeta) -> EntryWriter:
        return _SharedWriter(self, self.local.begin(meta), meta)

    def update_meta(self, key: str, variant: bytes, meta: EntryMeta) -> None:
        self.local.update_meta(key, variant, meta)
        self.near.update_meta(key, variant, meta)
        entry = self.lookup(key, variant)
        if entry is None:
            return
        with entry:
            if entry.meta.body_size > self._max_object:
                return
            body = b"".join(entry.chunks())
        self.publish(entry.meta, body)

    def publish(self, meta: EntryMeta, body: bytes) -> None:
        """Write-behind: the entry goes to Redis in the background."""
        ttl = self._keep_for(meta)
        if ttl <= 0 or len(body) > self._max_object or not self._client.available:
            self.skipped += 1
            return
        self._background.spawn(self._publish(meta, body, ttl))

    def _keep_for(self, meta: EntryMeta) -> int:
        """Milliseconds Redis keeps the entry: as long as it may still be served."""
        now = self._clock()
        servable = meta.ttl(now) + max(meta.swr or 0.0, meta.sie or 0.0)
        if meta.etag is not None or meta.last_modified is not None:
            servable = max(servable, meta.ttl(now) + self._inactive)  # can be revalidated
        return int(servable * 1000)

    async def _publish(self, meta: EntryMeta, body: bytes, ttl_ms: int) -> None:
        rkey = self._rkey(meta.key)
        pipe = self._client.redis.pipeline(transaction=False)
        pipe.hset(rkey, b"v:" + meta.variant, pack_entry(meta, body))
        # The key lives as long as its longest-lived variant (GT: never shortened).
        pipe.pexpire(rkey, ttl_ms, gt=True)
        pipe.pexpire(rkey, ttl_ms, nx=True)
        with contextlib.suppress(Unavailable, RedisError):
            await self._client.run(pipe.execute(), _WRITE_TIMEOUT)
            self.published += 1

    # ---- Store: removal ----

    def remove(self, key: str) -> int:
        removed = self.forget(key, False)
        if self._client.available:
            self._background.spawn(
                self._client.quietly(self._client.redis.delete(self._rkey(key)), _WRITE_TIMEOUT)
            )
        if self.on_purge is not None:
            self.on_purge(self.zone, key, False)
        return removed

    def remove_prefix(self, prefix: str) -> int:
        removed = self.forget(prefix, True)
        if self._client.available:
            self._background.spawn(self._remove_prefix(prefix))
        if self.on_purge is not None:
            self.on_purge(self.zone, prefix, True)
        return removed

    def forget(self, key: str, prefix: bool) -> int:
        """Drop a key (or every key with the prefix) from this worker's tiers only: a
        purge made elsewhere, which already removed it from Redis."""
        if prefix:
            return max(self.local.remove_prefix(key), self.near.remove_prefix(key))
        return max(self.local.remove(key), self.near.remove(key))

    async def _remove_prefix(self, prefix: str) -> None:
        pattern = _glob_escape(self._rkey(prefix)) + "*"
        redis = self._client.redis
        batch: list[Any] = []
        with contextlib.suppress(Unavailable, RedisError):
            async with asyncio.timeout(30):  # a bound even for a huge keyspace
                async for rkey in redis.scan_iter(match=pattern, count=_SCAN_COUNT):
                    batch.append(rkey)
                    if len(batch) >= _SCAN_COUNT:
                        await self._client.run(redis.delete(*batch), _WRITE_TIMEOUT)
                        batch = []
                if batch:
                    await self._client.run(redis.delete(*batch), _WRITE_TIMEOUT)

    def expire(self, now: float) -> int:
        self.near.expire(now)
        return self.local.expire(now)

    # ---- background tasks ----

    async def stop(self) -> None:
        await self._background.stop()

    def __repr__(self) -> str:
        return (
            f"SharedStore({self.zone}: {self.published} published, {self.fetched} fetched, "
            f"{self.skipped} skipped; {self.local!r})"
        )


class _SharedWriter:
    """Writes to the zone's store, keeping a copy of a small body to publish on commit."""

    __slots__ = ("_local", "_meta", "_parts", "_size", "_store")

    def __init__(self, store: SharedStore, local: EntryWriter, meta: EntryMeta) -> None:
        self._store = store
        self._local = local
        self._meta = meta
        self._parts: list[bytes] | None = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._local.write(data)
        self._size += len(data)
        if self._parts is not None:
            if self._size > self._store._max_object:
                self._parts = None  # too big for Redis: local tiers only
            else:
                self._parts.append(bytes(data))

    def commit(self, body_size: int) -> None:
        self._local.commit(body_size)  # raises StoreError: nothing stored, nothing sent
        parts, self._parts = self._parts, None
        if parts is not None:
            meta = dataclasses.replace(self._meta, body_size=body_size)
            self._store.publish(meta, b"".join(parts))

    def abort(self) -> None:
        self._parts = None
        self._local.abort()

    def __repr__(self) -> str:
        return f"_SharedWriter({self._store.zone}, {self._size} bytes)"


def _glob_escape(text: str) -> str:
    """`text` matched literally by Redis's glob patterns (SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
