"""What one worker's connections share: built by app.py, passed in, never global."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import TYPE_CHECKING, Any

from ferryman.config.schema import ClientLimits, ClientTimeouts
from ferryman.file_views import MappedFiles
from ferryman.http.dates import http_date
from ferryman.write_batch import WriteBatch

if TYPE_CHECKING:
    from ferryman.filters.real_ip import RealIp
    from ferryman.observability.access_log import AccessLog
    from ferryman.proxy.forward import ForwardProxy
    from ferryman.proxy.route import Route
    from ferryman.routing.table import RouteTable, VirtualServer
    from ferryman.server.conn_cap import ConnectionCap
    from ferryman.server.connection import ClientConnection
    from ferryman.server.h2_connection import H2Connection
    from ferryman.server.sweeper import Sweeper

__all__ = ["ListenerContext", "WorkerContext"]

# Upstreams made for addresses named by proxy_pass URLs, per worker.
_MAX_DYNAMIC = 256


class WorkerContext:
    __slots__ = (
        "_date_second",
        "access_log",
        "body_timeout",
        "client_limits",
        "conn_cap",
        "connections",
        "connections_accepted",
        "date_line",
        "draining",
        "dynamic",
        "header_timeout",
        "keepalive_line",
        "keepalive_requests",
        "keepalive_timeout",
        "loop",
        "make_upstream",
        "mapped_files",
        "maps",
        "max_connections",
        "metrics",
        "recent",
        "rejected_connections",
        "send_timeout",
        "sweeper",
        "trace",
        "upstreams",
        "write_batch",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sweeper: Sweeper,
        access_log: AccessLog,
        timeouts: ClientTimeouts,
        max_connections: int,
    ) -> None:
        self.loop = loop
        # Small writes to clients and upstreams, held to the end of the loop's pass
        # (write_batch.py).
        self.write_batch = WriteBatch(loop)
        # Files mapped for large static and cached bodies, kept for the next request
        # (file_views.py); app.py lets the idle ones go on the sweeper's tick.
        self.mapped_files = MappedFiles()
        self.sweeper = sweeper
        self.access_log = access_log
        # The client timeouts as native floats: connections read them on every request,
        # and ClientTimeouts is an interpreted dataclass (an attribute lookup by name each).
        self.header_timeout = timeouts.header
        self.body_timeout = timeouts.body
        self.keepalive_timeout = timeouts.keepalive
        self.send_timeout = timeouts.send
        self.max_connections = max_connections
        self.connections: set[ClientConnection | H2Connection] = set()
        self.rejected_connections = 0
        # Connections accepted so far: each one's number, nginx's `*N` in error-log lines.
        self.connections_accepted = 0
        # Config.max_connections across all workers (None: off); set by app.py.
        self.conn_cap: ConnectionCap | None = None
        # Config.client_limits (request line, head size, field count); set by app.py.
        self.client_limits = ClientLimits()
        # Config.keepalive_requests: the answer to a connection's Nth request closes it.
        self.keepalive_requests = 1000
        # Config.keepalive_header (nginx keepalive_timeout's second parameter): the
        # `Keep-Alive: timeout=N` line kept-alive answers carry; b"" for none.
        self.keepalive_line = b""
        self.draining = False
        # Prometheus counters of this worker (observability/metrics.py WorkerMetrics);
        # None (tests, `check`): nothing counted.
        self.metrics: Any = None
        # Admin API (observability/): where finished requests are published for the
        # dashboard, and the routing trace; None (the default) costs one check each.
        self.recent: Any = None
        self.trace: Any = None
        # `map` variables by name (proxy.maps evaluators bound to their templates);
        # filled by app.py when the configuration has any.
        self.maps: dict[str, Any] = {}
        # For proxy_pass with variables: the named upstreams (group, pool), upstreams made
        # on demand for addresses, and how to make one (set by app.py).
        self.upstreams: dict[str, tuple[Any, Any]] = {}
        self.dynamic: dict[str, tuple[Any, Any]] = {}
        self.make_upstream: Any = None
        # The Date field every response gets, formatted once a second.
        self._date_second = -1
        self.date_line = b""
        self.refresh_date()

    def upstream_for(
        self, authority: bytes, host: bytes, port: int | None
    ) -> tuple[Any, Any] | None:
        """The (group, pool) a proxy_pass URL names: an upstream by name, else an IP
        address (nginx, without a resolver, resolves no names at run time)."""
        found = self.upstreams.get(authority.decode("latin-1"))
        if found is None and port is None:
            found = self.upstreams.get(host.decode("latin-1"))
        if found is not None:
            return found
        text = host.decode("latin-1")
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return None
        key = f"{text}:{port or 80}"
        made = self.dynamic.get(key)
        if made is None:
            if len(self.dynamic) >= _MAX_DYNAMIC or self.make_upstream is None:
                return None  # bounded: a URL built from request data must not grow us
            made = self.dynamic[key] = self.make_upstream(text, port or 80)
        return made

    def refresh_date(self) -> None:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self.date_line = b"Date: %s\r\n" % http_date(now).encode()

    def expire_mappings(self) -> None:
        self.mapped_files.expire(self.sweeper.now)

    def __repr__(self) -> str:
        return f"WorkerContext(connections={len(self.connections)}/{self.max_connections})"


class ListenerContext:
    __slots__ = (
        "forward",
        "port_bytes",
        "proxy_protocol",
        "real_ip",
        "scheme",
        "server_name",
        "table",
        "worker",
    )

    def __init__(
        self,
        worker: WorkerContext,
        table: RouteTable[Route],
        port: int,
        server_name: str,
        scheme: str = "http",
        proxy_protocol: bool = False,
        real_ip: dict[VirtualServer[Route], RealIp] | None = None,
    ) -> None:
        self.worker = worker
        self.table = table
        self.port_bytes = str(port).encode()
        self.server_name = server_name.encode()
        self.scheme = scheme.encode()
        # Connections start with a PROXY protocol header (ListenSpec.proxy_protocol).
        self.proxy_protocol = proxy_protocol
        # The real-client-address policy of the servers that have one (None: none has).
        self.real_ip = real_ip or None
        # Forward-proxy mode (proxy/forward.py ForwardProxy), set by app.py for the
        # address of a server with `forward`; None: a reverse-proxy listener.
        self.forward: ForwardProxy | None = None

    def __repr__(self) -> str:
        return (
            f"ListenerContext(port={self.port_bytes.decode()} scheme={self.scheme.decode()}"
            f" proxy_protocol={self.proxy_protocol})"
        )
