"""The proxy cache in a request's lifecycle (DESIGN.md steps 5 and 9): the glue between
an exchange and a cache zone's store, for any proxy that runs Exchanges (reverse today,
forward later).

Owns, per route, the compiled CacheSpec (`RouteCache`: key, bypass and no_cache
templates, use_stale conditions) and, per request, the cache's part of the exchange
(`CacheOp`): lookup, answering from the store (with `Age`, backpressure, HEAD from a
stored GET), revalidation (conditional request, 304 merge), storing while the body
streams to the client (committed only when the upstream body ended whole), serving
stale on upstream errors, collapsed forwarding (proxy_cache_lock), background refresh
(stale-while-revalidate, proxy_cache_background_update), PURGE and Cache-Status.
Per worker, `CacheZone` holds a store and what is in flight for its keys.

It must not know the RFC 9111 rules (cache/policy.py decides), how stores keep bytes
(cache/store.py and its implementations), or how exchanges talk to sockets: it uses the
exchange's public steps (send_upstream, respond_local, end_from_cache, release_upstream).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol

from ferryman.balancing.base import Outcome
from ferryman.cache import policy
from ferryman.cache.disk import DiskEntry
from ferryman.cache.policy import Decision
from ferryman.cache.store import CHUNK_SIZE, BytesEntry, StoreError
from ferryman.http.fields import HOP_BY_HOP, trim_ows
from ferryman.http.messages import Framing, RequestHead
from ferryman.http.serialize import status_line
from ferryman.proxy.route import render_add_headers
from ferryman.proxy.variables import Template, compile_template

if TYPE_CHECKING:
    import asyncio

    from ferryman.cache.entry import EntryMeta
    from ferryman.cache.store import CachedEntry, EntryWriter, Store
    from ferryman.config.schema import CacheSpec
    from ferryman.http.messages import ResponseHead
    from ferryman.proxy.exchange import Exchange
    from ferryman.proxy.route import Route

__all__ = ["CacheOp", "CacheZone", "DetachedClient", "RemoteTier", "RouteCache"]

_log: Final = logging.getLogger(__name__)

# min_uses counters kept per zone and worker before they are forgotten all at once
# (nginx keeps them in the keys zone, bounded by its size).
_MAX_USE_COUNTERS: Final = 100_000
# Stored fields never replayed: framing and hop-by-hop fields (the proxy re-frames),
# our own Age (recomputed per answer), and fields of one hop of proxies.
_NOT_STORED: Final = HOP_BY_HOP | {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
_NOT_REPLAYED: Final = _NOT_STORED | {b"age", b"date", b"set-cookie"}
# Client conditionals: stripped from the upstream request of a cacheable request so the
# answer can be stored whole (as nginx does), then judged against the stored entry.
_CONDITIONALS: Final = (b"if-none-match:", b"if-modified-since:")
# nginx's proxy_cache_use_stale conditions for an error with nothing received.
_ERROR_CONDITIONS: Final = {502: ("error", "invalid_header"), 504: ("timeout",)}
# RFC 5861 4: stale-if-error covers these answers too.
_ERROR_STATUSES: Final = frozenset({500, 502, 503, 504})


class RemoteTier(Protocol):
    """A tier behind the zone's store that answers asynchronously (the cluster's Redis,
    cluster/cache.py): consulted once per request, on a local miss."""

    def fetch(self, key: str, done: Callable[[], None]) -> bool:
        """Start bringing `key`'s entries into the zone's store; True when started
        (`done` is called once, from the loop), False when there is nothing to wait
        for (the tier is unreachable: the request goes on as a miss at once)."""
        ...


class CacheZone:
    """One cache zone in one worker: its store, and what is in flight for its keys."""

    __slots__ = (
        "_next_expiry",
        "clock",
        "fills",
        "inactive",
        "name",
        "remote",
        "store",
        "updating",
        "uses",
    )

    def __init__(
        self,
        name: str,
        store: Store,
        inactive: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.store = store
        self.inactive = inactive
        # Wall-clock seconds, as the policy and the stores count them (injected).
        self.clock = clock
        # proxy_cache_lock: key -> the fetch that other requests for the key wait on.
        self.fills: dict[str, Fill] = {}
        # Keys with a background refresh running (one per key at a time).
        self.updating: set[str] = set()
        self.uses: dict[str, int] = {}
        self._next_expiry = 0.0
        # A shared zone's tier in the cluster's Redis (set by app.py; None: local only).
        self.remote: RemoteTier | None = None

    def count_use(self, key: str) -> int:
        uses = self.uses
        if len(uses) >= _MAX_USE_COUNTERS:
            uses.clear()
        n = uses.get(key, 0) + 1
        uses[key] = n
        return n

    def expire(self, now: float) -> None:
        """The sweeper's hook: remove entries unused for `inactive`, checked a few times
        per `inactive` period rather than every tick (a disk scan is not free)."""
        if now < self._next_expiry:
            return
        self._next_expiry = now + min(60.0, max(1.0, self.inactive / 10))
        try:
            removed = self.store.expire(now)
        except OSError as exc:
            _log.error("cache zone %s: expiring entries failed: %s", self.name, exc)
            return
        if removed:
            _log.info("cache zone %s: %d inactive entries removed", self.name, removed)

    def __repr__(self) -> str:
        return (
            f"CacheZone({self.name} fills={len(self.fills)} updating={len(self.updating)} "
            f"{self.store!r})"
        )


class Fill:
    """An upstream fetch for a key that other requests wait on (proxy_cache_lock)."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[tuple[Exchange, CacheOp, asyncio.TimerHandle]] = []


