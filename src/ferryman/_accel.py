"""The optional compiled hot path: mypyc builds of the modules below, with their
pure-Python sources as the always-available fallback.

`scripts/build-accel.sh` (run by `make`) compiles them in place, next to their sources.
Which implementation runs is chosen once, here, before any of them is imported:

- `FERRYMAN_PURE=1` forces the sources;
- if any compiled module is missing or older than its source (someone edited the .py
  after the last build), all of them fall back to the sources, with a warning: compiled
  modules reach into each other's classes directly, so the two kinds never mix.

Nothing else in Ferryman knows which one it runs; `implementation()` says it for logs
and benchmarks.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

__all__ = ["ACCEL_MODULES", "implementation", "select_implementation"]

# The per-request path; keep in step with scripts/build-accel.sh (it reads this list).
ACCEL_MODULES = (
    # The base of the small per-request value classes (cache rules, script outcomes,
    # map results): compiled classes derive only from compiled ones.
    "ferryman.value",
    "ferryman.http.fields",
    "ferryman.http.messages",
    "ferryman.http.request_parser",
    "ferryman.http.response_parser",
    "ferryman.http.serialize",
    "ferryman.http.uri",
    "ferryman.http.hpack_codec",
    "ferryman.health.passive",
    "ferryman.cache.policy",
    "ferryman.cache.handler",
    "ferryman.cache.zones",
    # A cache hit's lookup: the memory tier, the disk tier's coherence stamps, the
    # entry's age (disk.py, a hit's rarer path, stays interpreted).
    "ferryman.cache.entry",
    "ferryman.cache.store",
    "ferryman.cache.memory",
    "ferryman.cache.stamps",
    "ferryman.cache.tiered",
    "ferryman.balancing.base",
    "ferryman.balancing.round_robin",
    "ferryman.balancing.least_conn",
    "ferryman.balancing.weighted",
    "ferryman.balancing.hash",
    "ferryman.balancing.ip_hash",
    "ferryman.balancing.random_pick",
    "ferryman.balancing.least_time",
    "ferryman.balancing.peak_ewma",
    "ferryman.upstream.peer",
    "ferryman.upstream.group",
    "ferryman.upstream.connection",
    "ferryman.upstream.pool",
    "ferryman.routing.locations",
    "ferryman.routing.table",
    "ferryman.proxy.variables",
    "ferryman.proxy.maps",
    "ferryman.proxy.script",
    "ferryman.proxy.route",
    "ferryman.proxy.exchange",
    "ferryman.server.connection",
    # The filters a route's limits and rules run on each request: rate and connection
    # limits, their shared tables and locks, access rules.
    "ferryman.filters.base",
    "ferryman.filters.shared_locks",
    "ferryman.filters.zone",
    "ferryman.filters.rate_limit",
    "ferryman.filters.conn_limit",
    "ferryman.filters.access",
    # Read on every request (timeouts, the Date line, the sweeper's clock): compiled,
    # their attributes are struct fields instead of lookups by name.
    "ferryman.write_batch",
    "ferryman.server.context",
    "ferryman.server.sweeper",
    # What every request pays for observability: the access log's entries and
    # formatting, the metrics counters, the recent-requests ring.
    "ferryman.observability.access_log",
    "ferryman.observability.metrics",
    "ferryman.observability.recent",
    # HTTPS and HTTP/2: the TLS layer under every HTTPS request, and each HTTP/2
    # stream's translation to and from the exchange (the h2 library stays interpreted).
    "ferryman.tls.server",
    "ferryman.server.h2_stream",
    "ferryman.server.h2_connection",
)


_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the .py source of the accelerated modules, ahead of their .so builds."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names or not path:
            return None
        leaf = fullname.rpartition(".")[2]
        for entry in path:
            source = os.path.join(entry, leaf + ".py")
            if os.path.exists(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def _compiled_state(package_dir: str) -> str:
    """'compiled', 'absent' (no build) or 'stale' (some build older than its source)."""
    found = stale = 0
    for name in ACCEL_MODULES:
        rel = name.split(".")[1:]
        source = os.path.join(package_dir, *rel) + ".py"
        # The build for this interpreter only (a .so for another Python is not ours).
        build = os.path.join(package_dir, *rel) + _SUFFIX
        if not os.path.exists(build):
            continue
        found += 1
        if os.path.getmtime(build) < os.path.getmtime(source):
            stale += 1
    if found == 0:
        return "absent"
    if stale or found != len(ACCEL_MODULES):
        return "stale"
    return "compiled"


def select_implementation(package_dir: str) -> str:
    state = _compiled_state(package_dir)
    if state == "compiled" and os.environ.get("FERRYMAN_PURE") != "1":
        return "compiled"
    if state == "stale":
        warnings.warn(
            "ferryman: compiled modules are older than their sources; running the pure-Python "
            "sources (rebuild with `make accel`)",
            RuntimeWarning,
            stacklevel=2,
        )
    if state != "absent":
        sys.meta_path.insert(0, _SourceFinder(frozenset(ACCEL_MODULES)))
    return "pure"


def implementation() -> str:
    """'compiled' or 'pure': what the hot path runs in this process."""
    mod = sys.modules.get("ferryman.proxy.exchange")
    if mod is None:
        return "not loaded"
    return "compiled" if (mod.__file__ or "").endswith(".so") else "pure"
