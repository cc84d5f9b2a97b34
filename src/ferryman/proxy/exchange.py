"""One request and its response through the reverse proxy: the lifecycle phases of
DESIGN.md, as named steps.

    start      route the request (pure table lookup), build the upstream head once
    dispatch   group.select a peer; reuse a pooled connection or connect
    attach     write the head and any body received so far
    body       stream the rest of the request body as it arrives (backpressure aware)
    response   re-serialise the head, stream the body, flush once per upstream read
    complete   release the peer (feeds balancer + passive health), pool the connection,
               log, hand the client connection to its next request
    failures   before anything reached the client, a failed attempt is retried on the
               next peer when that is safe; otherwise the client gets 502/504, or, once
               bytes went out, an honest truncation (no final chunk, short length).

Retries: a connect failure sent nothing, so any request may go elsewhere. After bytes
reached an upstream only idempotent methods are re-sent (nginx's proxy_next_upstream
default), and only while the body is still in the bounded replay buffer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from functools import partial
from typing import TYPE_CHECKING, Final, cast

from ferryman.balancing.base import Outcome
from ferryman.errors import (
    ProtocolError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeoutError,
)
from ferryman.filters.base import Delay, Deny, Pending
from ferryman.http.fields import equals_lower
from ferryman.http.messages import Framing, RequestHead, ResponseHead
from ferryman.http.response_parser import ResponseSink
from ferryman.http.serialize import (
    CHUNKED_END,
    chunk,
    client_framing,
    error_response,
    local_response,
    serialize_request_head,
    serialize_response_head,
)
from ferryman.http.uri import encode_path, normalize_path
from ferryman.observability.access_log import AccessLog, Entry
from ferryman.observability.error_log import context as error_context
from ferryman.observability.metrics import WorkerMetrics
from ferryman.observability.recent import RecentLog
from ferryman.proxy.route import parse_proxy_url, render_add_headers
from ferryman.proxy.script import MAX_REWRITE_CYCLES, CompiledScript, ScriptOutcome, run_script
from ferryman.proxy.variables import request_host

if TYPE_CHECKING:
    from ferryman.cache.handler import CacheOp, DetachedClient
    from ferryman.filters.base import RequestFilter
    from ferryman.filters.real_ip import RealIp
    from ferryman.proxy.route import Route
    from ferryman.proxy.static.serve import FileResponse as _FileSender
    from ferryman.proxy.variables import Template
    from ferryman.routing.table import VirtualServer
    from ferryman.server.connection import ClientConnection
    from ferryman.server.context import WorkerContext
    from ferryman.server.h2_stream import H2Stream
    from ferryman.upstream.connection import UpstreamConnection
    from ferryman.upstream.group import UpstreamGroup
    from ferryman.upstream.peer import PeerState
    from ferryman.upstream.pool import ConnectionPool

__all__ = ["REPLAY_LIMIT", "Exchange"]

_log: Final = logging.getLogger(__name__)
# The clock as a Final: compiled, a call is then a load of a static, where
# `time.monotonic()` is an attribute lookup on the module (five calls a request).
_monotonic: Final = time.monotonic
# The shared body buffers of requests without a body (Exchange.__init__): stays empty.
_NO_PIECES: Final[list[bytes]] = []

# Request body bytes kept for a retry (nginx keeps the whole body in its
# client_body_buffer; we stream, so we bound what we keep instead).
REPLAY_LIMIT: Final = 64 * 1024
# Body bytes buffered while no upstream connection is attached before the client is
# paused.
PENDING_LIMIT: Final = 256 * 1024
_NONE: Final = Framing.NONE
_CHUNKED: Final = Framing.CHUNKED
_UNTIL_CLOSE: Final = Framing.UNTIL_CLOSE
_IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# nginx's error-log words (ngx_http_upstream.c), for the nginx format
# (observability/error_log.py); alerts written for nginx grep for them.
_NGINX_READ_TIMEOUT: Final = (
    "upstream timed out (110: Connection timed out) while reading response header from upstream"
)
_NGINX_PREMATURE: Final = (
    "upstream prematurely closed connection while reading response header from upstream"
)
_NGINX_TRUNCATED: Final = {
    "upstream closed the connection mid-response": (
        "upstream prematurely closed connection while reading upstream"
    ),
    "upstream timed out mid-response": (
        "upstream timed out (110: Connection timed out) while reading upstream"
    ),
}


def _nginx_words(exc: Exception) -> str:
    if isinstance(exc, UpstreamProtocolError):
        return "upstream sent invalid header while reading response header from upstream"
    if isinstance(exc, UpstreamResetError) and "while" not in exc.reason:
        return _NGINX_PREMATURE
    if isinstance(exc, UpstreamError):
        return exc.reason  # connect and timeout errors are raised in nginx's words
    return f"{exc} while connecting to upstream"


# An upstream error's kind -> the proxy_next_upstream condition that covers it.
_CONDITION: Final = {
    "connect": "error",
    "reset": "error",
    "error": "error",
    "timeout": "timeout",
    "invalid_header": "invalid_header",
}
# nginx's built-in types, used when no `types` block is given (ngx_http_core_module).
_BUILTIN_TYPES: Final = {b"html": b"text/html", b"gif": b"image/gif", b"jpg": b"image/jpeg"}
_MESSAGES: Final = {
    400: "Bad Request",
    # Filters' denials without a body of their own (access rules, basic auth).
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}


def _why_out(peer: PeerState, now: float) -> str:
    if peer.spec.down:
        return "down"
    if peer.drained:
        return "draining"
    if peer.probe_down:
        return "failing checks"
    return f"failed, {peer.health.unavailable_until - now:.0f}s left"


def _file_test(operator: str, path: str) -> bool:
    """`if (-f ...)` and friends (nginx follows symbolic links for them too)."""
    name = path.encode("latin-1")
    if operator == "-f":
        return os.path.isfile(name)
    if operator == "-d":
        return os.path.isdir(name)
    if operator == "-e":
        return os.path.exists(name)
    return os.path.isfile(name) and os.access(name, os.X_OK)


def _without(fields: bytes, hide: frozenset[bytes]) -> bytes:
    """Pre-rendered field lines minus those whose (lower-case) name is in `hide`."""
    return b"".join(
        line + b"\r\n"
        for line in fields.split(b"\r\n")
        if line and line.split(b":", 1)[0].lower() not in hide
    )


def _redirect_body(status: int) -> bytes:
    # nginx's stock redirect page, minus its server token.
    phrase = _REDIRECT_PHRASES[status]
    return (
        b"<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n"
        b"<center><h1>%d %s</h1></center>\r\n</body>\r\n</html>\r\n"
    ) % (status, phrase, status, phrase)


_REDIRECT_PHRASES: Final = {
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
}


def _expire_queue(group: UpstreamGroup, loop: asyncio.AbstractEventLoop) -> None:
    """The group's queue timer: fails (502) the waiters at the front whose deadline has
    passed, then waits for the new front's. Woken waiters left the queue from the front
    already; this timer is not cancelled for them, it finds a later front and re-arms."""
    now = loop.time()
    waiters = group.waiters
    expired: list[Exchange] = []
    while waiters:
        first: Exchange = waiters[0]
        if not first.finished and first.queue_deadline > now:
            break
        waiters.popleft()
        if not first.finished:
            expired.append(first)
    # Re-armed before any 502 is sent: answering may read a pipelined request that queues.
    group.queue_timer = (
        loop.call_at(waiters[0].queue_deadline, _expire_queue, group, loop) if waiters else None
    )
    for ex in expired:
        if not ex.finished:
            _log.error("no upstream of %r free within the queue timeout", group.name)
            ex.fail(502)


class Exchange(ResponseSink):
    __slots__ = (
        "args",
        "attempts",
        "body_bytes",
        "body_done",
        "cache_op",
        "captures",
        "client",
        "conn",
        "ended",
        "error_headers",
        "error_paged",
        "error_status",
        "filter_timer",
        "finished",
        "first_dispatch",
        "flushed",
        "group",
        "h1",
        "head",
        "header_time",
        "held",
        "keep_alive",
        "max_tries",
        "method_override",
        "out",
        "peer",
        "pending",
        "pending_size",
        "pool",
        "proxy_target",
        "queue_deadline",
        "real_addr",
        "real_port",
        "received",
        "redirects",
        "replay",
        "replay_size",
        "request_bytes",
        "resp_framing",
        "response",
        "retry_status",
        "reused",
        "rewritten",
        "route",
        "sender",
        "server",
        "started",
        "status",
        "tried",
        "tried_files",
        "tries",
        "tunnel",
        "upstream_keep",
        "upstream_start",
        "uri",
        "vars",
        "worker",
    )

    def __init__(
        self, client: ClientConnection | H2Stream | DetachedClient, head: RequestHead
    ) -> None:
        # An HTTP/1 connection, an HTTP/2 stream, or the stand-in that answers no one (a
        # cache's background refresh, cache/handler.py). All three are compiled classes,
        # so the compiled build reaches their attributes directly.
        self.client = client
        # The worker's context, typed: reached through `client` (a union of connection
        # kinds) every attribute access would be a lookup by name.
        self.worker: WorkerContext = client.worker
        # The client again when it is an HTTP/1 connection (set by it): a typed
        # reference for the calls every response makes (write, exchange_done), which
        # through the union would be method lookups by name in the compiled build.
        self.h1: ClientConnection | None = None
        self.head = head
        self.route: Route | None = None
        # Where this request goes: the route's upstream, or, for proxy_pass with
        # variables, the one its URL named for this request.
        self.group: UpstreamGroup | None = None
        self.pool: ConnectionPool | None = None
        self.max_tries = 1
        # For proxy_pass with variables: (proxy_host, upstream target or None).
        self.proxy_target: tuple[bytes, bytes | None] | None = None
        self.server: VirtualServer[Route] | None = None
        self.peer: PeerState | None = None
        self.conn: UpstreamConnection | None = None
        self.reused = False
        self.tried = 0
        self.tries = 0
        self.body_done = head.framing is _NONE
        # Body pieces waiting for a connection, and kept for a retry. A request without
        # a body never adds to either: it shares one empty list (never appended to, as
        # only body events append) instead of allocating two per request.
        self.pending: list[bytes] = _NO_PIECES if self.body_done else []
        self.pending_size = 0
        self.replay: list[bytes] | None = _NO_PIECES if self.body_done else []
        self.replay_size = 0
        self.received = 0
        self.request_bytes = b""
        self.response: ResponseHead | None = None
        self.resp_framing = _NONE
        self.out: list[bytes] = []
        self.ended = False
        self.finished = False
        self.keep_alive = False
        self.upstream_keep = False
        self.status = 0
        self.body_bytes = 0
        self.tunnel = False
        # Whether any byte of the upstream's response reached the client: until then a
        # failure (an invalid response, data after it) can still be a clean 502.
        self.flushed = False
        # Timing is only for the access log; a clock call per request is not free.
        worker = self.worker
        self.started = (
            _monotonic()
            if worker.access_log.enabled or worker.recent is not None or worker.metrics is not None
            else 0.0
        )
        self.upstream_start = 0.0
        self.header_time = 0.0
        self.first_dispatch = 0.0
        # Set while an answer is being swallowed for proxy_next_upstream http_NNN.
        self.retry_status = 0
        # With the route's debug header on: "peer (why)" for each failed attempt.
        self.attempts: list[str] | None = None
        # When this request stops waiting in its group's max_conns queue (loop time).
        self.queue_deadline = 0.0
        # $uri and $args: the normalised path and the query; a rewrite may change them.
        # They stay the head's own objects until then (the identity is checked).
        self.uri = head.path
        self.args = head.query
        self.captures: tuple[bytes, ...] = ()
        self.vars: dict[str, bytes] | None = None
        self.rewritten = False
        # Filters that passed and must hear when this exchange ends (limit_conn), and
        # the timer of a delayed request (limit_req).
        self.held: list[RequestFilter] | None = None
        # (Or the future of a shared zone's verdict, cluster/: cancelled the same way.)
        self.filter_timer: asyncio.TimerHandle | asyncio.Future[Deny | Delay | None] | None = None
        # The cache's part of this request (cache/handler.py), on routes with a cache.
        self.cache_op: CacheOp | None = None
        # The client's address when a trusted proxy named it (nginx realip); None: the
        # connection's peer is the client.
        self.real_addr: bytes | None = None
        self.real_port: bytes | None = None
        # Static files (proxy/static/): the file being sent, and whether try_files ran.
        self.sender: _FileSender | None = None
        self.tried_files = False
        # error_page (proxy/error_pages.py): applied once per request (nginx without
        # recursive_error_pages); the status the replacement answer goes out with (0:
        # its own); internal redirects so far; GET for a redirected error page.
        self.error_paged = False
        self.error_status = 0
        # A denial's own fields (WWW-Authenticate, Retry-After), sent with the error
        # page that replaces it, as nginx keeps them in headers_out.
        self.error_headers = b""
        self.redirects = 0
        self.method_override: bytes | None = None

    # ---- variables for header templates ----

    @property
    def remote_addr(self) -> bytes:
        """nginx $remote_addr: the client, as real_ip decided (else the socket peer)."""
        real = self.real_addr
        return self.client.remote_addr if real is None else real

    @property
    def remote_port(self) -> bytes:
        real = self.real_port
        return self.client.remote_port if real is None else real

    @property
    def realip_remote_addr(self) -> bytes:
        """nginx $realip_remote_addr: the socket peer, whatever real_ip decided."""
        return self.client.remote_addr

    @property
    def proxy_protocol_addr(self) -> bytes:
        """nginx $proxy_protocol_addr: the PROXY header's source address, or empty."""
        return self.client.proxy_addr

    @property
    def proxy_protocol_port(self) -> bytes:
        return self.client.proxy_port

    @property
    def scheme(self) -> bytes:
        return self.client.listener.scheme

    @property
    def ssl_object(self) -> object:
        """The client connection's TLS state ($ssl_* variables); None without TLS."""
        transport = self.client.transport
        return transport.get_extra_info("ssl_object") if transport is not None else None

    @property
    def server_port(self) -> bytes:
        return self.client.listener.port_bytes

    @property
    def server_name(self) -> bytes:
        """nginx $server_name: the first name of the server that took the request."""
        server = self.server
        if server is not None and server.names:
            return server.names[0].encode()
        return self.client.listener.server_name

    @property
    def proxy_host(self) -> bytes:
        if self.proxy_target is not None:
            return self.proxy_target[0]
        return self.route.proxy_host if self.route is not None else b""

    @property
    def upstream_addr(self) -> bytes:
        return self.peer.name.encode() if self.peer is not None else b""

    @property
    def method(self) -> bytes:
        """The method the content phase sees: GET after an error_page redirect."""
        override = self.method_override
        return self.head.method if override is None else override

    def capture(self, n: int) -> bytes:
        """$1..$9: groups of the last regex that matched (location, rewrite or map)."""
        return self.captures[n - 1] if 0 < n <= len(self.captures) else b""

    def var(self, name: str) -> bytes:
        """A `set` variable, or a `map` variable evaluated on first use."""
        values = self.vars
        if values is not None and name in values:
            return values[name]
        maps = self.worker.maps
        compiled = maps.get(name) if maps else None
        if compiled is None:
            return b""
        value: bytes = compiled.value_for(self)
        if self.vars is None:
            self.vars = {}
        self.vars[name] = value
        return value

    def set_var(self, name: str, value: bytes) -> None:
        if self.vars is None:
            self.vars = {}
        self.vars[name] = value

    # ---- phase: start ----

    def start(self) -> None:
        head = self.head
        if head.method == b"CONNECT" and self.client.listener.forward is None:
            # A reverse proxy tunnels nowhere; a forward listener's CONNECT goes through
            # its route's filters to proxy/forward.py like any request.
            self.respond_local(405)
            return
        table = self.client.listener.table
        if table.has_regexes:
            server, named = table.server_and_captures(head.host_name)
            for name, value in named:
                self.set_var(name, value.encode("latin-1"))
        else:
            server = table.server_named(head.host_name)
        self.server = server
        real_ip = self.client.listener.real_ip
        if real_ip is not None:
            self._take_real_address(real_ip.get(server))
        route = server.single
        if route is None:
            route = self._find_route(server)
            if route is None:
                return  # answered: a return, a redirect, 400, 404 or 500
        self.route = route
        limit = route.max_body
        if limit is not None and head.content_length > limit:
            _log.info("client intended to send too large body: %d bytes", head.content_length)
            self.respond_local(413)
            return
        if route.filters:
            self._run_filters(route, 0)
        else:
            self._proceed(route)

    def _take_real_address(self, policy: RealIp | None) -> None:
        """nginx's realip (post-read phase, before the server's rewrites): a trusted
        peer may name the client in a header or its PROXY header (filters/real_ip.py)."""
        if policy is None:
            return
        client = self.client
        found = policy.client(client.remote_addr, self.head.headers, client.proxy_addr or None)
        if found is not None:
            self.real_addr = found
            # nginx: the PROXY header's source port; a header names no port here.
            self.real_port = client.proxy_port if policy.header == "proxy_protocol" else b""

    def _proceed(self, route: Route) -> None:
        """nginx's content phase: the route proxies (or, without proxy_pass, 404)."""
        forward = self.client.listener.forward
        if forward is not None:
            forward.proceed(self)  # forward-proxy mode: the target names the origin
            return
        if not route.proxies:
            # A location with neither proxy_pass nor return: files, if it has a root.
            if route.static is not None:
                route.static.serve(self)
            else:
                self.respond_error(404)
            return
        if route.url is None:
            self.group, self.pool, self.max_tries = route.group, route.pool, route.max_tries
        elif not self._resolve_url(route):
            return
        # The cache's phase: a fresh hit answers now, a miss may wait for another's.
        if route.cache is not None and route.cache.begin(self):
            return
        self.send_upstream()

    def send_upstream(self) -> None:
        """Build the head for the upstream (the cache may amend it: validators of a
        stale entry, no client conditionals) and dispatch."""
        route = self.route
        assert route is not None
        self.request_bytes = self._upstream_head(route)
        if self.cache_op is not None:
            self.cache_op.prepare_request(self)
        self.dispatch()

    def _resolve_url(self, route: Route) -> bool:
        """proxy_pass with variables: evaluate the URL and find its upstream. As nginx
        without a `resolver`, a name must be an upstream's; an address is used as is."""
        url = route.url
        assert url is not None
        value = url if isinstance(url, bytes) else url(self)
        target = parse_proxy_url(value)
        if target is None:
            _log.error("invalid URL prefix in %r", value)
            self.respond_local(500)
            return False
        authority, host, port, uri = target
        upstream = self.worker.upstream_for(authority, host, port)
        if upstream is None:
            _log.error("no resolver defined to resolve %s", host.decode("latin-1"))
            self.respond_local(502)
            return False
        self.group, self.pool = upstream
        tries = route.spec.next_upstream_tries or len(self.group.peers)
        self.max_tries = min(tries, max(1, len(self.group.peers)))
        self.proxy_target = (authority, uri)
        return True

    # ---- phase: preaccess and access (filters/), only for routes that have filters ----

    def _run_filters(self, route: Route, first: int) -> None:
        """Runs the route's filters from `first` on: each lets the request go on,
        answers it (a deny, a limit) or delays it (limit_req), after which the walk
        resumes with the next filter."""
        self.filter_timer = None
        if self.finished:
            return  # the client left while the request was delayed
        filters = route.filters
        now = _monotonic()
        for i in range(first, len(filters)):
            f = filters[i]
            verdict = f.check(self, now)
            if verdict is None:
                if f.holds:
                    if self.held is None:
                        self.held = []
                    self.held.append(f)
            elif isinstance(verdict, Delay):
                loop = self.worker.loop
                self.filter_timer = loop.call_later(
                    verdict.seconds, self._run_filters, route, i + 1
                )
                return
            elif isinstance(verdict, Pending):
                # A shared zone's round trip to Redis (cluster/): go on when it answers.
                self.filter_timer = verdict.future
                verdict.future.add_done_callback(partial(self._filter_settled, route, i))
                return
            else:
                self.respond_deny(verdict)
                return
        self._proceed(route)

    def _filter_settled(
        self, route: Route, i: int, future: asyncio.Future[Deny | Delay | None]
    ) -> None:
        """A `Pending` verdict arrived: acted on as `_run_filters` acts on a verdict."""
        if self.filter_timer is future:
            self.filter_timer = None
        if future.cancelled():
            return  # the exchange ended first; the filter gave back what it took
        verdict = future.result()
        f = route.filters[i]
        if self.finished:
            if verdict is None and f.holds:
                f.done(self)  # it passed just as the client left
            return
        if verdict is None:
            if f.holds:
                if self.held is None:
                    self.held = []
                self.held.append(f)
            self._run_filters(route, i + 1)
        elif isinstance(verdict, Delay):
            loop = self.worker.loop
            self.filter_timer = loop.call_later(verdict.seconds, self._run_filters, route, i + 1)
        else:
            self.respond_deny(verdict)

    def _release_filters(self) -> None:
        timer = self.filter_timer
        if timer is not None:
            timer.cancel()
            self.filter_timer = None
        held = self.held
        if held is not None:
            self.held = None
            for f in held:
                f.done(self)

    # ---- phase: rewrite and location search (nginx's server-rewrite, find-config,
    # rewrite phases), only for servers whose configuration needs them ----

    def _find_route(self, server: VirtualServer[Route]) -> Route | None:
        try:
            self.uri = normalize_path(self.head.path)
        except ProtocolError as exc:
            _log.info("bad request path from %s: %s", self.remote_addr.decode(), exc.reason)
            self.respond_local(400)
            return None
        return self._search_route(server)

    def _search_route(self, server: VirtualServer[Route]) -> Route | None:
        """nginx's server-rewrite, find-config and rewrite phases on the current $uri
        (after normalisation, and again after each internal redirect)."""
        if server.script is not None:
            script = cast(CompiledScript, server.script)
            templates = cast("dict[str, Template]", server.extra)
            if self._run_script(script, templates) is None:
                return None
        locations = server.locations
        for _ in range(MAX_REWRITE_CYCLES):
            if locations is None:
                route = server.match(self.uri)
                captures: tuple[str, ...] = ()
            else:
                found = locations.match(self.uri.decode("latin-1"))
                if found is None:
                    self.respond_local(404)
                    return None
                if found.redirect_to is not None:
                    target = found.redirect_to.encode("latin-1")
                    self.respond_return(301, target + b"?" + self.args if self.args else target)
                    return None
                route, captures = found.value, found.captures
                for name, value in found.named:
                    self.set_var(name, value.encode("latin-1"))
            if route is None:
                self.respond_local(404)
                return None
            self.captures = tuple(c.encode("latin-1") for c in captures)
            if route.script is None:
                return route
            self.route = route
            outcome = self._run_script(route.script, route.templates)
            if outcome is None:
                return None
            if not outcome.needs_location_search:
                return route
        _log.error("rewrite or internal redirection cycle while processing %r", self.head)
        self.respond_local(500)
        return None

    # ---- internal redirects: try_files, index, error_page (nginx's internal redirect) ----

    def internal_redirect(self, uri: bytes, args: bytes) -> None:
        """Go through the server's rewrites and the location search again with a new
        $uri (nginx's ngx_http_internal_redirect), then the new route's phases."""
        server = self.server
        if not self._count_redirect() or server is None:
            return
        self.uri, self.args, self.rewritten = uri, args, True
        self.captures = ()
        route = self._search_route(server)
        if route is not None:
            self._enter(route)

    def named_redirect(self, name: bytes) -> None:
        """nginx's ngx_http_named_location: the route runs from its rewrite phase."""
        server = self.server
        if not self._count_redirect() or server is None:
            return
        tree = server.locations
        route = tree.named(name.decode("latin-1")) if tree is not None else None
        if route is None:
            _log.error("could not find named location %r", name)
            self.respond_local(500)
            return
        self.route = route
        if route.script is not None:
            outcome = self._run_script(route.script, route.templates)
            if outcome is None:
                return
            if outcome.needs_location_search:
                self.internal_redirect(self.uri, self.args)
                return
        self._enter(route)

    def _count_redirect(self) -> bool:
        self.redirects += 1
        self.tried_files = False
        if self.redirects <= MAX_REWRITE_CYCLES:
            return True
        _log.error("rewrite or internal redirection cycle while processing %r", self.head)
        self.respond_local(500)
        return False

    def _enter(self, route: Route) -> None:
        """The phases after the location search, for a route reached by a redirect.
        Filters that hold state (limit_conn) ran once for this request: not again."""
        self.route = route
        if route.filters and self.held is None:
            self._run_filters(route, 0)
        else:
            self._proceed(route)

    def respond_error(self, status: int, headers: bytes = b"") -> None:
        """An error made here (a missing file, a denial, an upstream failure): the
        route's error_page for it if it has one (once per request), else the
        standard page."""
        route = self.route
        pages = route.error_pages if route is not None else None
        page = pages.page_for(status) if pages and not self.error_paged else None
        if page is None:
            self.respond_local(status, headers)
            return
        self.error_paged = True
        if page.kind == "url":
            self.respond_return(page.status, page.target)
            return
        # ngx_http_send_error_page: the replacement answer goes out with this status
        # (0: its own), and is fetched with GET (a HEAD stays a HEAD).
        self.error_status = page.status
        if self.head.method != b"HEAD":
            self.method_override = b"GET"
        if page.kind == "named":
            self.named_redirect(page.target)
        else:
            self.internal_redirect(page.target, page.args or b"")

    def end_local(self, keep_alive: bool) -> None:
        """An answer made here has been written whole (a static file)."""
        self.finished = True
        self._log_access()
        self.client.exchange_done(self, keep_alive)

    def _run_script(
        self, script: CompiledScript, templates: dict[str, Template]
    ) -> ScriptOutcome | None:
        """Runs a rewrite script; returns its outcome, or None when it answered."""

        def render(template: str, captures: tuple[str, ...]) -> str:
            saved = self.captures
            self.captures = tuple(c.encode("latin-1") for c in captures)
            try:
                tpl = templates[template]
                return (tpl if isinstance(tpl, bytes) else tpl(self)).decode("latin-1")
            finally:
                self.captures = saved

        outcome = run_script(
            script,
            self.uri.decode("latin-1"),
            render,
            lambda name, value: self.set_var(name, value.encode("latin-1")),
            args=self.args.decode("latin-1"),
            captures=tuple(c.decode("latin-1") for c in self.captures),
            escape_captures=b"%" in self.head.path or b"+" in self.head.path,
            on_change=self._script_changed,
            file_test=_file_test,
        )
        if outcome.uri_changed:
            self.uri = outcome.uri.encode("latin-1")
            self.rewritten = True
        if outcome.args is not None:
            self.args = outcome.args.encode("latin-1")
        self.captures = tuple(c.encode("latin-1") for c in outcome.captures)
        if outcome.status is None:
            return outcome
        if outcome.location is not None:
            self.respond_return(outcome.status, outcome.location.encode("latin-1"))
        elif outcome.body is not None or outcome.status == 444:
            self.respond_return(outcome.status, (outcome.body or "").encode("latin-1"))
        else:
            self.respond_error(outcome.status)
        return None

    def _upstream_target(self, route: Route) -> bytes:
        """nginx's rules: with a URI part in proxy_pass, the part of the normalised path
        that matched the location is replaced by it; a path changed by a rewrite goes
        as rewritten; otherwise the client's own request target goes unchanged."""
        head = self.head
        uri_part = route.upstream_uri
        if self.proxy_target is not None and self.proxy_target[1] is not None:
            # proxy_pass with variables and a URI part: that URI, as evaluated, is the
            # whole target (nginx appends nothing).
            return self.proxy_target[1]
        if self.rewritten:
            # nginx: after a rewrite the whole new URI goes, escaped, even when
            # proxy_pass has a URI part.
            path = encode_path(self.uri)
        elif uri_part is not None and self.uri.startswith(route.prefix):
            path = uri_part + self.uri[len(route.prefix) :]
            # nginx escapes the rebuilt path only when the client's was escaped.
            if b"%" in head.path:
                path = encode_path(path)
        elif not head.target.startswith(b"/"):  # absolute-form: origin-form upstream
            path = head.path
        else:
            return head.target if self.args is head.query else head.path + b"?" + self.args
        return path + b"?" + self.args if self.args else path

    def _upstream_head(self, route: Route) -> bytes:
        head = self.head
        target = self._upstream_target(route)
        extra = route.render_extra(self)
        forwarded_for = None
        if not route.forwarded:
            # Not ours to change: pass the client's on, unless the route sets its own.
            if head.forwarded_for is not None and b"x-forwarded-for" not in route.drop:
                extra += b"X-Forwarded-For: %s\r\n" % head.forwarded_for
            if head.forwarded_other:
                extra += (
                    _without(head.forwarded_other, route.drop)
                    if route.drop
                    else (head.forwarded_other)
                )
        else:
            forwarded_for = self.remote_addr
            extra = b"X-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n%s" % (
                self.client.listener.scheme,
                head.host or self.client.listener.server_name,
                extra,
            )
        upgrade = head.upgrade
        if (
            upgrade is not None
            and route.pass_upgrade
            and upgrade.lower() != b"h2c"
            and b"upgrade" not in route.drop
        ):
            extra += b"Upgrade: %s\r\nConnection: upgrade\r\n" % upgrade
        changes = route.upstream_request
        if changes is not None:  # proxy_method, proxy_set_body, ... (proxy/body.py)
            return changes.serialize(self, route, target, extra, forwarded_for)
        if route.host_is_host:
            host = request_host(head)
            if host is None:
                host = self.server_name
        else:
            host = route.render_host(self)
        return serialize_request_head(
            head, target, host, extra, route.drop, forwarded_for, route.http10
        )

    # ---- phase: dispatch / attach ----

    def dispatch(self) -> None:
        group, pool = self.group, self.pool
        assert group is not None and pool is not None
        key_fn = group.key_fn
        now = self.worker.sweeper.now
        peer = group.select(now, self.tried, key_fn(self) if key_fn is not None else b"")
        if peer is None and self._queue(group, now):
            return
        if peer is None:
            _log.error(
                "no live upstreams in %r while serving %r",
                group.name,
                self.head,
                extra=self._error_context(
                    "no live upstreams while connecting to upstream", upstream_name=group.name
                ),
            )
            self.fail(502)
            return
        self._dispatch_to(peer)

    def _dispatch_to(self, peer: PeerState) -> None:
        """The attempt on `peer`, which `group.select` gave this request (here, or in
        _wake_next on its behalf)."""
        group, pool = self.group, self.pool
        assert group is not None and pool is not None
        if self.finished:
            # Woken from the queue, then the client went away before its turn came: the
            # slot claimed for it goes to the next in line.
            group.release(peer, Outcome.NEUTRAL, self.worker.sweeper.now)
            if group.waiters:
                self._wake_next(group)
            return
        self.peer = peer
        self.tried |= 1 << peer.index
        self.tries += 1
        if self.started or group.measure:
            self.upstream_start = _monotonic()
        if not self.first_dispatch and self.route is not None and self.route.retry_deadline:
            self.first_dispatch = _monotonic()
        conn = pool.acquire(peer)
        if conn is not None:
            self.attach(conn, True)
        else:
            self.worker.loop.create_task(self._connect(pool, peer))

    # ---- the max_conns queue ----

    def _queue(self, group: UpstreamGroup, now: float) -> bool:
        """Every usable peer is at max_conns: wait for one, if the group's queue has room
        (nginx's `queue N timeout=T`). Returns False when the request cannot wait."""
        if not group.at_capacity(now, self.tried) or len(group.waiters) >= group.queue_limit:
            return False
        loop = self.worker.loop
        self.queue_deadline = loop.time() + group.queue_timeout
        group.waiters.append(self)
        # One timer per group, not one per waiter: every waiter of a group waits as
        # long, so deadlines come in the queue's order and only the front's matters.
        # (A handle per waiter, armed and cancelled for nearly every request when the
        # queue is what keeps upstream connections few, is timer churn.)
        if group.queue_timer is None:
            group.queue_timer = loop.call_at(self.queue_deadline, _expire_queue, group, loop)
        return True

    def _wake_next(self, group: UpstreamGroup) -> None:
        """A peer of `group` has room again: the longest-waiting request goes next.

        Its peer is chosen (and the slot taken) now, not when it runs: a request that
        arrives in between, or the next one pipelined on the connection just released,
        would otherwise take the slot first and send the waiter to the back of the queue
        (under load some waited for the whole queue_timeout while later ones went
        through). If nothing can take it yet, it keeps its place at the front."""
        waiters = group.waiters
        now = self.worker.sweeper.now
        while waiters:
            nxt: Exchange = waiters.popleft()
            if nxt.finished:
                continue
            key_fn = group.key_fn
            peer = group.select(now, nxt.tried, key_fn(nxt) if key_fn is not None else b"")
            if peer is None and group.at_capacity(now, nxt.tried):
                waiters.appendleft(nxt)  # still no room for it: it keeps its place
                return
            # Not re-entered from inside this exchange's release: on the next loop turn.
            if peer is not None:
                self.worker.loop.call_soon(nxt._dispatch_to, peer)
            else:
                # Not busy but failed: its own dispatch decides (a 502, logged, or a peer
                # that select's "all failed, all live again" reset has just revived).
                self.worker.loop.call_soon(nxt.dispatch)
            return

    async def _connect(self, pool: ConnectionPool, peer: PeerState) -> None:
        route = self.route
        assert route is not None
        try:
            conn = await pool.connect(peer, route.connect_timeout)
        except UpstreamError as exc:
            if not self.finished:
                self.attempt_failed(exc, Outcome.FAILURE)
            return
        except Exception as exc:  # our bug: log it with its stack, answer 502
            _log.exception("connecting to %s", peer.name)
            if not self.finished:
                self.attempt_failed(UpstreamConnectError(str(exc)), Outcome.FAILURE)
            return
        if self.finished:  # the client went away while we connected
            pool.release(conn, True)
            return
        self.attach(conn, False)

    def attach(self, conn: UpstreamConnection, reused: bool) -> None:
        route = self.route
        assert route is not None
        self.conn = conn
        self.reused = reused
        changes = route.upstream_request
        conn.attach(
            self,
            (self.head.method if changes is None else changes.method_for(self)) == b"HEAD",
        )
        data = [self.request_bytes]
        chunked = self.head.framing is _CHUNKED
        if chunked and changes is not None and changes.discards_body:
            chunked = False  # the client's body is read and dropped: no chunks, no end
        if self.pending:
            for piece in self.pending:
                data.append(chunk(piece) if chunked else piece)
            self.pending = []
        if self.body_done and chunked:
            data.append(CHUNKED_END)
        if self.pending_size > PENDING_LIMIT:
            self.client.resume_body()
        self.pending_size = 0
        conn.write(data[0] if len(data) == 1 else b"".join(data))
        conn.deadline = self.worker.sweeper.now + route.read_timeout

    # ---- phase: request body (events from the client connection) ----

    def on_request_body(self, data: bytes) -> None:
        if self.finished:
            return
        route = self.route
        if route is not None and route.max_body is not None:
            self.received += len(data)
            if self.received > route.max_body and self.response is None:
                # A chunked body has no length up front: nginx counts it as it comes.
                _log.info("client intended to send too large chunked body")
                self._let_go(Outcome.NEUTRAL)
                self.respond_local(413)
                return
        changes = route.upstream_request if route is not None else None
        if changes is not None and changes.discards_body:
            return  # read (framed by the connection) and dropped, as nginx
        replay = self.replay
        if replay is not None:
            self.replay_size += len(data)
            if self.replay_size > REPLAY_LIMIT:
                self.replay = None
            else:
                replay.append(data)
        conn = self.conn
        if conn is not None:
            conn.write(chunk(data) if self.head.framing is _CHUNKED else data)
            assert self.route is not None
            conn.deadline = self.worker.sweeper.now + self.route.send_timeout
        else:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > PENDING_LIMIT:
                self.client.pause_body()

    def on_request_end(self) -> None:
        self.body_done = True
        conn = self.conn
        if conn is not None and not self.finished and self.head.framing is _CHUNKED:
            changes = self.route.upstream_request if self.route is not None else None
            if changes is None or not changes.discards_body:
                conn.write(CHUNKED_END)

    # ---- phase: response (events from the upstream connection's parser) ----

    def on_response_head(self, head: ResponseHead) -> None:
        status = head.status
        if status == 503 or status == 429:
            self._honour_retry_after(head)
        if self.route is not None and self.route.retry_statuses and self._retry_on_status(head):
            # Swallow this answer (and its body): flush_response sends the request on.
            self.retry_status = status
            self.response = head
            return
        if self._intercepts(head):
            # proxy_intercept_errors: swallow this answer; flush_response redirects to
            # the error page. A negative retry_status tells it from a retry.
            self.retry_status = -status
            self.response = head
            return
        op = self.cache_op
        if op is not None and op.on_response_head(self, head):
            return  # the cache answers instead (a 304 merged, an error met with stale)
        if self.error_status:
            head.status = self.error_status  # an error page's answer (error_page)
            head.fields += self.error_headers
        self.response = head
        self.status = head.status
        if self.upstream_start and self.group is not None and self.group.measure:
            self.header_time = _monotonic()
        if head.status == 101:
            return  # written by upstream_upgraded once the switch is confirmed
        client_http11 = self.head.version == b"1.1"
        framing = client_framing(head, client_http11)
        self.resp_framing = framing
        self.keep_alive = (
            self._client_keep_alive()
            and self.body_done
            and framing is not _UNTIL_CLOSE
            and not self.worker.draining
        )
        route = self.route
        assert route is not None
        if route.hide:
            head.fields = _without(head.fields, route.hide)
        # The status first: `redirects` is an interpreted class, so its truth test is a
        # Python-level __bool__ call, which a 2xx answer need not pay.
        if status >= 300 and route.redirects:
            head.fields = route.redirects.rewrite_fields(
                head.fields, self._render_redirect, self._absolute
            )
        date = head.date
        extra = (
            b"Date: %s\r\n" % date
            if date is not None and route.pass_date
            else self.worker.date_line
        )
        if route.add_headers:
            extra += render_add_headers(route.add_headers, head.status, self)
        if route.debug:
            extra += self._debug_line()
        trace = self.worker.trace
        if trace is not None:
            # observability/trace.py: b"" unless the request asked for a trace.
            extra += trace.field(self)
        if op is not None:
            extra += op.field
        if self.keep_alive and self.worker.keepalive_line:
            extra += self.worker.keepalive_line  # keepalive_timeout T HEADER_T
        self.out.append(
            serialize_response_head(head, framing, self.keep_alive, client_http11, extra)
        )

    def _intercepts(self, head: ResponseHead) -> bool:
        route = self.route
        return (
            route is not None
            and route.intercept_errors
            and head.status >= 300
            and not self.error_paged
            and route.error_pages.covers(head.status)
        )

    def _render_redirect(self, template: str, captures: tuple[bytes, ...]) -> bytes:
        route = self.route
        assert route is not None
        tpl = route.redirect_templates[template]
        if isinstance(tpl, bytes):
            return tpl
        saved = self.captures
        self.captures = captures
        try:
            return tpl(self)
        finally:
            self.captures = saved

    def _intercepted(self) -> None:
        """The upstream's answer goes to no client: its peer and connection go back (as
        after a retry), and the error page for its status answers instead."""
        status = -self.retry_status
        self.retry_status = 0
        peer, conn, pool, group = self.peer, self.conn, self.pool, self.group
        if self.ended and conn is not None and group is not None and pool is not None:
            self.conn = None
            if peer is not None:
                group.release(peer, Outcome.SUCCESS, self.worker.sweeper.now)
            pool.release(conn, self.upstream_keep)
            if group.waiters:
                self._wake_next(group)
        else:
            self._let_go(Outcome.SUCCESS)
        self.peer = self.response = None
        self.status = self.body_bytes = self.tried = self.tries = 0
        self.ended = False
        self.out.clear()
        self.respond_error(status)

    def _client_keep_alive(self) -> bool:
        head = self.head
        if head.upgrade is None:
            return head.keep_alive
        # llhttp calls no Upgrade request persistent (the protocol may switch). When it
        # does not switch, HTTP/1.1's rule holds (RFC 9112 9.3); h2c always closes.
        return (
            head.upgrade != b"h2c"
            and head.version == b"1.1"
            and b"close" not in head.connection_tokens
        )

    def _note_attempt(self, text: str) -> None:
        if self.attempts is None:
            self.attempts = []
        self.attempts.append(text)

    def _debug_line(self) -> bytes:
        """X-Ferryman-Upstream: why this peer. Only with the route's debug_header."""
        group, peer = self.group, self.peer
        assert group is not None
        now = self.worker.sweeper.now
        parts = [
            f"peer={peer.name if peer is not None else '-'}",
            f"strategy={group.strategy}",
        ]
        if self.attempts:
            parts.append("tried=" + ", ".join(self.attempts))
        skipped = [
            f"{p.name} (down)"
            if p.spec.down
            else f"{p.name} (failed, {p.health.unavailable_until - now:.0f}s left)"
            for p in group.peers
            if p.spec.down or now < p.health.unavailable_until
        ]
        if skipped:
            parts.append("skipped=" + ", ".join(skipped))
        return b"X-Ferryman-Upstream: %s\r\n" % "; ".join(parts).encode()

    def skipped_peers(self) -> list[str]:
        """The peers of this request's group left out now, and why (the routing trace)."""
        group = self.group
        if group is None:
            return []
        now = self.worker.sweeper.now
        return [
            f"{p.name} ({_why_out(p, now)})"
            for p in group.peers
            if p.spec.down or p.probe_down or p.drained or now < p.health.unavailable_until
        ]

    def _honour_retry_after(self, head: ResponseHead) -> None:
        """A 503 or 429 with Retry-After (delay-seconds, RFC 9110 10.2.3) takes the peer
        out of rotation for that long, capped at an hour."""
        value = next((v for n, v in head.headers if n.lower() == b"retry-after"), None)
        peer, group = self.peer, self.group
        if value is None or peer is None or group is None:
            return
        value = value.strip(b" \t")
        if value.isdigit() and len(value) <= 7:
            group.suspend(peer, min(int(value), 3600), self.worker.sweeper.now)

    def on_response_body(self, data: bytes) -> None:
        if self.retry_status:
            return
        op = self.cache_op
        if op is not None and op.on_body(data):
            return
        self.body_bytes += len(data)
        self.out.append(chunk(data) if self.resp_framing is _CHUNKED else data)

    def on_response_end(self, keep_alive: bool) -> None:
        if self.retry_status:
            self.upstream_keep = keep_alive and self.body_done
            self.ended = True
            return
        op = self.cache_op
        if op is not None:
            if op.swallowed:
                self.upstream_keep = keep_alive and self.body_done
                self.ended = True
                return
            op.on_end(self)
        if self.resp_framing is _CHUNKED:
            self.out.append(CHUNKED_END)
        self.upstream_keep = keep_alive and self.body_done
        self.ended = True

    def flush_response(self) -> None:
        if self.retry_status:
            # Whether or not its body came whole, that answer is not for the client.
            if self.retry_status < 0:
                self._intercepted()
            else:
                self._retry_after_status()
            return
        op = self.cache_op
        if op is not None and op.swallowed:
            if self.ended:
                op.serve_swallowed(self)
            return
        out = self.out
        if out:
            self.flushed = True
            data = out[0] if len(out) == 1 else b"".join(out)
            h1 = self.h1
            if h1 is not None:
                h1.write(data)
            else:
                self.client.write(data)
            out.clear()
        if self.ended:
            self.complete()
        elif self.conn is not None and self.route is not None:
            self.conn.deadline = self.worker.sweeper.now + self.route.read_timeout

    # ---- phase: complete ----

    def complete(self) -> None:
        self.finished = True
        group, pool, peer, conn = self.group, self.pool, self.peer, self.conn
        assert group is not None and pool is not None and peer is not None and conn is not None
        h1 = self.h1
        if h1.is_write_paused if h1 is not None else self.client.is_write_paused:
            # Reading was paused for this slow client (client_paused): the pool must get
            # the connection back reading, or its next user would wait for nothing.
            self.client_paused(False)
        self.conn = None
        if group.measure:
            now = _monotonic()
            group.release(
                peer,
                Outcome.SUCCESS,
                self.worker.sweeper.now,
                self.header_time - self.upstream_start if self.header_time else -1.0,
                now - self.upstream_start,
            )
        else:
            group.release(peer, Outcome.SUCCESS, self.worker.sweeper.now)
        # A close-delimited body ends with the connection: the pool gets nothing back.
        pool.release(conn, self.upstream_keep)
        if group.waiters:
            self._wake_next(group)
        self._log_access()
        if h1 is not None:
            h1.exchange_done(self, self.keep_alive)
        else:
            self.client.exchange_done(self, self.keep_alive)

    # ---- answers from the cache (cache/handler.py) ----

    def end_from_cache(self, keep_alive: bool) -> None:
        """The cache has written its whole answer (a hit, a stale entry, a purge)."""
        self.finished = True
        self._log_access()
        self.client.exchange_done(self, keep_alive)

    def release_upstream(self, outcome: Outcome) -> None:
        """The upstream's answer was read whole but the cache answers instead: its peer
        and connection go back as in complete(), and this exchange holds neither."""
        group, pool, peer, conn = self.group, self.pool, self.peer, self.conn
        self.conn = None
        self.peer = None
        if group is None:
            return
        if peer is not None:
            group.release(peer, outcome, self.worker.sweeper.now)
        if pool is not None and conn is not None:
            pool.release(conn, self.upstream_keep)
        if group.waiters:
            self._wake_next(group)

    # ---- failures ----

    def upstream_failed(self, exc: Exception) -> None:
        if not self.finished:
            self.attempt_failed(exc, Outcome.FAILURE)

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.finished:
            return
        if self.tunnel:
            self.finish_tunnel()
            return
        response = self.response
        if response is None or response.framing is not _UNTIL_CLOSE:
            self.conn = None  # it is gone; nothing to detach or close
        if response is None:
            # nginx's words (and "closed", which native log alerts look for).
            reason = _NGINX_PREMATURE
            # A kept-alive connection the peer closed just as we reused it is the
            # classic keep-alive race, not a sign that the peer is unhealthy.
            outcome = Outcome.NEUTRAL if self.reused else Outcome.FAILURE
            self.attempt_failed(UpstreamResetError(reason), outcome)
        elif response.framing is _UNTIL_CLOSE and not self.ended:
            self.on_response_end(False)
            self.flush_response()
        else:
            self.truncated("upstream closed the connection mid-response")

    def upstream_timeout(self) -> None:
        if self.finished:
            return
        if self.tunnel:
            _log.info("tunnel idle past read_timeout, closed: %r", self.head)
            self.finish_tunnel()
            return
        if self.response is None:
            self.attempt_failed(UpstreamTimeoutError(_NGINX_READ_TIMEOUT), Outcome.FAILURE)
        else:
            self.truncated("upstream timed out mid-response")

    def _let_go(self, outcome: Outcome, abort: bool = True) -> None:
        """End this attempt: its connection is closed (aborted when its framing is in
        doubt), and its peer is released with `outcome`, which feeds passive health."""
        conn, group, peer = self.conn, self.group, self.peer
        self.conn = None
        if conn is not None:
            conn.detach()
            if abort:
                conn.abort()
            else:
                conn.close()
        if group is not None and peer is not None:
            group.release(peer, outcome, self.worker.sweeper.now)
            if group.waiters:
                self._wake_next(group)

    def attempt_failed(self, exc: Exception, outcome: Outcome) -> None:
        peer = self.peer
        assert self.route is not None and peer is not None
        if self.route.debug or self.worker.trace is not None:
            self._note_attempt(f"{peer.name} ({getattr(exc, 'kind', 'error')})")
        self._let_go(outcome)
        self.peer = None
        status = exc.status if isinstance(exc, UpstreamError) else 502
        _log.error(
            "upstream %s failed (%s) for %r from %s: %s",
            peer.name,
            getattr(exc, "kind", "error"),
            self.head,
            self.remote_addr.decode(),
            exc,
            extra=self._error_context(_nginx_words(exc), peer),
        )
        if self._may_retry(exc):
            if not isinstance(exc, UpstreamConnectError):
                # Bytes went out: re-send from the replay buffer.
                self.pending = list(self.replay or ())
            self.dispatch()
        else:
            self.fail(status)

    def _error_context(
        self, nginx: str, peer: PeerState | None = None, upstream_name: str | None = None
    ) -> dict[str, object]:
        """What nginx appends to a request's error-log line (observability/error_log.py):
        client, server, request, upstream (scheme, the peer or else the upstream's name,
        the URI sent), host."""
        head, route = self.head, self.route
        upstream = None
        name = peer.name if peer is not None else upstream_name
        if name is not None and route is not None:
            scheme = "https" if route.spec.upstream_tls is not None else "http"
            target = self._upstream_target(route).decode("latin-1")
            upstream = f"{scheme}://{name}{target}"
        return error_context(
            cid=getattr(self.client, "number", 0),
            client=self.remote_addr.decode("latin-1"),
            server=self.server_name.decode("latin-1"),
            request=f"{head.method.decode('latin-1')} {head.target.decode('latin-1')}"
            f" HTTP/{head.version.decode('latin-1')}",
            upstream=upstream,
            host=head.host.decode("latin-1") if head.host is not None else None,
            nginx=nginx,
        )

    def _may_retry(self, exc: Exception) -> bool:
        route = self.route
        assert route is not None
        if route.retry_off or self.tries >= self.max_tries or self.response is not None:
            return False
        if self.client.closed or self._retry_time_is_up(route):
            return False
        if _CONDITION.get(getattr(exc, "kind", "error"), "error") not in route.retry_on:
            return False
        if isinstance(exc, UpstreamConnectError):
            return True  # nothing was sent; `pending` still holds the whole body so far
        return self._replayable(route)

    def _replayable(self, route: Route) -> bool:
        """Bytes of this request reached an upstream: may they be sent again?
        Idempotent methods may (RFC 9110 9.2.2); others only when the route says so,
        and only while the whole body so far is in the replay buffer."""
        if self.replay is None:
            return False
        method = self.head.method
        if method in _IDEMPOTENT or route.retry_non_idempotent:
            return True
        return route.retry_key and self.head.header(b"idempotency-key") is not None

    def _retry_time_is_up(self, route: Route) -> bool:
        return bool(route.retry_deadline) and (
            _monotonic() - self.first_dispatch > route.retry_deadline
        )

    def _retry_on_status(self, head: ResponseHead) -> bool:
        """proxy_next_upstream http_NNN: is this answer to be replaced by another peer's?
        Only while nothing reached the client, the whole request is in hand, and another
        peer can be tried; otherwise, as in nginx, this answer is the one passed on."""
        route, group = self.route, self.group
        assert route is not None and group is not None
        return (
            head.status in route.retry_statuses
            and not route.retry_off
            and self.tries < self.max_tries
            and self.body_done
            and self._replayable(route)
            and not self._retry_time_is_up(route)
            and group.has_candidate(self.worker.sweeper.now, self.tried)
        )

    def _retry_after_status(self) -> None:
        """Discard the answer of the peer just tried and send the request to the next."""
        status = self.retry_status
        self.retry_status = 0
        peer, conn, pool, group = self.peer, self.conn, self.pool, self.group
        assert peer is not None and group is not None and pool is not None
        _log.warning(
            "upstream %s answered %d to %r: trying the next peer", peer.name, status, self.head
        )
        # nginx counts 500/502/503/504 as failures of the peer, 403/404/429 not.
        outcome = Outcome.FAILURE if status in (500, 502, 503, 504) else Outcome.NEUTRAL
        if self.route is not None and (self.route.debug or self.worker.trace is not None):
            self._note_attempt(f"{peer.name} (http_{status})")
        if self.ended and conn is not None:
            # The unwanted answer was read whole: its connection is still good.
            self.conn = None
            group.release(peer, outcome, self.worker.sweeper.now)
            pool.release(conn, self.upstream_keep)
            if group.waiters:
                self._wake_next(group)
        else:
            self._let_go(outcome)
        self.peer = None
        self.response = None
        self.status = 0
        self.ended = False
        self.body_bytes = 0
        self.out.clear()
        self.pending = list(self.replay or ())
        self.dispatch()

    def fail(self, status: int) -> None:
        op = self.cache_op
        if op is not None and self.status == 0 and op.on_upstream_error(self, status):
            return  # a stale entry answered (proxy_cache_use_stale, stale-if-error)
        if self.response is None or self.status == 0 or not self.flushed:
            # Nothing of the response went out (an upstream that turned out invalid
            # after its head parsed, a 101 nobody asked for): its buffered part is
            # discarded and the client gets a clean error.
            self.out.clear()
            self.respond_error(status)
        else:
            self.truncated("failure after the response started")

    def truncated(self, reason: str) -> None:
        """Bytes already reached the client: it must not mistake a partial body for a
        whole one, so no final chunk is written and the connection is closed."""
        _log.error(
            "%s: %r from %s",
            reason,
            self.head,
            self.remote_addr.decode(),
            extra=self._error_context(_NGINX_TRUNCATED.get(reason, reason), self.peer),
        )
        self.finished = True
        self._let_go(Outcome.FAILURE)
        if self.out:
            self.client.write(b"".join(self.out))
            self.out.clear()
        self._log_access()
        self.client.exchange_done(self, False)

    def respond_deny(self, deny: Deny) -> None:
        """A filter refused the request: logged with what decided, answered locally."""
        if self.worker.metrics is not None:
            self.worker.metrics.record_deny(deny.reason)
        if not deny.logged:
            _log.warning(
                "%s: %r from %s (status %d)",
                deny.reason,
                self.head,
                self.remote_addr.decode(),
                deny.status,
            )
        extra = b"".join(b"%s: %s\r\n" % field for field in deny.headers)
        route = self.route
        pages = route.error_pages if route is not None else None
        if pages and not self.error_paged and pages.covers(deny.status):
            # nginx: 401/403/429/503 from access, auth and limits go through error_page
            # like any error the server makes.
            self.error_headers = extra
            self.respond_error(deny.status)
            return
        # No body of its own: the standard page's text. Either way a HEAD gets the head
        # only, and the connection stays open (nginx keeps it after 401/403/429/503).
        body = deny.body or b"%d %s\n" % (deny.status, _MESSAGES.get(deny.status, "Error").encode())
        self.finished = True
        self.status = deny.status
        keep = self.head.keep_alive and self.body_done and not self.worker.draining
        extra += self.worker.date_line
        if keep:
            extra += self.worker.keepalive_line
        if route is not None and route.add_headers:
            extra += render_add_headers(route.add_headers, deny.status, self)
        data = local_response(
            deny.status,
            body,
            content_type=b"text/plain",
            extra=extra,
            keep_alive=keep,
            head_only=self.head.method == b"HEAD",
        )
        self.body_bytes = len(data)
        self.client.write(data)
        self._log_access()
        self.client.exchange_done(self, keep)

    def respond_local(self, status: int, headers: bytes = b"") -> None:
        self.finished = True
        self.status = status
        keep = self.head.keep_alive and self.body_done and status < 500 and status != 400
        route = self.route
        extra = self.worker.date_line + headers
        if keep:
            extra += self.worker.keepalive_line
        if route is not None and route.add_headers:
            extra += render_add_headers(route.add_headers, status, self)
        data = error_response(status, _MESSAGES.get(status, "Error"), keep, extra)
        self.body_bytes = len(data)
        self.client.write(data)
        self._log_access()
        self.client.exchange_done(self, keep)

    def respond_return(self, status: int, text: bytes) -> None:
        """nginx `return`: a redirect (text is the Location), 444 (close, no answer), or
        a local answer whose body is `text`."""
        if self.error_status and status != 444:
            status = self.error_status  # nginx's err_status: an error page's answer
        self.finished = True
        self.status = status
        if status == 444:
            self._log_access()
            self.client.exchange_done(self, False)
            return
        keep = self.head.keep_alive and self.body_done and not self.worker.draining
        route = self.route
        # error_headers: a denial's fields, when this answers its error_page (else b"").
        extra = self.worker.date_line + self.error_headers
        if keep:
            extra += self.worker.keepalive_line
        if route is not None and route.add_headers:
            extra += render_add_headers(route.add_headers, status, self)
        if status in _REDIRECTS:
            if text.startswith(b"/"):
                text = self._absolute(text)
            extra = b"Location: %s\r\n%s" % (text, extra)
            body = _redirect_body(status)
            ctype = b"text/html"
        else:
            body = text
            ctype = _BUILTIN_TYPES.get(self.uri.rpartition(b".")[2].lower()) or (
                route.default_type if route is not None else b"text/plain"
            )
        self.body_bytes = len(body)
        self.client.write(
            local_response(
                status,
                body,
                content_type=ctype,
                extra=extra,
                keep_alive=keep,
                head_only=self.head.method == b"HEAD",
            )
        )
        self._log_access()
        self.client.exchange_done(self, keep)

    def _script_changed(self, uri: str, args: str) -> None:
        self.uri = uri.encode("latin-1")
        self.args = args.encode("latin-1")
        self.rewritten = True

    def _absolute(self, path: bytes) -> bytes:
        """nginx's absolute_redirect (on by default): a relative Location gets the
        scheme, $host and, unless it is the scheme's default, the listener's port."""
        listener = self.client.listener
        host = self.head.host or listener.server_name
        host = host[: host.find(b"]") + 1] if host.startswith(b"[") else host.partition(b":")[0]
        port = listener.port_bytes
        default = b"443" if listener.scheme == b"https" else b"80"
        suffix = b"" if port == default else b":" + port
        return b"%s://%s%s%s" % (listener.scheme, host.lower(), suffix, path)

    def client_gone(self) -> None:
        """The client closed its connection while this exchange was in flight."""
        if self.finished:
            return
        self.finished = True
        sender = self.sender
        if sender is not None:
            self.sender = None
            sender.close()
        self._let_go(Outcome.NEUTRAL)
        if self.status == 0:
            self.status = 499  # nginx's "client closed request"
        self._log_access()

    # ---- backpressure ----

    def client_paused(self, paused: bool) -> None:
        sender = self.sender
        if sender is not None:
            if not paused:
                sender.pump()
            return
        op = self.cache_op
        if op is not None:
            op.client_paused(paused)
        conn = self.conn
        if conn is not None and conn.transport is not None and not conn.closed:
            if paused:
                conn.transport.pause_reading()
            else:
                conn.transport.resume_reading()

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.client.pause_body()
        else:
            self.client.resume_body()

    # ---- upgrade tunnel (WebSocket and friends) ----

    def upstream_upgraded(self, tail: bytes) -> None:
        response = self.response
        upgrade = self.head.upgrade
        if response is None or response.status != 101 or upgrade is None:
            self.upstream_failed(UpstreamProtocolError("unexpected protocol switch"))
            return
        offered = next((v for n, v in response.headers if n.lower() == b"upgrade"), None)
        if offered is None or offered.lower() != upgrade.lower():
            self.upstream_failed(UpstreamProtocolError("101 without the requested Upgrade"))
            return
        head = serialize_response_head(
            response, _NONE, True, True, b"Upgrade: %s\r\nConnection: upgrade\r\n" % offered
        )
        self.tunnel = True
        self.flushed = True
        self.client.write(head + tail if tail else head)
        self._tunnel_active()
        self.client.start_tunnel(self)

    def _tunnel_active(self) -> None:
        # nginx: proxy_read_timeout bounds an idle tunnel; traffic either way renews it.
        conn, route = self.conn, self.route
        if conn is not None and route is not None:
            conn.deadline = self.worker.sweeper.now + route.read_timeout

    def tunnel_to_client(self, data: bytes) -> None:
        self.client.write(data)
        self._tunnel_active()

    def tunnel_to_upstream(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.write(data)
            self._tunnel_active()

    def tunnel_client_eof(self) -> None:
        """The client half-closed the tunnel: the upstream gets a FIN too (a TLS
        upstream cannot half-close, so its connection is closed)."""
        conn = self.conn
        if conn is not None:
            conn.half_close()

    def finish_tunnel(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._let_go(Outcome.SUCCESS, abort=False)
        self._log_access()
        self.client.exchange_done(self, False)

    # ---- logging ----

    def _log_access(self) -> None:
        # Runs once, when the exchange ends whichever way it ends: the place to let go of
        # what filters hold. The request's end is now, before that bookkeeping (a cache
        # entry committed to disk is not the client's time). One clock read for the
        # three sinks: each call costs on the hot path.
        now = _monotonic()
        if self.held is not None or self.filter_timer is not None:
            self._release_filters()
        if self.cache_op is not None:
            self.cache_op.finish()
        worker = self.worker
        # Typed locals: the compiled build calls these sinks natively, not by name.
        log: AccessLog = worker.access_log
        recent: RecentLog | None = worker.recent
        metrics: WorkerMetrics | None = worker.metrics
        if recent is None and metrics is None and not log.enabled:
            return
        if recent is not None:
            # observability/recent.py: the dashboard's tail
            recent.add(
                now, self.started, self.remote_addr, self.head, self.status, self.peer, self.group
            )
        if metrics is not None:
            op = self.cache_op
            metrics.count(
                self.route,
                self.status,
                self.received,
                self.body_bytes,
                self.started,
                self.upstream_start,
                now,
                self.tries - 1 if self.tries > 1 else 0,  # no try at all (a cache hit): 0
                op.metric_key() if op is not None else None,
                self,
            )  # observability/metrics.py
        if not log.enabled:
            return
        if log.custom is not None:
            log.record_line(log.custom(self))
            return
        head = self.head
        referer = user_agent = b""
        for n, v in head.headers:
            size = len(n)
            if size == 7 and equals_lower(n, b"referer", b"Referer"):
                referer = v
            elif size == 10 and equals_lower(n, b"user-agent", b"User-Agent"):
                user_agent = v
        log.record(
            Entry(
                self.remote_addr,
                log.wall_time(now),
                head.request_line,
                self.status,
                self.body_bytes,
                referer,
                user_agent,
                self.peer.name if self.peer is not None else "-",
                now - self.started,
                now - self.upstream_start if self.upstream_start else 0.0,
            )
        )

    def __repr__(self) -> str:
        return (
            f"Exchange({self.head!r} peer={self.peer.name if self.peer else None} "
            f"status={self.status} finished={self.finished})"
        )