def _holds(templates: tuple[Template, ...], ex: Exchange) -> bool:
    """nginx proxy_cache_bypass / proxy_no_cache: any value non-empty and not "0"."""
    for tpl in templates:
        value = tpl if isinstance(tpl, bytes) else tpl(ex)
        if value and value != b"0":
            return True
    return False


def _ignored(ex: Exchange) -> frozenset[bytes]:
    """The upstream fields the route's cache decisions leave out (nginx
    proxy_ignore_headers; X-Accel-Redirect and the other X-Accel-* ones change nothing
    here, Ferryman acts on none of them)."""
    route = ex.route
    names = route.spec.ignore_headers if route is not None else ()
    return frozenset(n.encode() for n in names) if names else _NOTHING


_NOTHING: Final = frozenset[bytes]()


class RouteCache:
    """A route's CacheSpec compiled for one worker, bound to its zone."""

    __slots__ = (
        "bypass",
        "key",
        "lock",
        "lock_timeout",
        "methods",
        "metric_keys",
        "min_uses",
        "no_cache",
        "spec",
        "status_header",
        "use_stale",
        "zone",
    )

    def __init__(
        self, spec: CacheSpec, zone: CacheZone, where: str, user_vars: frozenset[str]
    ) -> None:
        self.spec = spec
        self.zone = zone
        self.key = compile_template(spec.key, f"{where}.cache.key", user_vars)
        self.bypass = tuple(
            compile_template(t, f"{where}.cache.bypass[{i}]", user_vars)
            for i, t in enumerate(spec.bypass)
        )
        self.no_cache = tuple(
            compile_template(t, f"{where}.cache.no_cache[{i}]", user_vars)
            for i, t in enumerate(spec.no_cache)
        )
        self.methods = frozenset(m.encode() for m in spec.methods)
        self.use_stale = frozenset(spec.use_stale)
        self.lock = spec.lock
        self.lock_timeout = spec.lock_timeout
        self.min_uses = spec.min_uses
        self.status_header = spec.status_header
        # The metrics' counter keys, (zone, result), made once: counting a hit then
        # allocates nothing. `object`, not `tuple[str, str]`, so that the compiled build
        # hands the tuple on as it is rather than unboxing and re-making it.
        name = str(zone.name)
        self.metric_keys: dict[str, object] = {r: (name, r) for r in policy.UPSTREAM_CACHE_STATUSES}

    def render_key(self, ex: Exchange) -> str:
        key = self.key
        return (key if isinstance(key, bytes) else key(ex)).decode("latin-1")

    # ---- the request phase (exchange `_proceed`, before dispatch) ----

    def begin(self, ex: Exchange) -> bool:
        """The cache's turn before the upstream: True when it took the request over
        (answered it, parked it behind a fill, or will dispatch it itself); False to let
        the exchange dispatch now (a miss, a revalidation, a method not cached)."""
        method = ex.head.method
        if method == b"PURGE" and self.spec.purge:
            self._purge(ex)
            return True
        op = CacheOp(self, self.render_key(ex))
        ex.cache_op = op
        if method not in self.methods:
            op.fwd = "method"
            op.passing = True
            return False
        op.rules = policy.request_rules(method, ex.head.headers)
        if self.bypass and _holds(self.bypass, ex):
            op.fwd = "bypass"
            return self._go_upstream(ex, op)
        return self._lookup(ex, op)

    def _lookup(self, ex: Exchange, op: CacheOp) -> bool:
        store = self.zone.store
        headers = ex.head.headers
        fields = store.vary_for(op.key)
        entry = (
            None if fields is None else store.lookup(op.key, policy.variant_key(fields, headers))
        )
        rules = op.rules
        assert rules is not None
        if entry is None:
            remote = self.zone.remote
            if remote is not None and not op.remote_asked:
                # A local miss asks the shared tier once, then looks again (or goes on).
                op.remote_asked = True
                if remote.fetch(op.key, partial(self._resume_fetched, ex, op)):
                    return True
            op.fwd = "vary-miss" if fields else "uri-miss"
            if rules.only_if_cached:
                ex.respond_local(504)  # RFC 9111 5.2.1.7
                return True
            return self._go_upstream(ex, op)
        now = self.zone.clock()
        meta = entry.meta
        decision = policy.evaluate(meta, rules, now)
        if decision is Decision.FRESH:
            op.serve(ex, entry, op.hit_field(meta, now, None))
            return True
        if not meta.must_revalidate and not rules.must_revalidate:
            if decision is Decision.STALE_WHILE_REVALIDATE or (
                self.spec.background_update and "updating" in self.use_stale
            ):
                op.serve(ex, entry, op.hit_field(meta, now, "stale-while-revalidate"))
                self._refresh_in_background(ex, op.key, meta)
                return True
            if "updating" in self.use_stale and (
                op.key in self.zone.updating or op.key in self.zone.fills
            ):
                op.serve(ex, entry, op.hit_field(meta, now, "updating"))
                return True
        entry.close()
        if rules.only_if_cached:
            ex.respond_local(504)
            return True
        op.stale = meta
        op.fwd = "request" if rules.must_revalidate else "stale"
        return self._go_upstream(ex, op)

    def _go_upstream(self, ex: Exchange, op: CacheOp) -> bool:
        """A miss or a revalidation: with proxy_cache_lock, one request per key goes
        upstream and the others wait for what it stores (nginx's cache lock)."""
        if self.lock:
            fills = self.zone.fills
            fill = fills.get(op.key)
            if fill is None:
                fills[op.key] = op.fill = Fill()
            elif not op.waited:
                loop = ex.client.worker.loop
                timer = loop.call_later(self.lock_timeout, self._lock_expired, ex, op, fill)
                fill.waiters.append((ex, op, timer))
                op.waiting = fill
                return True
        return False

    def _lock_expired(self, ex: Exchange, op: CacheOp, fill: Fill) -> None:
        """nginx: after proxy_cache_lock_timeout the request goes upstream itself, and
        its response is not cached."""
        op.waiting = None
        fill.waiters[:] = [w for w in fill.waiters if w[0] is not ex]
        if ex.finished:
            return
        op.waited = True
        op.no_store = "lock-timeout"
        ex.send_upstream()

    def release(self, fill: Fill, key: str) -> None:
        """The fetch others waited on is over (stored or not): they look again, on the
        next loop turn, and are answered from the store or go upstream themselves."""
        if self.zone.fills.get(key) is fill:
            del self.zone.fills[key]
        waiters, fill.waiters = fill.waiters, []
        for ex, op, timer in waiters:
            timer.cancel()
            op.waiting = None
            ex.client.worker.loop.call_soon(self._resume, ex, op)

    def _resume_fetched(self, ex: Exchange, op: CacheOp) -> None:
        if ex.finished:
            return
        if not self._lookup(ex, op):
            ex.send_upstream()

    def _resume(self, ex: Exchange, op: CacheOp) -> None:
        if ex.finished:
            return
        op.waited = op.collapsed = True
        if not self._lookup(ex, op):
            ex.send_upstream()

    # ---- background refresh (stale-while-revalidate, proxy_cache_background_update) ----

    def _refresh_in_background(self, ex: Exchange, key: str, meta: EntryMeta) -> None:
        """One conditional fetch per key at a time, through the route's own upstream
        group and pool, by an exchange that answers no client: its response goes to the
        store only."""
        zone = self.zone
        if key in zone.updating or key in zone.fills:
            return
        zone.updating.add(key)
        bg = _background_exchange(ex)
        op = CacheOp(self, key)
        op.background = True
        op.rules = policy.request_rules(b"GET", bg.head.headers)
        op.stale = meta
        op.fwd = "stale"
        bg.cache_op = op
        ex.client.worker.loop.call_soon(bg.send_upstream)

    # ---- PURGE ----

    def _purge(self, ex: Exchange) -> None:
        """`PURGE /path` removes that key (every variant); `PURGE /prefix*` every key
        that starts so. Restrict it with the route's access rules."""
        key = self.render_key(ex)
        store = self.zone.store
        try:
            removed = store.remove_prefix(key[:-1]) if key.endswith("*") else store.remove(key)
        except OSError as exc:
            _log.error("cache zone %s: purge of %r failed: %s", self.zone.name, key, exc)
            ex.respond_local(500)
            return
        _log.info("cache zone %s: purged %r (%d entries)", self.zone.name, key, removed)
        if removed:
            ex.respond_return(200, b"purged %d\n" % removed)
        else:
            ex.respond_local(404)

    def __repr__(self) -> str:
        return f"RouteCache(zone={self.zone.name} key={self.spec.key!r})"


