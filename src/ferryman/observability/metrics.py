"""Prometheus metrics: counted per worker in plain Python objects, published once a
second to one snapshot file per worker, summed across workers and rendered in the
Prometheus text format by whoever serves `/metrics` (the admin process).

Why not a prometheus-client call per request: its multiprocess mode writes an mmap'd
value per `inc()` (a lock, a dict lookup by label tuple, a struct pack): several
microseconds, on every request of every worker. Here a request costs one dict lookup
(the route's `_RouteStats`), a few integer additions and one short bucket scan per histogram:
a few hundred nanoseconds (measured in the report of the change; tests assert no
timings). The sweeper calls
`WorkerMetrics.flush` every tick; it writes (marshal, then an atomic rename) at most
once a second. prometheus-client builds the exposition (`render`), so the text format
is its, not ours.

Snapshots live in one directory for the master's lifetime (`metrics_dir`): a reload's
new workers add files, an exited worker's counters are folded into `retired.bin` by the
master (`retire`), so counters never go backwards across reloads or worker restarts.
Gauges (connections, in-flight, peer up) come from live workers' files only, and peer
health from the newest generation only (an old, draining generation's health table is
no longer updated by a prober).

Knows nothing of sockets, the admin listener or configuration loading; reads exchange
attributes duck-typed (route, server, status, timings) once per request.
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final

__all__ = [
    "BUCKETS",
    "CONTENT_TYPE",
    "FALLBACK_FEATURES",
    "WorkerMetrics",
    "cluster_status",
    "render",
    "retire",
    "route_entry",
]

# Seconds; the prometheus-client defaults, which suit request latencies (an implicit
# +Inf bucket follows the last). Not `Final`: the mypyc build left a Final tuple of
# floats unset at import ("value for final name was not set").
# The first bound as a Final float as well: `_bucket` answers most requests from it
# without reading BUCKETS out of the module's dict.
_FIRST: Final = 0.005
BUCKETS: tuple[float, ...] = (_FIRST, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_FLUSH_EVERY: Final = 1.0
_RETIRED: Final = "retired.bin"
_NB: Final = len(BUCKETS) + 1
# What may decide locally while the cluster's Redis is unreachable (cluster/client.py
# `fell_back`): always exported, at 0 until it happens, so rate() works from the start.
FALLBACK_FEATURES: Final = ("limit_req", "limit_conn", "cache", "health")


def _bucket(seconds: float) -> int:
    """bisect_left(BUCKETS, seconds): most requests take less than the first bound, so
    a scan from the bottom stops at once (and, compiled, compares unboxed floats)."""
    if seconds <= _FIRST:
        return 0
    i = 0
    for bound in BUCKETS:
        if seconds <= bound:
            return i
        i += 1
    return i


class _RouteStats:
    """One route's counters in one worker (labels: server, location, upstream)."""

    __slots__ = ("body_in", "body_out", "codes", "labels", "total", "total_sum", "up", "up_sum")

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.codes: dict[int, int] = {}
        self.body_in = 0
        self.body_out = 0
        self.total = [0] * _NB
        self.total_sum = 0.0
        self.up = [0] * _NB
        self.up_sum = 0.0


def _route_labels(exchange: Any) -> tuple[str, str, str]:
    route = exchange.route
    server = exchange.server
    name = ""
    if server is not None and server.names:
        name = str(server.names[0])
    if route is None:
        return (name, "", "")
    spec = route.spec
    return (name, str(spec.path), str(spec.upstream or ""))


# Deny reasons (filters/*.py) -> (filter, its zone or rule): the filters say what
# decided in the reason text they log; parsed here, on the (rare) deny path only.
_DENY_PREFIXES: Final = (
    ('limiting requests by zone "', "limit_req"),
    ('limiting connections by zone "', "limit_conn"),
    ("access forbidden by rule ", "access"),
)


def _deny_labels(reason: str) -> tuple[str, str]:
    for prefix, kind in _DENY_PREFIXES:
        if reason.startswith(prefix):
            return kind, reason[len(prefix) :].rstrip('"')
    if reason.startswith("user ") or reason.startswith("no user"):
        return "auth", ""
    if reason == "limit_conn zone full":
        return "limit_conn", ""
    return "other", ""


