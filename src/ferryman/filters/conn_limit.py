"""limit_conn: at most N requests in flight per key (ngx_http_limit_conn_module).

A request that passes counts in its key's entry of each zone until its exchange ends,
whichever way (answered, client gone, upstream failed): the exchange calls `done`
exactly once, which gives the counts back. An entry whose count falls to 0 is removed,
so the zone holds only keys with requests in flight and never evicts one; a full group
refuses the request, as nginx does when its zone has no memory left.

Dry run counts as usual and logs what it would refuse, but lets the request through
(holding nothing, as nginx releases the counts of a request it would have refused).
A zone marked `shared` counts in the cluster's Redis instead, as leases the holding
instance renews (cluster/limiter.py): `check_shared` takes them, `done` gives them back.
Knows nothing about sockets or timers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from ferryman.config.schema import LimitConnSpec
from ferryman.filters.base import Deny, RequestFilter, SharedZones, Verdict
from ferryman.filters.rate_limit import describe, printable
from ferryman.filters.zone import LimitZone, State, ZoneFull, ZoneTable
from ferryman.proxy.variables import Template

__all__ = ["LimitConnFilter", "acquire", "release"]

_log: Final = logging.getLogger(__name__)

# nginx keeps the key in a node with a one-byte length.
MAX_KEY: Final = 255


def acquire(limit: int, state: State | None) -> tuple[bool, State | None]:
    """One more request for a key, if under `limit`: (taken, the state to store)."""
    count = state[0] if state is not None else 0
    if count >= limit:
        return False, state
    return True, (count + 1, 0)


def release(state: State | None) -> tuple[None, State | None]:
    """A request of the key ended; the last one removes the entry."""
    if state is None or state[0] <= 1:
        return None, None
    return None, (state[0] - 1, 0)


@dataclass(frozen=True, slots=True)
class _Limit:
    zone: str
    limit: int
    table: ZoneTable
    key: Template
    shared: bool = False  # counted in the cluster's Redis (the table: fallback)


class LimitConnFilter(RequestFilter):
    """A route's `limit_conn` list. Holds: `done` gives back what `check` counted."""

    holds = True

    def __init__(
        self,
        limits: Sequence[tuple[LimitConnSpec, LimitZone, Template]],
        status: int,
        dry_run: bool,
        remote: SharedZones | None = None,
    ) -> None:
        self._limits = tuple(
            _Limit(spec.zone, spec.limit, zone.table, key, zone.spec.shared)
            for spec, zone, key in limits
        )
        self.status = status
        self.dry_run = dry_run
        # exchange -> the (table, key hash) entries it counts in, until `done`.
        self._held: dict[Any, list[tuple[ZoneTable, int]]] = {}
        # Set only when some zone is shared: the cluster's Redis, and the leases each
        # exchange holds there, (zone, key, lease id), until `done`.
        self.remote = remote if any(limit.shared for limit in self._limits) else None
        self._leases: dict[Any, list[tuple[str, bytes, str]]] = {}

    @property
    def in_flight(self) -> int:
        """Exchanges this filter holds counts for (tests, admin)."""
        return len(self._held.keys() | self._leases.keys())

    def check(self, exchange: Any, now: float) -> Verdict:
        remote = self.remote
        if remote is not None and remote.available:
            walk = self.check_shared(exchange, now, remote)
            fallback = partial(self.check_local, exchange, now)
            return remote.pending(walk, fallback, partial(self.done, exchange))
        return self.check_local(exchange, now)

    async def check_shared(self, exchange: Any, now: float, remote: SharedZones) -> Deny | None:
        """`check_local` with a lease in Redis for each shared zone (local zones count in
        their tables). On an error everything taken is given back and it propagates."""
        now_ms = int(now * 1000)
        counted: list[tuple[ZoneTable, int]] = []
        leases: list[tuple[str, bytes, str]] = []
        try:
            for limit in self._limits:
                key = limit.key if isinstance(limit.key, bytes) else limit.key(exchange)
                if not key:
                    continue  # nginx: an empty key is not limited
                if len(key) > MAX_KEY:
                    _log.error("the limit_conn key is more than %d bytes, not limited", MAX_KEY)
                    continue
                if not limit.shared:
                    h = limit.table.hash(key)
                    if limit.table.update(h, now_ms, partial(acquire, limit.limit)):
                        counted.append((limit.table, h))
                        continue
                else:
                    lease = await remote.lease(limit.zone, key, limit.limit)
                    if lease is not None:
                        leases.append((limit.zone, key, lease))
                        continue
                self._log_limited(limit.zone, key, exchange)
                _give_back_leases(remote, leases)
                return self._refuse(counted, limit.zone)
        except BaseException:  # ZoneFull, Redis gone, cancelled: nothing stays taken
            _give_back(counted)
            _give_back_leases(remote, leases)
            raise
        if counted:
            self._held[exchange] = counted
        if leases:
            self._leases[exchange] = leases
        return None

    def _log_limited(self, zone: str, key: bytes, exchange: Any) -> None:
        _log.error(
            'limiting connections%s by zone "%s", key: "%s", %s',
            ", dry run," if self.dry_run else "",
            zone,
            printable(key),
            describe(exchange),
        )

    def check_local(self, exchange: Any, now: float) -> Verdict:
        """The decision with every zone's local table (shared zones too, while the
        cluster's Redis is unreachable)."""
        now_ms = int(now * 1000)
        counted: list[tuple[ZoneTable, int]] = []
        for limit in self._limits:
            key = limit.key if isinstance(limit.key, bytes) else limit.key(exchange)
            if not key:
                continue  # nginx: an empty key is not limited
            if len(key) > MAX_KEY:
                _log.error("the limit_conn key is more than %d bytes, not limited", MAX_KEY)
                continue
            h = limit.table.hash(key)
            try:
                taken = limit.table.update(h, now_ms, partial(acquire, limit.limit))
            except ZoneFull:
                _log.critical(
                    'no memory in limit_conn_zone "%s", %s', limit.zone, describe(exchange)
                )
                return self._refuse(counted)
            if not taken:
                _log.error(
                    'limiting connections%s by zone "%s", key: "%s", %s',
                    ", dry run," if self.dry_run else "",
                    limit.zone,
                    printable(key),
                    describe(exchange),
                )
                return self._refuse(counted, limit.zone)
            counted.append((limit.table, h))
        if counted:
            self._held[exchange] = counted
        return None

    def _refuse(self, counted: list[tuple[ZoneTable, int]], zone: str = "") -> Deny | None:
        _give_back(counted)
        if self.dry_run:
            return None
        reason = f'limiting connections by zone "{zone}"' if zone else "limit_conn zone full"
        return Deny(self.status, reason, logged=True)

    def done(self, exchange: Any) -> None:
        counted = self._held.pop(exchange, None)
        if counted is not None:
            _give_back(counted)
        if self.remote is not None:
            leases = self._leases.pop(exchange, None)
            if leases is not None:
                _give_back_leases(self.remote, leases)

    def __repr__(self) -> str:
        zones = ", ".join(f"{limit.zone}={limit.limit}" for limit in self._limits)
        mode = ", dry run" if self.dry_run else ""
        return f"LimitConnFilter({zones}; status {self.status}{mode}; {self.in_flight} held)"


def _give_back(counted: list[tuple[ZoneTable, int]]) -> None:
    for table, h in counted:
        table.update(h, 0, release)


def _give_back_leases(remote: SharedZones, leases: list[tuple[str, bytes, str]]) -> None:
    for zone, key, lease in leases:
        remote.unlease(zone, key, lease)