class CacheOp:
    """The cache's part of one exchange: set on `exchange.cache_op` by RouteCache.begin
    and called at the exchange's response steps and once at its end (`finish`)."""

    __slots__ = (
        "background",
        "collapsed",
        "detail",
        "field",
        "fill",
        "fwd",
        "fwd_status",
        "key",
        "no_store",
        "passing",
        "rc",
        "remote_asked",
        "request_time",
        "rules",
        "sender",
        "stale",
        "swallowed",
        "waited",
        "waiting",
        "writer",
        "written",
    )

    def __init__(self, rc: RouteCache, key: str) -> None:
        self.rc = rc
        self.key = key
        # The zone's remote tier (cluster/cache.py) was asked on a local miss.
        self.remote_asked = False
        self.rules: policy.RequestRules | None = None
        # RFC 9211 fwd: why the request went upstream; detail: why it was not stored.
        self.fwd: str | None = None
        self.detail: str | None = None
        self.fwd_status: int | None = None
        # The Cache-Status line for the answer passed on from upstream.
        self.field = b""
        # A method the route does not cache: only invalidation applies (RFC 9111 4.4).
        self.passing = False
        # The stale entry being revalidated (or refreshed in the background).
        self.stale: EntryMeta | None = None
        self.background = False
        self.request_time = 0.0
        # Collapsed forwarding: the fill this request owns or waits on.
        self.fill: Fill | None = None
        self.waiting: Fill | None = None
        self.waited = False
        self.collapsed = False
        self.no_store: str | None = None
        self.writer: EntryWriter | None = None
        self.written = 0
        # The upstream's answer is replaced by the store's (a 304 merged; an error
        # answered with a stale entry): "store" or "stale".
        self.swallowed = ""
        self.sender: _Sender | None = None

    # ---- the upstream request ----

    def prepare_request(self, ex: Exchange) -> None:
        """Before dispatch (exchange send_upstream): the client's conditionals go (the
        answer must be whole to be stored); a revalidation sends the stored validators
        instead (RFC 9111 4.3.1). Not for methods the route does not cache."""
        if self.passing:
            return
        self.request_time = self.rc.zone.clock()
        data = ex.request_bytes
        head, _, _ = data.rpartition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        kept = [ln for ln in lines if not ln[:20].lower().startswith(_CONDITIONALS)]
        extra = policy.conditional_headers(self.stale) if self.stale is not None else b""
        if len(kept) != len(lines) or extra:
            ex.request_bytes = b"\r\n".join(kept) + b"\r\n" + extra + b"\r\n"

    # ---- the response (exchange on_response_head / body / end) ----

    def on_response_head(self, ex: Exchange, head: ResponseHead) -> bool:
        """True: this answer is not the client's (the store's is, once it has ended)."""
        self.swallowed = ""
        status = head.status
        rc = self.rc
        if self.passing:
            if policy.invalidates(ex.head.method, status):
                self._remove()
            self.field = self._field(False, self.fwd, None)
            return False
        stale = self.stale
        now = self.rc.zone.clock()
        if stale is not None:
            if status == 304 and policy.not_modified_matches(stale, head.headers):
                fresh = policy.refresh_meta(
                    stale,
                    head.headers,
                    self.request_time,
                    now,
                    valid=rc.spec.valid,
                    ignore=_ignored(ex),
                )
                self._update(fresh)
                self.fwd_status = 304
                self._release_fill()
                if self.background:
                    return False  # nobody to answer: the 304 goes nowhere
                self.swallowed = "store"
                return True
            if self._stale_on_status(status, stale, now):
                self.swallowed = "stale"
                self.fwd_status = status
                return True
        reason = self._store_reason(ex, head)
        if reason is None:
            self._begin_store(ex, head, now)
        else:
            self.detail = reason
            self._release_fill()
            if stale is not None and status != 304:
                self._remove()  # replaced by an answer that may not be stored
        self.field = self._field(False, self.fwd, None, stored=self.writer is not None)
        return False

    def _stale_on_status(self, status: int, stale: EntryMeta, now: float) -> bool:
        configured = f"http_{status}" in self.rc.use_stale
        if not configured and status not in _ERROR_STATUSES:
            return False
        return not self.background and policy.may_serve_stale_on_error(
            stale, now, configured=configured
        )

    def _store_reason(self, ex: Exchange, head: ResponseHead) -> str | None:
        rc = self.rc
        if self.no_store is not None:
            return self.no_store
        reason = policy.storable(
            ex.head.method,
            head.status,
            ex.head.headers,
            policy.without_fields(head.headers, _ignored(ex)),
            store_set_cookie=rc.spec.store_set_cookie,
            valid=rc.spec.valid,
            methods=rc.spec.methods,
            now=self.rc.zone.clock(),
        )
        if reason is not None:
            return reason
        if head.framing is Framing.UNTIL_CLOSE:
            return "unframed"  # a close cannot tell a whole body from a cut one
        if rc.no_cache and _holds(rc.no_cache, ex):
            return "no_cache"
        if rc.min_uses > 1 and rc.zone.count_use(self.key) < rc.min_uses:
            return "min-uses"
        return None

    def _begin_store(self, ex: Exchange, head: ResponseHead, now: float) -> None:
        tokens = head.connection_tokens
        headers = [
            (n, v)
            for n, v in head.headers
            if (ln := n.lower()) not in _NOT_STORED and ln not in tokens
        ]
        meta = policy.new_meta(
            self.key,
            head.status,
            ex.head.headers,
            headers,
            self.request_time,
            now,
            body_size=head.content_length if head.framing is Framing.LENGTH else 0,
            valid=self.rc.spec.valid,
            ignore=_ignored(ex),
        )
        try:
            self.writer = self.rc.zone.store.begin(meta)
        except (OSError, StoreError) as exc:
            _log.error("cache zone %s: cannot store %r: %s", self.rc.zone.name, self.key, exc)
            self.detail = "store-error"
            self._release_fill()

    def on_body(self, data: bytes) -> bool:
        """True: the body is not the client's (swallowed)."""
        if self.swallowed:
            return True
        writer = self.writer
        if writer is not None:
            writer.write(data)
            self.written += len(data)
        return False

    def on_end(self, ex: Exchange) -> None:
        """The upstream body ended whole: commit what was written, if its length is the
        announced one (the store checks it too)."""
        writer = self.writer
        if writer is None:
            return
        self.writer = None
        head = ex.response
        if (
            head is not None
            and head.framing is Framing.LENGTH
            and head.content_length != (self.written)
        ):
            writer.abort()
        else:
            try:
                writer.commit(self.written)
            except (OSError, StoreError) as exc:
                _log.error("cache zone %s: storing %r failed: %s", self.rc.zone.name, self.key, exc)
        self._release_fill()

    def serve_swallowed(self, ex: Exchange) -> None:
        """The upstream's answer was read whole and dropped: answer from the store (the
        entry a 304 refreshed, or the stale entry an error made us keep)."""
        kind = self.swallowed
        self.swallowed = ""
        # nginx counts 500/502/503/504 as failures of the peer, other answers not.
        if kind == "store":
            ex.release_upstream(Outcome.SUCCESS)
        elif self.fwd_status in _ERROR_STATUSES:
            ex.release_upstream(Outcome.FAILURE)
        else:
            ex.release_upstream(Outcome.NEUTRAL)
        entry = self._entry()
        if entry is None:
            # Purged or evicted meanwhile: nothing to answer with.
            ex.respond_local(502)
            return
        now = self.rc.zone.clock()
        if kind == "store":
            field = self._field(False, "stale", entry.meta.ttl(now))
        else:
            field = self.hit_field(entry.meta, now, "stale-if-error")
        self.serve(ex, entry, field)

    def on_upstream_error(self, ex: Exchange, status: int) -> bool:
        """Nothing reached the client and the upstream failed: True when a stale entry
        answered instead (proxy_cache_use_stale error/timeout, RFC 5861 stale-if-error)."""
        stale = self.stale
        if stale is None or self.background:
            return False
        conditions = _ERROR_CONDITIONS.get(status, ("error",))
        configured = any(c in self.rc.use_stale for c in conditions)
        if not policy.may_serve_stale_on_error(stale, self.rc.zone.clock(), configured=configured):
            return False
        entry = self._entry()
        if entry is None:
            return False
        self._release_fill()
        self.serve(ex, entry, self.hit_field(entry.meta, self.rc.zone.clock(), "stale-if-error"))
        return True

    # ---- answering from the store ----

    def serve(self, ex: Exchange, entry: CachedEntry, field: bytes) -> None:
        """Answer the client from a stored entry: its status and fields, our Date and
        Age, the body streamed from the store as the client takes it."""
        meta = entry.meta
        head = ex.head
        keep = head.keep_alive and ex.body_done and not ex.client.worker.draining
        now = self.rc.zone.clock()
        status = meta.status
        rules = self.rules
        if status == 200 and (rules is None or rules.conditional) and _not_modified(head, meta):
            status = 304  # RFC 9110 13.1: the client's own validators match the entry
        ex.status = status
        head_bytes = self._head_bytes(ex, entry, status, field, keep, now)
        client = ex.client
        if head.method == b"HEAD" or status == 304 or meta.body_size == 0:
            entry.close()
            client.write(head_bytes)
            ex.end_from_cache(keep)
            return
        h1 = ex.h1
        if type(entry) is BytesEntry and not client.is_write_paused and not client.closed:
            body = entry.body
            if meta.body_size <= CHUNK_SIZE:
                # A small body from memory: head and body in one write, no sender.
                ex.body_bytes += len(body)
                client.write(head_bytes + body)
                ex.end_from_cache(keep)
                return
            if h1 is not None:
                # A large body from memory goes to an HTTP/1 transport whole: it keeps a
                # reference to the stored bytes (no copy; a sender would copy it chunk by
                # chunk, with a round of the loop per 64 KiB) and sends what the socket
                # takes at once. Its pause_writing still holds back the next response on
                # this connection. HTTP/2 streams take the sender: their writes are
                # parsed back and framed within the peer's window.
                ex.body_bytes += len(body)
                client.write(head_bytes)
                client.write(body)
                ex.end_from_cache(keep)
                return
        if (
            h1 is not None
            and isinstance(entry, DiskEntry)
            and meta.body_size > CHUNK_SIZE
            and not h1.is_write_paused
            and h1.takes_mapped_views
        ):
            # A large body on disk: a view of the file's mapping, written whole, as
            # the memory tier's above. The kernel copies from the page cache into the
            # socket; no read into this process, no loop round per chunk. The worker
            # keeps the mapping for the entry's next hit.
            worker = ex.client.worker
            view = entry.mapped_body(worker.mapped_files, worker.sweeper.now)
            if view is not None:  # else (out of mappings) the sender reads it
                entry.close()  # the mapping outlives the descriptor
                ex.body_bytes += len(view)
                h1.write(head_bytes)
                h1.write_mapped(view)
                ex.end_from_cache(keep)
                return
        # The head goes out with the first chunk: one write for a small object.
        self.sender = sender = _Sender(ex, entry, keep, head_bytes)
        sender.pump()

    def _head_bytes(
        self, ex: Exchange, entry: CachedEntry, status: int, field: bytes, keep: bool, now: float
    ) -> bytes:
        route = ex.route
        assert route is not None
        meta = entry.meta
        fields, date = self._stored_fields(route, entry)
        lines = [status_line(status), fields]
        lines.append(date or ex.client.worker.date_line)
        lines.append(b"Age: %d\r\n" % max(0, int(meta.age(now))))
        if field:
            lines.append(field)
        if route.add_headers:
            lines.append(render_add_headers(route.add_headers, status, ex))
        if status >= 200 and status not in (204, 304):
            lines.append(b"Content-Length: %d\r\n" % meta.body_size)
        if not keep:
            lines.append(b"Connection: close\r\n")
        else:
            lines.append(ex.client.worker.keepalive_line)  # keepalive_timeout T HEADER_T
            if ex.head.version != b"1.1":
                lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def _stored_fields(self, route: Route, entry: CachedEntry) -> tuple[bytes, bytes]:
        """The stored fields as this route replays them, and the stored Date line (empty
        unless the route passes it on); rendered once per memory entry and route."""
        mem = entry if type(entry) is BytesEntry else None
        if mem is not None:
            cached = mem.rendered
            if cached is not None and cached[0] is route:
                return cached[1], cached[2]
        hide = route.hide
        pass_date = route.pass_date
        date = b""
        # Set-Cookie is replayed only from a zone told to store it (store_set_cookie).
        cookie = b"set-cookie" if self.rc.spec.store_set_cookie else b""
        lines: list[bytes] = []
        for n, v in entry.meta.headers:
            ln = n.lower()
            if ln == b"date":
                if pass_date:
                    date = b"Date: %s\r\n" % v
            elif ln not in hide and (ln not in _NOT_REPLAYED or ln == cookie):
                lines.append(b"%s: %s\r\n" % (n, v))
        fields = b"".join(lines)
        if mem is not None:
            mem.rendered = (route, fields, date)
        return fields, date

    def client_paused(self, paused: bool) -> None:
        sender = self.sender
        if sender is not None:
            sender.paused = paused
            if not paused:
                sender.pump()

    # ---- Cache-Status ----

    def hit_field(self, meta: EntryMeta, now: float, detail: str | None) -> bytes:
        if not self.rc.status_header:
            return b""
        value = policy.cache_status(
            True, None, detail, meta.ttl(now), False, collapsed=self.collapsed
        )
        return b"Cache-Status: %s\r\n" % value

    def _field(
        self, hit: bool, fwd: str | None, ttl: float | None, *, stored: bool = False
    ) -> bytes:
        if not self.rc.status_header:
            return b""
        value = policy.cache_status(
            hit,
            fwd,
            self.detail,
            ttl,
            stored,
            fwd_status=self.fwd_status,
            collapsed=self.collapsed,
        )
        return b"Cache-Status: %s\r\n" % value

    # ---- store helpers ----

    def _entry(self) -> CachedEntry | None:
        stale = self.stale
        if stale is None:
            return None
        try:
            return self.rc.zone.store.lookup(self.key, stale.variant)
        except OSError as exc:
            _log.error("cache zone %s: reading %r failed: %s", self.rc.zone.name, self.key, exc)
            return None

    def _update(self, meta: EntryMeta) -> None:
        try:
            self.rc.zone.store.update_meta(meta.key, meta.variant, meta)
        except (OSError, StoreError) as exc:
            _log.error("cache zone %s: updating %r failed: %s", self.rc.zone.name, self.key, exc)

    def _remove(self) -> None:
        try:
            self.rc.zone.store.remove(self.key)
        except OSError as exc:
            _log.error("cache zone %s: removing %r failed: %s", self.rc.zone.name, self.key, exc)

    def _release_fill(self) -> None:
        fill = self.fill
        if fill is not None:
            self.fill = None
            self.rc.release(fill, self.key)

    # ---- the end of the exchange, whichever way it ended ----

    def finish(self) -> None:
        """Called once when the exchange ends: an unfinished store is aborted (nothing
        of a cut body is kept), waiters are released, the entry being read is closed."""
        writer = self.writer
        if writer is not None:
            self.writer = None
            writer.abort()
        self._release_fill()
        waiting = self.waiting
        if waiting is not None:
            self.waiting = None
            for waiter in waiting.waiters:
                if waiter[1] is self:
                    waiter[2].cancel()
            waiting.waiters[:] = [w for w in waiting.waiters if w[1] is not self]
        sender = self.sender
        if sender is not None:
            self.sender = None
            sender.close()
        if self.background:
            self.rc.zone.updating.discard(self.key)

    def metric_key(self) -> object:
        """(zone, nginx $upstream_cache_status): what the metrics count this request
        under; None for a request the route does not cache."""
        result = policy.upstream_cache_status(self.fwd, self.fwd_status, self.passing)
        return None if result is None else self.rc.metric_keys[result]

    def __repr__(self) -> str:
        return f"CacheOp({self.key!r} fwd={self.fwd} stale={self.stale is not None})"


