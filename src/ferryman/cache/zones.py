"""A worker's cache zones, built from Config.cache_zones by the composition root, and
each route's RouteCache bound to its zone.

Owns the per-worker wiring: one store per zone (cache/tiered.py `open_store`: a memory
tier per worker, the disk tier at CacheZoneSpec.path shared by all workers), and the
sweeper hook that expires inactive entries. Knows nothing about requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ferryman.cache.handler import CacheZone, RouteCache
from ferryman.cache.tiered import open_store
from ferryman.errors import ConfigError

if TYPE_CHECKING:
    from ferryman.config.schema import CacheSpec, CacheZoneSpec
    from ferryman.server.sweeper import Sweeper

__all__ = ["open_cache_zones", "route_cache"]


def open_cache_zones(
    specs: tuple[CacheZoneSpec, ...],
    sweeper: Sweeper,
    source: str,
    clock: Callable[[], float] = time.time,
) -> dict[str, CacheZone]:
    zones: dict[str, CacheZone] = {}
    for i, spec in enumerate(specs):
        try:
            store = open_store(spec, clock=clock)
        except OSError as exc:
            raise ConfigError(
                f"{source}: cache_zones[{i}].path", f"cannot open cache directory: {exc}"
            ) from None
        zone = zones[spec.name] = CacheZone(spec.name, store, spec.inactive, clock)
        sweeper.every_tick(_expiry(zone, clock))
    return zones


def _expiry(zone: CacheZone, clock: Callable[[], float]) -> Callable[[], None]:
    def expire() -> None:
        zone.expire(clock())

    return expire


def route_cache(
    spec: CacheSpec, zones: dict[str, CacheZone], where: str, user_vars: frozenset[str]
) -> RouteCache:
    zone = zones.get(spec.zone)
    if zone is None:
        raise ConfigError(f"{where}.cache.zone", f"cache zone {spec.zone!r} is not defined")
    return RouteCache(spec, zone, where, user_vars)
