"""One worker's connection to the cluster's Redis, and whether it is usable.

Owns the redis client (single server, Sentinel or Cluster, TLS, password), the bounded
call (`run`: ClusterSpec.timeout on every call), and the up/down state: a refused or
lost connection, or SLOW_CALLS_DOWN timeouts in a row, mark Redis down (logged once,
with what failed), after which callers decide
locally at once instead of waiting for timeouts; a watcher pings every
`RECONNECT_INTERVAL` and marks it up again (logged once). Knows nothing about what
the calls mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from ferryman.cluster.url import RedisTarget, parse_redis_url
from ferryman.config.schema import ClusterSpec

__all__ = [
    "RECONNECT_INTERVAL",
    "SLOW_CALLS_DOWN",
    "Background",
    "ClusterClient",
    "Unavailable",
    "make_redis",
]

_log: Final = logging.getLogger(__name__)
T = TypeVar("T")

# How often an unreachable Redis is tried again, and a reachable one pinged (a quiet
# instance notices a lost Redis within this, a busy one at its next call).
RECONNECT_INTERVAL: Final = 1.0
# Consecutive timed-out calls after which Redis counts as down (a refused or reset
# connection counts at once).
SLOW_CALLS_DOWN: Final = 3
# Connecting (and Sentinel's master lookup) may take longer than one request's budget;
# it happens in the watcher, never on a request's path.
_CONNECT_TIMEOUT: Final = 1.0


class Unavailable(Exception):
    """Redis did not answer in time (or refused): decide locally."""


class Background:
    """One component's fire-and-forget Redis work (publishing, fetching, releasing a
    lease): the tasks are kept, so none is collected mid-flight, and `stop` cancels
    what is still running."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"Background({len(self._tasks)} running)"


class ClusterClient:
    """The worker's Redis. `available` is the flag every shared decision reads first."""

    def __init__(self, spec: ClusterSpec, redis: Any, target: RedisTarget) -> None:
        self.spec = spec
        self.redis = redis
        self.target = target
        self.timeout = spec.timeout
        self.available = False  # until the first ping answers
        # Counters for metrics and the admin view: calls that failed, times it went down.
        self.failures = 0
        self.outages = 0
        # Decisions taken with local state because Redis was unreachable, by feature
        # (limit_req, limit_conn, cache, health): metrics and the dashboard say so.
        self.fallbacks: dict[str, int] = {}
        self.checked = False  # the watcher has tried Redis once (up/down is known)
        self._slow = 0  # consecutive timed-out calls
        self._watcher: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[bool], None]] = []

    @classmethod
    def from_spec(cls, spec: ClusterSpec) -> ClusterClient:
        target = parse_redis_url(spec.url)
        return cls(spec, make_redis(spec, target), target)

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """`listener(available)` on each change (the health bus resubscribes)."""
        self._listeners.append(listener)

    def start(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.redis.aclose(), _CONNECT_TIMEOUT)

    async def run(self, call: Awaitable[T], timeout: float | None = None) -> T:
        """`call`'s result within the timeout, else Unavailable (and Redis is marked
        down). A script error (our bug, not an outage) propagates as it is."""
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                result = await call
        except ResponseError:
            raise
        except TimeoutError as exc:
            # One slow answer (a busy machine) costs that request its shared decision;
            # several in a row mean Redis is gone.
            self.failures += 1
            self._slow += 1
            if self._slow >= SLOW_CALLS_DOWN:
                self.mark_down(exc)
            raise Unavailable("timed out") from None
        except (RedisError, OSError) as exc:
            self.failures += 1
            self.mark_down(exc)
            raise Unavailable(str(exc) or type(exc).__name__) from None
        self._slow = 0
        return result

    def fell_back(self, feature: str) -> None:
        """One decision of `feature` was taken locally because Redis failed."""
        self.fallbacks[feature] = self.fallbacks.get(feature, 0) + 1

    async def quietly(self, call: Awaitable[Any], timeout: float) -> None:
        """`call` for background work nobody waits on: an outage just drops it."""
        with contextlib.suppress(Unavailable, RedisError):
            await self.run(call, timeout)

    def mark_down(self, exc: BaseException) -> None:
        if not self.available:
            return
        self.available = False
        self.outages += 1
        _log.error(
            "cluster: Redis %r unreachable (%s): serving with local-only limits, cache "
            "and health until it is back",
            self.target,
            str(exc) or type(exc).__name__,
        )
        self._tell(False)

    def _mark_up(self) -> None:
        if self.available:
            return
        self.available = True
        self._slow = 0
        _log.warning("cluster: Redis %r reachable: sharing limits, cache and health", self.target)
        self._tell(True)

    def _tell(self, available: bool) -> None:
        for listener in self._listeners:
            try:
                listener(available)
            except Exception:
                _log.exception("cluster: state listener failed")

    async def _watch(self) -> None:
        while True:
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT):
                    await self.redis.ping()
            except (RedisError, OSError, TimeoutError) as exc:
                first = self.outages == 0 and self.failures == 0
                self.failures += 1  # a failed call too: the counter moves while down
                if self.available:
                    self.mark_down(exc)
                elif first:  # never reached yet: say so once
                    _log.error(
                        "cluster: Redis %r unreachable at start (%s): serving with "
                        "local-only state, retrying every %.0fs",
                        self.target,
                        str(exc) or type(exc).__name__,
                        RECONNECT_INTERVAL,
                    )
            else:
                self._mark_up()
            self.checked = True
            await asyncio.sleep(RECONNECT_INTERVAL)

    def __repr__(self) -> str:
        state = "up" if self.available else "down"
        return f"ClusterClient({self.target!r}, {state}, {self.failures} failed calls)"


def make_redis(spec: ClusterSpec, target: RedisTarget) -> Any:
    """The redis-py asyncio client for `target` (no connection is made yet)."""
    options: dict[str, Any] = {
        "username": spec.username or target.username,
        "password": _password(spec) or target.password,
        # One immediate retry replaces a pooled connection the server closed (after a
        # Redis restart); our own bound (run) still caps the whole call.
        "retry": Retry(NoBackoff(), 1),
        "socket_connect_timeout": _CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": 0,
    }
    if target.tls:
        options.update(_tls_options(spec))
    if target.mode == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        return RedisCluster(startup_nodes=nodes, **options)
    if target.mode == "sentinel":
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes), sentinel_kwargs=_sentinel_options(options), **options
        )
        return sentinel.master_for(target.service, db=target.db)
    host, port = target.nodes[0]
    return aioredis.Redis(host=host, port=port, db=target.db, **options)


def _password(spec: ClusterSpec) -> str | None:
    if spec.password_file is None:
        return spec.password
    with open(spec.password_file, encoding="utf-8") as f:
        return f.readline().rstrip("\r\n") or None


def _tls_options(spec: ClusterSpec) -> dict[str, Any]:
    return {
        "ssl": True,
        "ssl_ca_certs": spec.tls_ca,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if spec.tls_verify else ssl.CERT_NONE,
        "ssl_check_hostname": spec.tls_verify,
    }


def _sentinel_options(options: dict[str, Any]) -> dict[str, Any]:
    # Sentinels usually share the data nodes' TLS but not always their password;
    # the URL's credentials are used for both, as redis-py's own Sentinel URL does.
    return {k: v for k, v in options.items() if k != "retry"}
