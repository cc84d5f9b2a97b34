"""The admin API and dashboard: JSON over HTTP on a listener of its own.

Owns the admin process's HTTP server (a small asyncio streams server: this is not the
hot path), bearer-token authentication, and the endpoints: configuration in effect,
upstream state, drain / undrain / weight, cache purge, reload, recent requests, and the
Server-Sent Event streams the dashboard and `/api/trace` read. Other modules add routes
through `Routes` (workers.py `_admin_extra_routes`; /work/notes/admin_api.md).

It runs in a process of its own, forked by the master (workers.py), and knows the
workers only through the shared tables the master made before forking (`AdminTables`):
it never reaches into a worker, and workers never wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from ferryman.config.dump import dump_native
from ferryman.config.schema import AdminSpec, Config
from ferryman.errors import ConfigError, ProtocolError
from ferryman.health.shared import SharedHealth
from ferryman.http.fields import parse_content_length, trim_ows
from ferryman.observability.dashboard import DASHBOARD_HTML
from ferryman.observability.peer_stats import PeerStats
from ferryman.observability.recent import SharedRing, parse_record, read_recent
from ferryman.upstream.overrides import MAX_WEIGHT, SharedOverrides

__all__ = [
    "AdminRequest",
    "AdminResponse",
    "AdminTables",
    "Handler",
    "Routes",
    "bind_admin",
    "load_token",
    "run_admin",
    "serve_admin",
]

_log = logging.getLogger(__name__)

Body = bytes | AsyncIterator[bytes]
AdminResponse = tuple[int, list[tuple[str, str]], Body]


@dataclass(frozen=True, slots=True)
class AdminRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


Handler = Callable[[AdminRequest], AdminResponse | Awaitable[AdminResponse]]
Routes = dict[tuple[str, str], Handler]

# Bounds on what a client of the admin listener may send.
_MAX_HEAD: Final = 16 * 1024
_MAX_BODY: Final = 64 * 1024
_READ_TIMEOUT: Final = 10.0
# Recent requests: per-worker ring size and the default/maximum the API returns.
RECENT_CAPACITY: Final = 256
_RECENT_DEFAULT: Final = 50
# Server-Sent Events: how often snapshots go out, and how often the trace rings are read.
_SNAPSHOT_EVERY: Final = 1.0
_TRACE_POLL: Final = 0.25
_REASONS: Final = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


@dataclass(slots=True)
class AdminTables:
    """The shared memory one generation's workers publish into and the admin reads.
    Made by the master before it forks (`make_tables`)."""

    health: SharedHealth
    overrides: SharedOverrides
    stats: PeerStats
    recent: SharedRing  # one ring per worker slot: finished requests
    traces: SharedRing  # one ring per worker slot: routing traces
    purges: SharedRing  # one ring, written by the admin process: cache purge orders
    token: str | None = None  # the admin token (token_file read), for the trace header


def make_tables(
    config: Config, health: SharedHealth, overrides: SharedOverrides, token: str | None
) -> AdminTables:
    peers = sum(len(u.servers) for u in config.upstreams)
    for up in config.upstreams:
        for p in up.servers:
            overrides.register(up.name, p.address)
    return AdminTables(
        health=health,
        overrides=overrides,
        stats=PeerStats(config.workers, peers),
        recent=SharedRing(config.workers, RECENT_CAPACITY, 320),
        traces=SharedRing(config.workers, 64, 2048),
        purges=SharedRing(1, 64, 512),
        token=token,
    )


def load_token(spec: AdminSpec, where: str) -> str | None:
    """The bearer token: `token`, or the first line of `token_file` (read by the master,
    so a reload re-reads it). An empty file is refused: it would mean no token."""
    if spec.token_file is None:
        return spec.token
    try:
        with open(spec.token_file, "rb") as f:
            first = f.readline(4096)
    except OSError as exc:
        raise ConfigError(f"{where}.token_file", f"cannot read: {exc.strerror}") from None
    token = trim_ows(first.rstrip(b"\r\n"))
    if not token:
        raise ConfigError(f"{where}.token_file", "the file holds no token")
    return token.decode("utf-8", "replace")


def bind_admin(spec: AdminSpec) -> socket.socket:
    """The admin listening socket. No SO_REUSEPORT: a second process binding it (or a
    server listener on the same address) must fail, not share it silently."""
    infos = socket.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"admin.listen {spec.address}", f"cannot bind: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# ---------------------------------------------------------------- the API


class AdminApi:
    """The endpoints, over one generation's configuration and tables."""

    def __init__(
        self,
        config: Config,
        tables: AdminTables,
        token: str | None,
        master_pid: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.tables = tables
        self.token = token
        self.master_pid = master_pid
        self.clock = clock
        self.routes: Routes = {
            ("GET", "/"): self.dashboard,
            ("GET", "/api/config"): self.get_config,
            ("GET", "/api/upstreams"): self.get_upstreams,
            ("POST", "/api/cache/purge"): self.purge,
            ("POST", "/api/reload"): self.reload,
            ("GET", "/api/requests/recent"): self.recent,
            ("GET", "/api/events"): self.events,
            ("GET", "/api/trace"): self.trace,
            ("GET", "/api/cluster"): self.get_cluster,
        }
        # Set by workers.py when the config has `cluster`: the instance's view of Redis
        # (observability/metrics.py cluster_status: up, instances, fallbacks).
        self.cluster: Callable[[], dict[str, Any] | None] | None = None
        # The dashboard page holds no data (it asks for the token itself).
        self.open_paths = {"/"}

    # ---- dispatch and authentication ----

    async def handle(self, req: AdminRequest) -> AdminResponse:
        if req.path not in self.open_paths and not self.authorized(req):
            return _json(401, {"error": "a valid `Authorization: Bearer <token>` is required"})
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            if req.path.startswith("/api/upstreams/"):
                return self.peer_action(req)
            if any(path == req.path for _, path in self.routes):
                return _json(405, {"error": f"{req.method} is not allowed on {req.path}"})
            return _json(404, {"error": f"no such endpoint: {req.path}"})
        result = handler(req)
        if not isinstance(result, tuple):
            result = await result
        return result

    def authorized(self, req: AdminRequest) -> bool:
        if self.token is None:
            return True
        scheme, _, given = req.headers.get("authorization", "").partition(" ")
        # Constant time: the comparison must not tell how much of a guess was right.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.encode("utf-8", "replace"), self.token.encode("utf-8", "replace")
        )

    # ---- endpoints ----

    def dashboard(self, req: AdminRequest) -> AdminResponse:
        return 200, [("Content-Type", "text/html; charset=utf-8")], DASHBOARD_HTML.encode()

    def get_config(self, req: AdminRequest) -> AdminResponse:
        config = self.config
        if config.admin is not None and config.admin.token is not None:
            # The token is a secret even from those who may read the rest.
            config = dataclasses.replace(
                config, admin=dataclasses.replace(config.admin, token="<redacted>")
            )
        body = dump_native(config).encode()
        return 200, [("Content-Type", "application/yaml; charset=utf-8")], body

    def get_upstreams(self, req: AdminRequest) -> AdminResponse:
        return _json(200, {"upstreams": self.snapshot()})

    def get_cluster(self, req: AdminRequest) -> AdminResponse:
        return _json(200, {"cluster": self.cluster_state()})

    def cluster_state(self) -> dict[str, Any] | None:
        """None without a `cluster` section."""
        return self.cluster() if self.cluster is not None else None

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        slot = 0
        tables = self.tables
        for up in self.config.upstreams:
            peers = []
            for spec in up.servers:
                oslot = tables.overrides.slot(up.name, spec.address)
                override = tables.overrides.get(oslot) if oslot >= 0 else None
                totals = tables.stats.totals(slot)
                down = spec.down or tables.health.probe_down(slot)
                down = down or tables.health.down_until(slot) > now
                drained = override is not None and override.drained
                state = (
                    "down" if down else "draining" if drained else "backup" if spec.backup else "up"
                )
                weight = override.weight if override is not None and override.weight else 0
                peers.append(
                    {
                        "address": spec.address,
                        "weight": weight or spec.weight,
                        "configured_weight": spec.weight,
                        "state": state,
                        "draining": drained,
                        "backup": spec.backup,
                        "fails": totals.fails,
                        "in_flight": totals.active,
                        "latency_ms": round(totals.latency * 1000, 3) if totals.latency else None,
                        "requests": totals.requests,
                    }
                )
                slot += 1
            out.append({"name": up.name, "balance": up.balance, "peers": peers})
        return out

    def peer_action(self, req: AdminRequest) -> AdminResponse:
        # /api/upstreams/{name}/peers/{addr}/{drain|undrain|weight}
        parts = req.path.split("/")
        if len(parts) != 7 or parts[4] != "peers" or parts[6] not in _ACTIONS:
            return _json(404, {"error": f"no such endpoint: {req.path}"})
        if req.method != "POST":
            return _json(405, {"error": f"{req.method} is not allowed on {req.path}"})
        name, addr, action = unquote(parts[3]), unquote(parts[5]), parts[6]
        found = self._find_peer(name, addr)
        if found is None:
            return _json(404, {"error": f"no peer {addr!r} in upstream {name!r}"})
        address, oslot = found
        overrides = self.tables.overrides
        if action == "weight":
            weight = _weight_from(req.body)
            if weight is None:
                return _json(400, {"error": f'body must be {{"weight": 1..{MAX_WEIGHT}}}'})
            overrides.set_weight(oslot, weight)
        else:
            overrides.set_drained(oslot, action == "drain")
        _log.warning("admin: %s %s in upstream %s", action, address, name)
        o = overrides.get(oslot)
        return _json(
            200,
            {"upstream": name, "address": address, "draining": o.drained, "weight": o.weight},
        )

    def _find_peer(self, name: str, addr: str) -> tuple[str, int] | None:
        """(configured address, override slot) of `addr` (as configured, or `host:port`
        with the host as resolved is not known here, so configured only) in `name`."""
        for up in self.config.upstreams:
            if up.name != name:
                continue
            for spec in up.servers:
                if spec.address == addr:
                    oslot = self.tables.overrides.slot(up.name, spec.address)
                    return (spec.address, oslot) if oslot >= 0 else None
        return None

    def purge(self, req: AdminRequest) -> AdminResponse:
        data = _json_body(req.body)
        zone = data.get("zone") if data is not None else None
        spec = next((z for z in self.config.cache_zones if z.name == zone), None)
        if data is None or spec is None:
            return _json(400, {"error": 'body must be {"zone": NAME, "key" | "prefix": TEXT}'})
        key, prefix = data.get("key"), data.get("prefix")
        if (key is None) == (prefix is None) or not isinstance(key or prefix, str):
            return _json(400, {"error": 'give exactly one of "key" and "prefix" (a string)'})
        kind, value = ("key", key) if key is not None else ("prefix", prefix)
        assert isinstance(value, str)
        removed = 0
        if spec.path is not None:
            # The disk tier is shared: purge it here, at once, and count what went.
            from ferryman.cache.tiered import open_store

            store = open_store(spec)
            removed = store.remove(value) if kind == "key" else store.remove_prefix(value)
        # Every worker drops its memory copies on its next tick (app.py reads this ring).
        order = json.dumps({"zone": spec.name, kind: value}).encode()
        self.tables.purges.push(0, order)
        return _json(202, {"zone": spec.name, kind: value, "removed_from_disk": removed})

    def reload(self, req: AdminRequest) -> AdminResponse:
        # After this answer is on its way: the reload replaces this very process.
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, _signal, self.master_pid, signal.SIGHUP)
        return _json(202, {"reload": "requested"})

    def recent(self, req: AdminRequest) -> AdminResponse:
        limit = _count(req.query.get("n"), _RECENT_DEFAULT, RECENT_CAPACITY)
        if limit is None:
            return _json(400, {"error": f"n must be a number from 1 to {RECENT_CAPACITY}"})
        return _json(200, {"requests": read_recent(self.tables.recent, limit)})

    def events(self, req: AdminRequest) -> AdminResponse:
        return 200, _SSE_HEADERS, self._event_stream()

    async def _event_stream(self) -> AsyncIterator[bytes]:
        """Every second: `snapshot` (upstreams) and `requests` (those since the last)."""
        seen = [self.tables.recent.count(r) for r in range(self.tables.recent.rings)]
        yield b"retry: 1000\n\n"
        while True:
            snap = {"time": time.time(), "upstreams": self.snapshot()}
            snap["cluster"] = self.cluster_state()
            yield _sse("snapshot", snap)
            fresh = []
            for r in range(self.tables.recent.rings):
                for seq, data in self.tables.recent.read(r, after=seen[r]):
                    seen[r] = seq
                    fresh.append(data)
            rows = [row for row in map(parse_record, fresh) if row is not None]
            if rows:
                rows.sort(key=lambda row: row["time"])
                yield _sse("requests", rows)
            await asyncio.sleep(_SNAPSHOT_EVERY)

    def trace(self, req: AdminRequest) -> AdminResponse:
        return 200, _SSE_HEADERS, self._trace_stream()

    async def _trace_stream(self) -> AsyncIterator[bytes]:
        ring = self.tables.traces
        seen = [ring.count(r) for r in range(ring.rings)]
        yield b"retry: 1000\n\n"
        idle = 0.0
        while True:
            sent = False
            for r in range(ring.rings):
                for seq, data in ring.read(r, after=seen[r]):
                    seen[r] = seq
                    when, target, line = [*data.decode("latin-1").split("\t", 2), "", ""][:3]
                    yield _sse("trace", {"time": when, "target": target, "trace": line})
                    sent = True
            idle = 0.0 if sent else idle + _TRACE_POLL
            if idle >= 15.0:
                idle = 0.0
                yield b": keep-alive\n\n"  # comments keep proxies from closing the stream
            await asyncio.sleep(_TRACE_POLL)