class _Sender:
    """Streams a stored body to the client, chunk by chunk, pausing while the client's
    transport is above its high-water mark (its pause_writing / resume_writing)."""

    __slots__ = ("chunks", "entry", "ex", "head", "keep", "paused", "sent")

    def __init__(self, ex: Exchange, entry: CachedEntry, keep: bool, head: bytes) -> None:
        self.ex = ex
        self.entry = entry
        self.chunks: Iterator[bytes] | None = entry.chunks()
        self.keep = keep
        self.head = head
        self.sent = 0
        # A previous response may have left the transport paused.
        self.paused = ex.client.is_write_paused

    def pump(self) -> None:
        ex = self.ex
        chunks = self.chunks
        client = ex.client
        while not self.paused and chunks is not None:
            if ex.finished or client.closed:
                self.close()
                return
            try:
                data = next(chunks, None)
            except (OSError, StoreError, ValueError) as exc:
                _log.error("reading a cached body failed: %s", exc)
                data = None
            if data is None:
                self._done()
                return
            self.sent += len(data)
            ex.body_bytes += len(data)
            if self.head:
                data, self.head = self.head + data, b""
            client.write(data)  # may call pause_writing, which sets self.paused

    def _done(self) -> None:
        self.close()
        ex = self.ex
        if self.head:  # no chunk at all: the head still goes out
            ex.client.write(self.head)
            self.head = b""
        if self.sent != self.entry.meta.body_size:
            ex.truncated("cached body shorter than its stored size")
        else:
            ex.end_from_cache(self.keep)

    def close(self) -> None:
        if self.chunks is not None:
            self.chunks = None
            self.entry.close()


