"""limit_req: nginx's leaky bucket per key (ngx_http_limit_req_module).

Two parts. The arithmetic is pure (no clock, no I/O): it takes `now` in milliseconds,
a key's stored `Bucket` and the `Rule`, and returns the decision and the new bucket,
with nginx's integers: excess in thousandths of a request, the rate in thousandths of
a request per second (`10r/s` is 10000, `1r/m` is 16), times in whole milliseconds.
`LimitReqFilter` applies a route's limits to a request through the shared zones.

nginx's rules, kept here:
  - a key's first request finds an empty bucket (excess 0); each later one drains
    `rate * ms / 1000` since the last and adds 1000; over `burst` it is rejected and
    the bucket is left as it was;
  - excess up to `delay` (0, or burst with nodelay) passes at once; beyond it the request
    waits `(excess - delay) * 1000 / rate` ms, which is when the bucket has drained back;
  - several limits on one route all apply: each is looked up in order without taking the
    request, the first over its burst rejects (no bucket changes), otherwise the last is
    taken at lookup and the others after; the longest wait decides.
A zone marked `shared` keeps its buckets in the cluster's Redis (cluster/limiter.py runs
the same arithmetic there, in one script per bucket change): a route with one walks its
limits in `check_shared`, the same walk with a round trip per shared bucket.
Knows nothing about sockets or the exchange beyond the variables its key reads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from ferryman.config.schema import LimitReqSpec
from ferryman.filters.base import Delay, Deny, RequestFilter, SharedZones, Verdict
from ferryman.filters.zone import LimitZone, State, ZoneTable
from ferryman.proxy.variables import Template

__all__ = [
    "NO_DELAY",
    "Bucket",
    "LimitReqFilter",
    "Rule",
    "delay_ms",
    "describe",
    "lookup",
    "printable",
    "rate_milli",
    "retry_after",
    "take",
]

_log: Final = logging.getLogger(__name__)

# nodelay: no excess is ever delayed (nginx sets delay to NGX_MAX_INT_T_VALUE / 1000).
NO_DELAY: Final = 1 << 62
# nginx refuses longer limit_req keys (and logs it); limit_conn's bound is 255.
MAX_KEY: Final = 65535


# A key's state: (excess in thousandths of a request, last in ms). A plain tuple, the
# zone's `State`, not a NamedTuple: a NamedTuple's constructor is Python code that the
# compiled build would run twice a request.
Bucket = State


@dataclass(frozen=True, slots=True)
class Rule:
    """One `limit_req` with its zone's rate, in nginx's integer units."""

    zone: str
    rate: int  # thousandths of a request per second, > 0
    burst: int  # thousandths of a request
    delay: int  # thousandths of a request; NO_DELAY for nodelay

    @classmethod
    def from_spec(cls, spec: LimitReqSpec, zone_rate: float) -> Rule:
        delay = NO_DELAY if spec.nodelay else spec.delay * 1000
        return cls(spec.zone, rate_milli(zone_rate), spec.burst * 1000, delay)


def rate_milli(rate: float) -> int:
    """Requests per second -> nginx's `rate * 1000 / scale`, rounded down: 1r/m is 16.
    (The epsilon keeps 0.05 * 1000 = 49.999... from becoming 49.)"""
    return max(1, math.floor(rate * 1000 + 1e-6))


def _elapsed(bucket: Bucket, now_ms: int) -> int:
    ms = now_ms - bucket[1]
    # nginx: a clock that went far back counts as 1 ms, a little back as none.
    if ms < -60000:
        return 1
    return max(ms, 0)


def _drained(bucket: Bucket, ms: int, rate: int) -> int:
    # The bucket drains `rate * ms / 1000` thousandths, then this request adds 1000.
    return max(0, bucket[0] - rate * ms // 1000 + 1000)


def lookup(rule: Rule, bucket: Bucket | None, now_ms: int) -> tuple[bool, int]:
    """(over burst, excess with this request) without taking the request."""
    if bucket is None:
        return False, 0
    excess = _drained(bucket, _elapsed(bucket, now_ms), rule.rate)
    return excess > rule.burst, excess


def take(rule: Rule, bucket: Bucket | None, now_ms: int) -> tuple[int, Bucket]:
    """The request joins the bucket: (its excess, the bucket to store)."""
    if bucket is None:
        return 0, (0, now_ms)
    ms = _elapsed(bucket, now_ms)
    excess = _drained(bucket, ms, rule.rate)
    # As nginx: `last` moves only when time passed, so no drain is lost to rounding.
    return excess, (excess, now_ms if ms else bucket[1])


def delay_ms(rule: Rule, excess: int) -> int:
    """How long a request that left the bucket at `excess` waits."""
    if excess <= rule.delay:
        return 0
    return (excess - rule.delay) * 1000 // rule.rate


def retry_after(rule: Rule, excess: int) -> int:
    """Whole seconds (at least 1, rounded up) until a request rejected at `excess` would
    find the bucket at its burst again: the Retry-After of a 429."""
    ms = -(-(excess - rule.burst) * 1000 // rule.rate)
    return max(1, -(-ms // 1000))


# --- the bucket functions as zone changes (run with the entry locked) ---------------


def _check_only(
    rule: Rule, now_ms: int, state: State | None
) -> tuple[tuple[bool, int], State | None]:
    return lookup(rule, state, now_ms), state


def _check_and_take(
    rule: Rule, now_ms: int, state: State | None
) -> tuple[tuple[bool, int], State | None]:
    busy, excess = lookup(rule, state, now_ms)
    if busy:
        return (True, excess), state
    excess, after = take(rule, state, now_ms)
    return (False, excess), after


def _take(rule: Rule, now_ms: int, state: State | None) -> tuple[int, State | None]:
    return take(rule, state, now_ms)


# --- the filter --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Limit:
    rule: Rule
    table: ZoneTable
    key: Template
    shared: bool = False  # its buckets live in the cluster's Redis (the table: fallback)


class LimitReqFilter(RequestFilter):
    """A route's `limit_req` list, applied as one filter (nginx's preaccess handler)."""

    def __init__(
        self,
        limits: Sequence[tuple[LimitReqSpec, LimitZone, Template]],
        status: int,
        dry_run: bool,
        remote: SharedZones | None = None,
    ) -> None:
        self._limits = tuple(
            _Limit(Rule.from_spec(spec, zone.spec.rate), zone.table, key, zone.spec.shared)
            for spec, zone, key in limits
        )
        self.status = status
        self.dry_run = dry_run
        # Set only when some zone is shared: the cluster's Redis (cluster/limiter.py).
        self.remote = remote if any(limit.shared for limit in self._limits) else None

    def check(self, exchange: Any, now: float) -> Verdict:
        remote = self.remote
        if remote is not None and remote.available:
            walk = self.check_shared(exchange, now, remote)
            return remote.pending(walk, partial(self.check_local, exchange, now), None)
        return self.check_local(exchange, now)

    def check_local(self, exchange: Any, now: float) -> Verdict:
        """The decision with every zone's local table (shared zones too, while the
        cluster's Redis is unreachable)."""
        now_ms = int(now * 1000)
        taken: list[tuple[_Limit, int, bytes]] = []  # looked up, to take after
        chosen: tuple[Rule, int, bytes] | None = None  # the last limit's, if it had a key
        last = len(self._limits) - 1
        for i, limit in enumerate(self._limits):
            key = limit.key if isinstance(limit.key, bytes) else limit.key(exchange)
            if not key:
                continue  # nginx: an empty key is not limited
            if len(key) > MAX_KEY:
                _log.error("the limit_req key is more than %d bytes, not limited", MAX_KEY)
                continue
            h = limit.table.hash(key)
            change = _check_and_take if i == last else _check_only
            busy, excess = limit.table.update(h, now_ms, partial(change, limit.rule, now_ms))
            if busy:
                return self._reject(exchange, limit.rule, excess, key)
            if i == last:
                chosen = (limit.rule, excess, key)
            else:
                taken.append((limit, h, key))
        return self._account(exchange, now_ms, taken, chosen)

    def _account(
        self,
        exchange: Any,
        now_ms: int,
        taken: list[tuple[_Limit, int, bytes]],
        chosen: tuple[Rule, int, bytes] | None,
    ) -> Verdict:
        """Takes the request into the limits looked up first; the longest wait wins."""
        wait = delay_ms(chosen[0], chosen[1]) if chosen is not None else 0
        for limit, h, key in reversed(taken):
            excess = limit.table.update(h, now_ms, partial(_take, limit.rule, now_ms))
            ms = delay_ms(limit.rule, excess)
            if ms > wait:
                wait, chosen = ms, (limit.rule, excess, key)
        return self._delay(exchange, wait, chosen)

    async def check_shared(
        self, exchange: Any, now: float, remote: SharedZones
    ) -> Deny | Delay | None:
        """`check_local`'s walk, with each shared zone's bucket changed in Redis (its
        own clock; one atomic script per change) and the others in their tables.
        Raises what `remote` raises (the caller then decides locally)."""
        now_ms = int(now * 1000)
        taken: list[tuple[_Limit, bytes]] = []
        chosen: tuple[Rule, int, bytes] | None = None
        last = len(self._limits) - 1
        for i, limit in enumerate(self._limits):
            key = limit.key if isinstance(limit.key, bytes) else limit.key(exchange)
            if not key:
                continue  # nginx: an empty key is not limited
            if len(key) > MAX_KEY:
                _log.error("the limit_req key is more than %d bytes, not limited", MAX_KEY)
                continue
            mode = "check_take" if i == last else "check"
            busy, excess = await self._change(limit, key, mode, now_ms, remote)
            if busy:
                return self._reject(exchange, limit.rule, excess, key)
            if i == last:
                chosen = (limit.rule, excess, key)
            else:
                taken.append((limit, key))
        wait = delay_ms(chosen[0], chosen[1]) if chosen is not None else 0
        for limit, key in reversed(taken):
            _, excess = await self._change(limit, key, "take", now_ms, remote)
            ms = delay_ms(limit.rule, excess)
            if ms > wait:
                wait, chosen = ms, (limit.rule, excess, key)
        return self._delay(exchange, wait, chosen)

    @staticmethod
    async def _change(
        limit: _Limit, key: bytes, mode: str, now_ms: int, remote: SharedZones
    ) -> tuple[bool, int]:
        rule = limit.rule
        if limit.shared:
            return await remote.limit_req(rule.zone, key, rule.rate, rule.burst, mode)
        h = limit.table.hash(key)
        if mode == "take":
            return False, limit.table.update(h, now_ms, partial(_take, rule, now_ms))
        change = _check_and_take if mode == "check_take" else _check_only
        return limit.table.update(h, now_ms, partial(change, rule, now_ms))

    def _delay(
        self, exchange: Any, wait: int, chosen: tuple[Rule, int, bytes] | None
    ) -> Delay | None:
        if wait == 0 or chosen is None:
            return None
        rule, excess, key = chosen
        # nginx logs delays one level below limit_req_log_level (error): warn.
        _log.warning(
            'delaying request%s, excess: %d.%03d, by zone "%s", key: "%s", %s',
            ", dry run" if self.dry_run else "",
            excess // 1000,
            excess % 1000,
            rule.zone,
            printable(key),
            describe(exchange),
        )
        return None if self.dry_run else Delay(wait / 1000)

    def _reject(self, exchange: Any, rule: Rule, excess: int, key: bytes) -> Deny | None:
        _log.error(
            'limiting requests%s, excess: %d.%03d by zone "%s", key: "%s", %s',
            ", dry run" if self.dry_run else "",
            excess // 1000,
            excess % 1000,
            rule.zone,
            printable(key),
            describe(exchange),
        )
        if self.dry_run:
            return None
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if self.status == 429:
            headers = ((b"Retry-After", b"%d" % retry_after(rule, excess)),)
        return Deny(
            self.status, f'limiting requests by zone "{rule.zone}"', headers=headers, logged=True
        )

    def __repr__(self) -> str:
        zones = ", ".join(limit.rule.zone for limit in self._limits)
        mode = ", dry run" if self.dry_run else ""
        return f"LimitReqFilter({zones}; status {self.status}{mode})"


def describe(exchange: Any) -> str:
    """nginx's error-log context: `client: ..., request: "...", host: "..."`."""
    head = exchange.head
    host = head.host or b""
    client = exchange.remote_addr.decode("latin-1")
    return f'client: {client}, request: "{printable(head.request_line)}", host: "{printable(host)}"'


def printable(value: bytes) -> str:
    """`value` for a log line: printable ASCII as is, anything else as \\xNN."""
    # Keys and request lines come from clients: escape what could forge log lines.
    return "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02x}" for b in value
    )