class WorkerMetrics:
    """One worker's counters, and where and when it publishes them."""

    __slots__ = (
        "_gc_base",
        "_last_flush",
        "_path",
        "cache",
        "cluster",
        "connections",
        "generation",
        "groups",
        "rejects",
        "retries",
        "routes",
    )

    def __init__(self, directory: str | None, generation: int = 0) -> None:
        self._path = os.path.join(directory, f"w-{os.getpid()}.bin") if directory else None
        self.generation = generation
        self._last_flush = 0.0
        self.routes: dict[object, _RouteStats] = {}
        self.retries: dict[str, int] = {}
        self.cache: dict[object, int] = {}  # (zone, result) -> requests, as `count` says
        self.rejects: dict[tuple[str, str], int] = {}
        # Set by the worker: a callable giving its open connection count, and its
        # upstream groups (for in-flight and up/down per peer at flush time).
        self.connections: Any = None
        self.groups: dict[str, Any] = {}
        # The worker's ClusterAgent (cluster/agent.py) when the config has `cluster`:
        # its `status()` is read at flush time.
        self.cluster: Any = None
        # The cyclic garbage collector's totals when this worker started counting: a
        # forked worker inherits the master's, which are not this worker's work.
        self._gc_base = _gc_totals()

    # ---- the hot path: once per request ----

    def count(
        self,
        route: object,
        status: int,
        received: int,
        body_bytes: int,
        started: float,
        upstream_start: float,
        now: float,
        retries: int,
        cache_key: object,
        ex: Any,
    ) -> None:
        """One request's end, with its values passed in: the compiled exchange calls
        this, so nothing is looked up by name on the hot path. `ex` is read only for a
        route's first request (its labels). `cache_key` is the cache's (zone, result)
        tuple from `CacheOp.metric_key`, or None; typed `object` so that the compiled
        build passes the tuple through as it is (a `tuple[str, str]` is unboxed, and
        boxed again into a new tuple, at each call and dict access)."""
        stats = self.routes.get(route)
        if stats is None:
            stats = self._stats_for(ex)
        codes = stats.codes
        codes[status] = codes.get(status, 0) + 1
        stats.body_in += received
        stats.body_out += body_bytes
        if started:
            # `counts[i] = counts[i] + 1`, not `+=`: compiled, an augmented store into a
            # list item is a generic in-place add on the boxed int.
            took = now - started
            counts = stats.total
            i = _bucket(took)
            counts[i] = counts[i] + 1
            stats.total_sum += took
            if upstream_start:
                took = now - upstream_start
                counts = stats.up
                i = _bucket(took)
                counts[i] = counts[i] + 1
                stats.up_sum += took
        if retries and route is not None:
            name = stats.labels[2]
            self.retries[name] = self.retries.get(name, 0) + retries
        if cache_key is not None:
            self.cache[cache_key] = self.cache.get(cache_key, 0) + 1

    def _stats_for(self, ex: Any) -> _RouteStats:
        labels = _route_labels(ex)
        # Requests that found no route are counted by the server name they were for.
        key = ex.route if ex.route is not None else labels
        stats = self.routes.get(key)
        if stats is None:
            stats = self.routes[key] = _RouteStats(labels)
        return stats

    def record_deny(self, reason: str) -> None:
        key = _deny_labels(reason)
        self.rejects[key] = self.rejects.get(key, 0) + 1

    # ---- publishing ----

    def flush(self, force: bool = False) -> None:
        """Write the snapshot file (sweeper tick: at most once a second)."""
        if self._path is None:
            return
        now = time.monotonic()
        if not force and now - self._last_flush < _FLUSH_EVERY:
            return
        self._last_flush = now
        data = marshal.dumps(self.snapshot(now))
        tmp = self._path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self._path)
        except OSError:
            pass  # the directory went away (the master is exiting): nothing to publish

    def snapshot(self, now: float) -> dict[str, Any]:
        routes = [
            (*s.labels, dict(s.codes), s.body_in, s.body_out, s.total, s.total_sum, s.up, s.up_sum)
            for s in self.routes.values()
        ]
        peers = []
        for name, group in self.groups.items():
            for p in group.peers:
                down = p.spec.down or p.probe_down or p.health.unavailable_until > now
                peers.append((name, p.name, p.active, 0 if down else 1))
        cluster = None
        failed, fallbacks = 0, {}
        if self.cluster is not None:
            st = self.cluster.status()
            # Redis up/down is unknown (None) until the worker's watcher has tried once.
            up = bool(st["available"]) if st["checked"] else None
            cluster = (str(st["address"]), up, int(st["instances"]))
            failed, fallbacks = int(st["failed_calls"]), dict(st["fallbacks"])
        return {
            "generation": self.generation,
            "cluster": cluster,
            "cluster_failed": failed,
            "cluster_fallbacks": fallbacks,
            "routes": routes,
            "retries": dict(self.retries),
            "cache": list(self.cache.items()),
            "rejects": list(self.rejects.items()),
            "connections": self.connections() if self.connections is not None else 0,
            "peers": peers,
            "gc": [
                (n - n0, c - c0)
                for (n, c), (n0, c0) in zip(_gc_totals(), self._gc_base, strict=True)
            ],
        }

    def __repr__(self) -> str:
        return f"WorkerMetrics({len(self.routes)} routes, file={self._path})"