def _not_modified(head: RequestHead, meta: EntryMeta) -> bool:
    """The client's If-None-Match (or, without it, If-Modified-Since) matches the stored
    entry (RFC 9110 13.1.2, 13.1.3; weak comparison for If-None-Match)."""
    inm = head.header(b"if-none-match")
    if inm is not None:
        etag = meta.etag
        if etag is None:
            return False
        mine = trim_ows(etag).removeprefix(b"W/")
        for part in inm.split(b","):
            tag = trim_ows(part)
            if tag == b"*" or tag.removeprefix(b"W/") == mine:
                return True
        return False
    ims = head.header(b"if-modified-since")
    lm = meta.last_modified
    if ims is None or lm is None:
        return False
    since, modified = policy.parse_http_date(ims), policy.parse_http_date(lm)
    return since is not None and modified is not None and modified <= since


# ---- background refresh: an exchange with no client ----


class DetachedClient:
    """Stands in for the client connection of a background refresh: the exchange runs
    its usual steps (dispatch, retries, pooling, passive health), and what it would
    write to a client goes nowhere. It borrows the worker and listener of the request
    that triggered it, and its address for the access log."""

    __slots__ = (
        "closed",
        "listener",
        "proxy_addr",
        "proxy_port",
        "remote_addr",
        "remote_port",
        "transport",
        "worker",
    )

    def __init__(self, client: Any) -> None:
        self.worker = client.worker
        self.listener = client.listener
        self.remote_addr = client.remote_addr
        self.remote_port = client.remote_port
        self.proxy_addr = getattr(client, "proxy_addr", b"")
        self.proxy_port = getattr(client, "proxy_port", b"")
        self.transport = None
        self.closed = False

    @property
    def is_write_paused(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None:
        pass

    def pause_body(self) -> None:
        pass

    def resume_body(self) -> None:
        pass

    def close(self) -> None:
        pass

    def start_tunnel(self, ex: Exchange) -> None:
        # Unreachable: a background refresh is a GET without Upgrade, and the exchange
        # refuses a 101 to a request that asked for none. Were it reached: no tunnel.
        ex.client_gone()

    def __repr__(self) -> str:
        return f"DetachedClient(for {self.remote_addr.decode()})"


def _background_exchange(ex: Exchange) -> Exchange:
    """A GET for what `ex` asked, through the same route and upstream, answering no one."""
    from ferryman.proxy.exchange import Exchange

    head = ex.head
    if head.method != b"GET" or head.upgrade is not None:
        head = RequestHead(
            b"GET",
            head.target,
            head.version,
            head.headers,
            head.host,
            True,
            Framing.NONE,
            0,
            head.connection_tokens,
            None,
            head.path,
            head.query,
            head.fields,
            head.forwarded_for,
            head.forwarded_other,
            head.host_name,
        )
    bg = Exchange(DetachedClient(ex.client), head)
    bg.route, bg.server = ex.route, ex.server
    bg.group, bg.pool, bg.max_tries = ex.group, ex.pool, ex.max_tries
    bg.proxy_target = ex.proxy_target
    bg.uri, bg.args, bg.captures, bg.rewritten = ex.uri, ex.args, ex.captures, ex.rewritten
    bg.vars = dict(ex.vars) if ex.vars is not None else None
    bg.real_addr, bg.real_port = getattr(ex, "real_addr", None), getattr(ex, "real_port", None)
    return bg
