"""One upstream group: which peers a request may use now, and what it learned after.

Owns eligibility (configured `down`, peers this request already tried, passive health,
the backup tier) and the in-flight counters `PeerState.active` / `requests`. The choice
among eligible peers belongs to the balancer; failure accounting to `PassiveHealth`.
Knows nothing of connections, sockets or clocks: time comes in as `now`, and every
method is synchronous so counters change with no await in between (DESIGN rule 8).

Semantics follow nginx's ngx_http_upstream_round_robin.c: backups serve only when no
primary is eligible; a group with a single primary never marks it failed; when nothing
is eligible every failure count is cleared so the next request can try again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

from ferryman.balancing.base import Balancer, Outcome
from ferryman.config.schema import UpstreamSpec
from ferryman.upstream.peer import PeerState

__all__ = ["UpstreamGroup"]

_FAILURE: Final = Outcome.FAILURE
_SUCCESS: Final = Outcome.SUCCESS


class UpstreamGroup:
    __slots__ = (
        "_backup",
        "_balancer",
        "_clear_after",
        "_has_down",
        "_has_limits",
        "_hears_all",
        "_peers",
        "_primary",
        "_ramp_until",
        "_ramping",
        "_single",
        "_spec",
        "key_fn",
        "measure",
        "on_failure",
        "queue_timer",
        "waiters",
    )

    def __init__(self, spec: UpstreamSpec, peers: Sequence[PeerState], balancer: Balancer) -> None:
        _check_indexes(spec.name, peers)
        self._spec = spec
        self._peers = tuple(peers)
        self._use(balancer)
        self._primary = tuple(p for p in self._peers if not p.spec.backup)
        self._backup = tuple(p for p in self._peers if p.spec.backup)
        # nginx `peers->single`: with one primary (down ones count), max_fails and
        # fail_timeout are ignored, since refusing the only server helps nobody.
        self._single = len(self._primary) == 1
        # Fast path: while no primary is configured down and no failure can still be
        # keeping a peer out (`now >= _clear_after`), a first attempt may use the whole
        # primary tier as is, with no filtering and no list built.
        self._has_down = _any_out(self._primary)
        # Set by app.py for keyed strategies: request context -> hash key (hash: the
        # compiled `hash_key` template; ip_hash: the client address).
        self.key_fn: Callable[[Any], bytes] | None = None
        # Set by app.py when workers share peer health: told of each peer taken out.
        self.on_failure: Callable[[PeerState], None] | None = None
        # Latency-aware strategies need the request's timings on release.
        self.measure = spec.balance in ("least_time", "peak_ewma") or (
            spec.balance == "random" and spec.random_two and spec.random_method == "least_time"
        )
        self._clear_after = float("-inf")
        self._has_limits = any(p.spec.max_conns for p in self._peers)
        # slow_start: until when some peer is still ramping its weight back up.
        self._ramp_until = float("-inf")
        self._ramping = False
        # Requests waiting for a peer below its max_conns (owned by the proxy layer,
        # kept here so every route to this group shares one queue), and the one timer
        # that expires them, first in first out (proxy/exchange.py: `_expire_queue`).
        self.waiters: deque[Any] = deque()
        self.queue_timer: Any = None

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def queue_limit(self) -> int:
        return self._spec.queue

    @property
    def queue_timeout(self) -> float:
        return self._spec.queue_timeout

    @property
    def strategy(self) -> str:
        return self._spec.balance

    @property
    def peers(self) -> tuple[PeerState, ...]:
        return self._peers

    def select(self, now: float, tried: int, key: bytes = b"") -> PeerState | None:
        """The peer for this attempt, or None: no live upstreams (the caller answers 502).

        `tried` is a bitmask of `PeerState.index` values this request already used.
        """
        if self._ramping:
            self._ramp(now)
            if now >= self._ramp_until:
                self._ramping = False  # that last pass restored every full weight
        if not tried and not self._has_down and not self._has_limits and now >= self._clear_after:
            first = self._balancer.pick(self._primary, key)
            first.active += 1
            first.requests += 1
            return first
        peer = self._pick_from(self._primary, now, tried, self._single, key)
        if peer is None and self._backup:
            peer = self._pick_from(self._backup, now, tried, False, key)
        if peer is None:
            if self._has_limits and self.at_capacity(now, tried):
                return None  # busy, not failed: the caller may queue the request
            # nginx: "all peers failed, mark them as live for quick recovery". Otherwise a
            # fully failed group would refuse all traffic for a whole fail_timeout.
            for p in self._peers:
                p.health.reset()
            self._clear_after = float("-inf")
            return None
        peer.active += 1
        peer.requests += 1
        return peer

    def release(
        self,
        peer: PeerState,
        outcome: Outcome,
        now: float,
        header_time: float = -1.0,
        total_time: float = -1.0,
    ) -> None:
        """The attempt on `peer` (from `select`) is over; feed health, then the balancer.
        The timings (seconds; -1 when not measured) are for latency-aware balancers."""
        peer.active -= 1
        peer.last_header_time = header_time
        peer.last_total_time = total_time
        if outcome is _FAILURE:
            health = peer.health
            health.record_failure(now)
            if health.unavailable_until > self._clear_after:
                self._clear_after = health.unavailable_until
            if self.on_failure is not None and health.unavailable_until > now:
                self.on_failure(peer)
            if peer.spec.slow_start and health.unavailable_until > now:
                self._will_recover(peer, health.unavailable_until)
        elif outcome is _SUCCESS:
            peer.health.record_success(now)
        if outcome is _FAILURE or self._hears_all:
            self._balancer.release(peer, outcome)

    def at_capacity(self, now: float, tried: int) -> bool:
        """True when some peer could take the request but for its max_conns."""
        if not self._has_limits:
            return False
        for tier, single in ((self._primary, self._single), (self._backup, False)):
            for p in tier:
                if (
                    not p.spec.down
                    and not p.probe_down
                    and not p.drained
                    and not (tried >> p.index) & 1
                    and (single or now >= p.health.unavailable_until)
                    and p.spec.max_conns
                    and p.active >= p.spec.max_conns
                ):
                    return True
        return False

    def sync_health(
        self, down_until: Callable[[int], float], probe_down: Callable[[int], bool], now: float
    ) -> None:
        """Take in what other processes learned (the shared table): peers another
        worker saw fail, and peers failing their active checks."""
        for p in self._peers:
            if p.slot < 0:
                continue
            until = down_until(p.slot)
            if until > p.health.unavailable_until and until > now:
                self.suspend(p, until - now, now)
            was_down, p.probe_down = p.probe_down, probe_down(p.slot)
            if was_down and not p.probe_down and p.spec.slow_start:
                self._will_recover(p, now)
        self._has_down = _any_out(self._primary)

    def replace_peers(self, peers: Sequence[PeerState], balancer: Balancer) -> None:
        """A `resolve` server's addresses changed: a new peer list (indexes reassigned;
        peers that stay keep their state) and a balancer built for it. Requests in
        flight keep their peer objects and release them harmlessly; one retried across
        the change may find its tried mask pointing at other peers, which at worst
        retries a peer twice or skips one."""
        for i, p in enumerate(peers):
            p.index = i
        self._peers = tuple(peers)
        self._use(balancer)
        self._primary = tuple(p for p in self._peers if not p.spec.backup)
        self._backup = tuple(p for p in self._peers if p.spec.backup)
        self._single = len(self._primary) == 1
        self._has_down = _any_out(self._primary)
        self._has_limits = any(p.spec.max_conns for p in self._peers)

    def set_drained(self, peer: PeerState, drained: bool) -> None:
        """Admin drain: `peer` gets no new request; those in flight finish."""
        peer.drained = drained
        self._has_down = _any_out(self._primary)

    def set_weight(self, peer: PeerState, weight: int, balancer: Callable[[], Balancer]) -> None:
        """Admin weight change: the peer's weight becomes `weight` (the spec is replaced,
        as balancers read `spec.weight`), and the balancer is rebuilt by `balancer` for
        strategies that precompute weight tables (hash, ip_hash)."""
        if weight == peer.spec.weight:
            return
        peer.spec = replace(peer.spec, weight=weight)
        peer.weight = weight
        peer.weight_now = weight
        peer.effective_weight = weight
        peer.current_weight = 0
        self._use(balancer())

    def _use(self, balancer: Balancer) -> None:
        self._balancer = balancer
        # Asked once per balancer, not per request: the answer is the strategy's.
        self._hears_all = balancer.hears_every_outcome()

    def _will_recover(self, peer: PeerState, at: float) -> None:
        """slow_start: from `at`, `peer`'s weight ramps back up over spec.slow_start."""
        peer.recovered_at = at
        self._ramp_until = max(self._ramp_until, at + peer.spec.slow_start)
        self._ramping = True

    def _ramp(self, now: float) -> None:
        # nginx (commercial) slow_start: the weight grows linearly from 1 to its value.
        # Round-robin reads effective_weight, least_conn weight_now: both are capped.
        for p in self._peers:
            span = p.spec.slow_start
            if not span:
                continue
            elapsed = now - p.recovered_at
            if elapsed >= span:
                p.weight_now = p.spec.weight
            elif elapsed >= 0:
                p.weight_now = max(1, int(p.spec.weight * elapsed / span))
                if p.effective_weight > p.weight_now:
                    p.effective_weight = p.weight_now

    def has_candidate(self, now: float, tried: int) -> bool:
        """Would `select` find a peer for another attempt? (Without choosing one.)"""
        for tier, single in ((self._primary, self._single), (self._backup, False)):
            for p in tier:
                if (
                    not p.spec.down
                    and not p.probe_down
                    and not p.drained
                    and not (tried >> p.index) & 1
                    and (single or now >= p.health.unavailable_until)
                ):
                    return True
        return False

    def suspend(self, peer: PeerState, seconds: float, now: float) -> None:
        """Take `peer` out for `seconds` (a 503 or 429 with Retry-After)."""
        until = now + seconds
        if until > peer.health.unavailable_until:
            peer.health.unavailable_until = until
        if until > self._clear_after:
            self._clear_after = until

    def _pick_from(
        self,
        tier: tuple[PeerState, ...],
        now: float,
        tried: int,
        ignore_health: bool,
        key: bytes = b"",
    ) -> PeerState | None:
        # One comprehension pass: it is the cheapest filter CPython has for ~6 peers, and
        # the balancer protocol takes a sequence.
        candidates = [
            p
            for p in tier
            if not p.spec.down
            and not p.probe_down
            and not p.drained
            and not (tried >> p.index) & 1
            and (ignore_health or now >= p.health.unavailable_until)
            and (not p.spec.max_conns or p.active < p.spec.max_conns)
        ]
        if not candidates:
            return None
        return self._balancer.pick(candidates, key)

    def __repr__(self) -> str:
        peers = ", ".join(
            f"{p.name}{' backup' if p.spec.backup else ''}{' down' if p.spec.down else ''}"
            f" active={p.active}"
            for p in self._peers
        )
        return f"UpstreamGroup({self._spec.name!r} {self._balancer!r} [{peers}])"


def _any_out(tier: tuple[PeerState, ...]) -> bool:
    # Configured down, failing active checks, or drained through the admin API: the
    # fast path of `select` is off while any primary is out.
    return any(p.spec.down or p.probe_down or p.drained for p in tier)


def _check_indexes(name: str, peers: Sequence[PeerState]) -> None:
    # The tried mask is indexed by PeerState.index, so indexes must be distinct and >= 0.
    seen: set[int] = set()
    for p in peers:
        if p.index < 0 or p.index in seen:
            raise ValueError(
                f"upstream {name!r}: peer {p.name} has a bad or duplicate index {p.index}"
            )
        seen.add(p.index)