def _gc_totals() -> list[tuple[int, int]]:
    """(collections, objects found unreachable) per generation, since the process began."""
    return [(int(g["collections"]), int(g["collected"])) for g in gc.get_stats()]


def cluster_status(directory: str) -> dict[str, Any] | None:
    """The cluster's state as every live worker publishes it (Totals.cluster_status)."""
    return aggregate(directory).cluster_status()


def route_entry(directory: str) -> tuple[tuple[str, str], Any]:
    """The admin listener's route for GET /metrics (observability/admin.py Routes)."""

    def handler(request: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        return 200, [("Content-Type", CONTENT_TYPE)], render(directory)

    return ("GET", "/metrics"), handler


# ---------------------------------------------------------------- aggregation


class _Totals:
    """Snapshots summed: counters from every file, gauges from live workers."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str, str], list[Any]] = {}
        self.retries: dict[str, int] = {}
        self.cache: dict[tuple[str, str], int] = {}
        self.rejects: dict[tuple[str, str], int] = {}
        self.connections = 0
        self.workers = 0
        self.in_flight: dict[tuple[str, str], int] = {}
        self.up: dict[tuple[str, str], int] = {}
        self.up_generation = -1
        # Cluster (cluster/): counters summed like the others; Redis up is the minimum
        # over live workers that know (one worker cut off is "down" for the instance).
        self.cluster_failed = 0
        self.cluster_fallbacks: dict[str, int] = {}
        self.cluster_redis: str | None = None
        self.cluster_up: int | None = None
        self.cluster_workers = 0
        self.cluster_workers_up = 0
        self.cluster_instances = 0
        # Per generation of the cyclic garbage collector: [collections, collected].
        self.gc: list[list[int]] = []

    def add_counters(self, snap: dict[str, Any]) -> None:
        for s, loc, up, codes, b_in, b_out, total, t_sum, ups, u_sum in snap["routes"]:
            acc = self.routes.get((s, loc, up))
            if acc is None:
                acc = self.routes[(s, loc, up)] = [{}, 0, 0, [0] * _NB, 0.0, [0] * _NB, 0.0]
            for code, n in codes.items():
                acc[0][code] = acc[0].get(code, 0) + n
            acc[1] += b_in
            acc[2] += b_out
            acc[3] = [a + b for a, b in zip(acc[3], total, strict=True)]
            acc[4] += t_sum
            acc[5] = [a + b for a, b in zip(acc[5], ups, strict=True)]
            acc[6] += u_sum
        for name, n in snap["retries"].items():
            self.retries[name] = self.retries.get(name, 0) + n
        for key, n in snap["cache"]:
            self.cache[key] = self.cache.get(key, 0) + n
        for key, n in snap["rejects"]:
            self.rejects[key] = self.rejects.get(key, 0) + n
        for generation, (runs, collected) in enumerate(snap.get("gc", ())):
            if generation == len(self.gc):
                self.gc.append([0, 0])
            self.gc[generation][0] += runs
            self.gc[generation][1] += collected
        self.cluster_failed += snap.get("cluster_failed", 0)
        for feature, n in snap.get("cluster_fallbacks", {}).items():
            self.cluster_fallbacks[feature] = self.cluster_fallbacks.get(feature, 0) + n

    def add_gauges(self, snap: dict[str, Any]) -> None:
        self.workers += 1
        self.connections += snap["connections"]
        gen = snap["generation"]
        if gen > self.up_generation:
            self.up_generation, self.up = gen, {}
        for upstream, peer, active, up in snap["peers"]:
            key = (upstream, peer)
            self.in_flight[key] = self.in_flight.get(key, 0) + active
            if gen == self.up_generation:
                self.up[key] = min(self.up.get(key, 1), up)
        cluster = snap.get("cluster")
        if cluster is not None:
            redis, up, instances = cluster
            self.cluster_redis = redis
            self.cluster_workers += 1
            self.cluster_instances = max(self.cluster_instances, instances)
            if up is not None:
                self.cluster_workers_up += int(up)
                self.cluster_up = min(1 if self.cluster_up is None else self.cluster_up, int(up))

    def cluster_status(self) -> dict[str, Any] | None:
        """The admin view (GET /api/cluster, the dashboard's banner): None without a
        cluster; `up` None while no worker has tried Redis yet."""
        if self.cluster_redis is None:
            return None
        return {
            "redis": self.cluster_redis,
            "up": None if self.cluster_up is None else bool(self.cluster_up),
            "workers": self.cluster_workers,
            "workers_up": self.cluster_workers_up,
            "instances": self.cluster_instances,
            "failed_calls": self.cluster_failed,
            "fallbacks": {f: self.cluster_fallbacks.get(f, 0) for f in FALLBACK_FEATURES},
        }

    def as_snapshot(self) -> dict[str, Any]:
        return {
            "generation": -1,
            "routes": [(*k, *v) for k, v in self.routes.items()],
            "retries": self.retries,
            "cache": list(self.cache.items()),
            "rejects": list(self.rejects.items()),
            "cluster_failed": self.cluster_failed,
            "cluster_fallbacks": self.cluster_fallbacks,
            "connections": 0,
            "peers": [],
            "gc": [tuple(g) for g in self.gc],
        }


def _load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            value = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _snapshots(directory: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return
    for name in names:
        if name.endswith(".bin"):
            snap = _load(os.path.join(directory, name))
            if snap is not None:
                yield name, snap


def retire(directory: str, pid: int) -> None:
    """A worker exited: fold its counters into `retired.bin` (run by the master)."""
    path = os.path.join(directory, f"w-{pid}.bin")
    snap = _load(path)
    if snap is None:
        return
    totals = _Totals()
    previous = _load(os.path.join(directory, _RETIRED))
    if previous is not None:
        totals.add_counters(previous)
    totals.add_counters(snap)
    tmp = os.path.join(directory, _RETIRED + ".tmp")
    with contextlib.suppress(OSError):
        with open(tmp, "wb") as f:
            f.write(marshal.dumps(totals.as_snapshot()))
        os.replace(tmp, os.path.join(directory, _RETIRED))
        os.unlink(path)


def aggregate(directory: str) -> _Totals:
    totals = _Totals()
    for name, snap in _snapshots(directory):
        totals.add_counters(snap)
        if name != _RETIRED:
            totals.add_gauges(snap)
    return totals


def render(directory: str) -> bytes:
    """Every worker's snapshot summed, in the Prometheus text exposition format."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(aggregate(directory)))
    return generate_latest(registry)


class _Collector:
    def __init__(self, totals: _Totals) -> None:
        self.totals = totals

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        t = self.totals
        route = ["server", "location", "upstream"]
        requests = CounterMetricFamily(
            "ferryman_requests", "Requests answered", labels=[*route, "code", "class"]
        )
        body_in = CounterMetricFamily(
            "ferryman_request_body_bytes", "Request body bytes received", labels=route
        )
        body_out = CounterMetricFamily(
            "ferryman_response_body_bytes", "Response body bytes sent", labels=route
        )
        total = HistogramMetricFamily(
            "ferryman_request_duration_seconds",
            "From the request head to the end of the response",
            labels=route,
        )
        upstream = HistogramMetricFamily(
            "ferryman_upstream_duration_seconds",
            "From the first upstream attempt to the end of the response",
            labels=route,
        )
        for labels, (codes, b_in, b_out, tot, t_sum, ups, u_sum) in sorted(t.routes.items()):
            for code, n in sorted(codes.items()):
                requests.add_metric([*labels, str(code), f"{code // 100}xx"], n)
            body_in.add_metric(list(labels), b_in)
            body_out.add_metric(list(labels), b_out)
            total.add_metric(list(labels), _buckets(tot), t_sum)
            if sum(ups):
                upstream.add_metric(list(labels), _buckets(ups), u_sum)
        yield from (requests, total, upstream, body_in, body_out)
        yield _counter(
            "ferryman_upstream_retries", "Requests sent to another peer", ["upstream"], t.retries
        )
        yield _counter(
            "ferryman_cache_requests", "Cache lookups by result", ["zone", "result"], t.cache
        )
        yield _counter(
            "ferryman_rejections",
            "Requests refused by a filter (rule: the limit zone or the access rule)",
            ["filter", "rule"],
            t.rejects,
        )
        yield GaugeMetricFamily(
            "ferryman_connections_active", "Open client connections", t.connections
        )
        yield GaugeMetricFamily("ferryman_workers", "Worker processes publishing", t.workers)
        yield GaugeMetricFamily(
            "ferryman_config_generation",
            "Configurations loaded since start (0: the first; +1 per successful reload)",
            max(t.up_generation, 0),
        )
        up = GaugeMetricFamily(
            "ferryman_upstream_peer_up", "1 if the peer takes traffic", labels=["upstream", "peer"]
        )
        for key, value in sorted(t.up.items()):
            up.add_metric(list(key), value)
        flight = GaugeMetricFamily(
            "ferryman_upstream_peer_in_flight",
            "Requests at the peer now",
            labels=["upstream", "peer"],
        )
        for key, value in sorted(t.in_flight.items()):
            flight.add_metric(list(key), value)
        yield from (up, flight)
        yield from _gc_families(t)
        yield from _cluster_families(t)


def _gc_families(t: _Totals) -> Iterator[Any]:
    """Python's cyclic garbage collector in the workers (prometheus-client's own
    python_gc_* would show the admin process instead). What a worker allocates per
    request is freed by reference counting; objects collected here were held in
    reference cycles, and a rate that grows with traffic points at one per request or
    per connection (each cost time in collections that hold the event loop)."""
    from prometheus_client.core import CounterMetricFamily

    runs = CounterMetricFamily(
        "ferryman_gc_collections",
        "Collections of Python's cyclic garbage collector in the workers",
        labels=["generation"],
    )
    found = CounterMetricFamily(
        "ferryman_gc_collected_objects",
        "Objects the collector found unreachable (held only by reference cycles)",
        labels=["generation"],
    )
    for generation, (n, collected) in enumerate(t.gc):
        runs.add_metric([str(generation)], n)
        found.add_metric([str(generation)], collected)
    yield from (runs, found)


def _cluster_families(t: _Totals) -> Iterator[Any]:
    """Only with a `cluster` section: Redis reachability and what it cost."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    if t.cluster_redis is None:
        return
    if t.cluster_up is not None:
        yield GaugeMetricFamily(
            "ferryman_cluster_redis_up",
            "1 if every worker of this instance reaches the cluster's Redis, else 0",
            t.cluster_up,
        )
    yield GaugeMetricFamily(
        "ferryman_cluster_instances",
        "Instances alive in the cluster's Redis, as last seen while it was reachable",
        t.cluster_instances,
    )
    yield CounterMetricFamily(
        "ferryman_cluster_redis_failed_calls",
        "Redis calls that failed or timed out",
        value=t.cluster_failed,
    )
    yield _counter(
        "ferryman_cluster_local_fallbacks",
        "Decisions taken with local-only state because Redis was unreachable",
        ["feature"],
        {f: t.cluster_fallbacks.get(f, 0) for f in FALLBACK_FEATURES},
    )


def _counter(name: str, doc: str, labels: list[str], values: dict[Any, int]) -> Any:
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return family


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
        running += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return out