_ACTIONS: Final = ("drain", "undrain", "weight")
_SSE_HEADERS: Final = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-store")]


def _signal(pid: int, signo: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signo)


def _json(status: int, data: object) -> AdminResponse:
    body = json.dumps(data, separators=(",", ":")).encode()
    return status, [("Content-Type", "application/json")], body


def _sse(event: str, data: object) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), json.dumps(data).encode())


def _json_body(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _weight_from(body: bytes) -> int | None:
    data = _json_body(body)
    weight = data.get("weight") if data is not None else None
    # JSON gives an int (bool is an int in Python: refuse it explicitly).
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
        return None
    return weight


def _count(text: str | None, default: int, high: int) -> int | None:
    if text is None:
        return default
    raw = text.encode()
    if not raw.isdigit() or len(raw) > 6:  # ASCII digits only, as http/fields.py does
        return None
    value = int(raw)
    return value if 1 <= value <= high else None


# ---------------------------------------------------------------- the HTTP server


async def serve_admin(
    api: AdminApi, sock: socket.socket, extra: Routes | None = None
) -> asyncio.Server:
    """Start answering on `sock` (already bound and listening)."""
    if extra:
        api.routes.update(extra)
    return await asyncio.start_server(
        lambda r, w: _connection(api, r, w), sock=sock, limit=_MAX_HEAD
    )


async def _connection(api: AdminApi, reader: asyncio.StreamReader, writer: Any) -> None:
    """One request per connection (Connection: close): the admin API is not busy
    enough for keep-alive to matter, and it keeps this server trivially correct."""
    try:
        req = await asyncio.wait_for(_read_request(reader), _READ_TIMEOUT)
        if isinstance(req, int):
            status, headers, body = _json(req, {"error": _REASONS.get(req, "error")})
        else:
            try:
                status, headers, body = await api.handle(req)
            except Exception:
                _log.exception("admin handler failed for %s %s", req.method, req.path)
                status, headers, body = _json(500, {"error": "internal error"})
        await _write_response(writer, status, headers, body)
    except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> AdminRequest | int:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        return 431
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[1].startswith(b"/") or not parts[2].startswith(b"HTTP/1."):
        return 400
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != trim_ows(name):
            return 400
        headers[name.decode("latin-1").lower()] = trim_ows(value).decode("latin-1")
    body = b""
    if "content-length" in headers:
        try:
            length = parse_content_length(headers["content-length"].encode("latin-1"))
        except ProtocolError:
            return 400
        if length > _MAX_BODY:
            return 413
        body = await reader.readexactly(length)
    elif "transfer-encoding" in headers:
        return 400  # no client of this API needs chunked requests
    target = parts[1].decode("latin-1")
    path, _, query = target.partition("?")
    return AdminRequest(
        method=parts[0].decode("latin-1"),
        path=path,
        query=dict(parse_qsl(query)),
        headers=headers,
        body=body,
    )


async def _write_response(
    writer: Any, status: int, headers: list[tuple[str, str]], body: Body
) -> None:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    head.extend(f"{n}: {v}" for n, v in headers)
    head.append("Connection: close")
    if isinstance(body, bytes):
        head.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        return
    # A stream (SSE): no length, the end of the connection ends it.
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    try:
        async for chunk in body:
            writer.write(chunk)
            await writer.drain()
    finally:
        await body.aclose()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the process


def run_admin(
    api: AdminApi, sock: socket.socket, extra: Routes | None, loop: asyncio.AbstractEventLoop
) -> int:
    """The admin process's main: serve until SIGTERM/INT/QUIT (workers.py forks it)."""
    return loop.run_until_complete(_admin_main(api, sock, extra, loop))


async def _admin_main(
    api: AdminApi, sock: socket.socket, extra: Routes | None, loop: asyncio.AbstractEventLoop
) -> int:
    stop: asyncio.Future[None] = loop.create_future()

    def set_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(sig, set_stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the master handles reloads
    server = await serve_admin(api, sock, extra)
    await stop
    server.close()
    # Open event streams never end on their own; the process exit closes them.
    return 0
