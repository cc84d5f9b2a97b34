"""What one worker's connections share: built by app.py, passed in, never global."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from ferryman.config.schema import ClientTimeouts

if TYPE_CHECKING:
    from ferryman.observability.access_log import AccessLog
    from ferryman.proxy.route import Route
    from ferryman.routing.table import RouteTable
    from ferryman.server.connection import ClientConnection
    from ferryman.server.sweeper import Sweeper

__all__ = ["ListenerContext", "WorkerContext"]


class WorkerContext:
    __slots__ = (
        "_date_second",
        "access_log",
        "connections",
        "date_line",
        "draining",
        "loop",
        "maps",
        "max_connections",
        "rejected_connections",
        "sweeper",
        "timeouts",
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
        self.sweeper = sweeper
        self.access_log = access_log
        self.timeouts = timeouts
        self.max_connections = max_connections
        self.connections: set[ClientConnection] = set()
        self.rejected_connections = 0
        self.draining = False
        # `map` variables by name (proxy.maps evaluators bound to their templates);
        # filled by app.py when the configuration has any.
        self.maps: dict[str, Any] = {}
        # The Date field every response gets, formatted once a second.
        self._date_second = -1
        self.date_line = b""
        self.refresh_date()

    def refresh_date(self) -> None:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self.date_line = b"Date: %s\r\n" % formatdate(now, usegmt=True).encode()

    def __repr__(self) -> str:
        return f"WorkerContext(connections={len(self.connections)}/{self.max_connections})"


class ListenerContext:
    __slots__ = ("port_bytes", "scheme", "server_name", "table", "worker")

    def __init__(
        self,
        worker: WorkerContext,
        table: RouteTable[Route],
        port: int,
        server_name: str,
        scheme: str = "http",
    ) -> None:
        self.worker = worker
        self.table = table
        self.port_bytes = str(port).encode()
        self.server_name = server_name.encode()
        self.scheme = scheme.encode()
