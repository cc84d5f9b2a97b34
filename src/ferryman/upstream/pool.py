"""Kept-alive connections to the peers of one upstream group, per worker.

Policy (how many idle, for how long, how many requests per connection) is the
UpstreamSpec's; the network is the injected `connect` coroutine, so tests can swap it.
Most recently used first: a warm connection is least likely to have been closed by the
peer's own idle timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from ferryman.config.schema import UpstreamSpec
from ferryman.errors import UpstreamConnectError
from ferryman.upstream.connection import UpstreamConnection

if TYPE_CHECKING:
    from ferryman.server.sweeper import Sweeper
    from ferryman.upstream.peer import PeerState

__all__ = ["ConnectFn", "ConnectionPool", "tcp_connect"]

ConnectFn = Callable[["PeerState", float], Awaitable[UpstreamConnection]]


def tcp_connect(loop: asyncio.AbstractEventLoop) -> ConnectFn:
    async def connect(peer: PeerState, timeout: float) -> UpstreamConnection:
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(peer),  # type: ignore[arg-type,type-var]
                    peer.connect_host,
                    peer.spec.port,
                )
        # nginx's words (ngx_event_connect_peer, ngx_http_upstream): log alerts written
        # for nginx look for them.
        except TimeoutError:
            raise UpstreamConnectError(
                "upstream timed out (110: Connection timed out) while connecting to upstream"
            ) from None
        except OSError as exc:
            why = f"{exc.errno}: {exc.strerror}" if exc.errno else str(exc)
            raise UpstreamConnectError(
                f"connect() failed ({why}) while connecting to upstream"
            ) from None
        # No TCP_NODELAY here: uvloop and asyncio both set it on every TCP transport.
        return conn

    return connect


class ConnectionPool:
    __slots__ = (
        "_connect",
        "_idle",
        "_owners",
        "_sweeper",
        "_variants",
        "keepalive",
        "keepalive_requests",
        "keepalive_surplus_timeout",
        "keepalive_timeout",
    )

    def __init__(
        self,
        spec: UpstreamSpec,
        npeers: int,
        sweeper: Sweeper,
        connect: ConnectFn,
        peers: Sequence[PeerState] = (),
    ) -> None:
        self.keepalive = spec.keepalive
        self.keepalive_timeout = spec.keepalive_timeout
        self.keepalive_requests = spec.keepalive_requests
        self.keepalive_surplus_timeout = spec.keepalive_surplus_timeout
        self._sweeper = sweeper
        self._connect = connect
        self._idle: list[list[UpstreamConnection]] = [[] for _ in range(npeers)]
        # Which peer each idle list belongs to: peers can be replaced (resolve), and a
        # connection to a peer that is gone must not land in another's list.
        self._owners: list[PeerState | None] = list(peers) or [None] * npeers
        # Pools of the same peers reached another way (TLS, tls/client.py): their own
        # idle lists, told of peer changes with this one.
        self._variants: list[ConnectionPool] = []

    def variant(self, connect: ConnectFn) -> ConnectionPool:
        """A pool for the same peers whose connections `connect` makes (e.g. TLS): a
        plain connection must never be handed to a route that asked for TLS."""
        spec = UpstreamSpec(
            name="",
            servers=(),
            keepalive=self.keepalive,
            keepalive_timeout=self.keepalive_timeout,
            keepalive_requests=self.keepalive_requests,
            keepalive_surplus_timeout=self.keepalive_surplus_timeout,
        )
        owners = [p for p in self._owners if p is not None]
        pool = ConnectionPool(spec, len(self._idle), self._sweeper, connect, owners)
        self._variants.append(pool)
        return pool

    def acquire(self, peer: PeerState) -> UpstreamConnection | None:
        idle = self._idle[peer.index]
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.deadline = 0.0
                return conn
        return None

    async def connect(self, peer: PeerState, timeout: float) -> UpstreamConnection:
        conn = await self._connect(peer, timeout)
        conn.on_close = self._forget
        self._sweeper.add(conn)
        return conn

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        """Take back a connection whose exchange is over."""
        conn.detach()
        if conn.closed:
            return
        if not self._owns(conn):
            conn.close()
            return
        idle = self._idle[conn.peer.index]
        if not reusable or conn.requests >= self.keepalive_requests:
            conn.close()
            return
        if len(idle) < self.keepalive:
            conn.deadline = self._sweeper.now + self.keepalive_timeout
        elif self.keepalive_surplus_timeout > 0.0:
            # Surplus (see UpstreamSpec.keepalive_surplus_timeout): the most recently
            # used are taken first, so under steady load the surplus is reused and
            # after a burst it times out on the sweeper's tick.
            conn.deadline = self._sweeper.now + self.keepalive_surplus_timeout
        else:
            conn.close()
            return
        idle.append(conn)

    def close_all(self) -> None:
        for variant in self._variants:
            variant.close_all()
        for idle in self._idle:
            for conn in idle:
                conn.close()
            idle.clear()

    def replace_peers(self, peers: Sequence[PeerState]) -> None:
        """The group's peers changed: keep the idle connections of peers that stay,
        close those of peers that left."""
        old = {id(p): idle for p, idle in zip(self._owners, self._idle, strict=True) if p}
        self._idle = [old.pop(id(p), []) for p in peers]
        self._owners = list(peers)
        for idle in old.values():
            for conn in idle:
                conn.close()
        for variant in self._variants:
            variant.replace_peers(peers)

    def _owns(self, conn: UpstreamConnection) -> bool:
        i = conn.peer.index
        if i >= len(self._idle):
            return False
        owner = self._owners[i]
        return owner is None or owner is conn.peer

    def _forget(self, conn: UpstreamConnection) -> None:
        self._sweeper.discard(conn)
        if not self._owns(conn):
            return
        idle = self._idle[conn.peer.index]
        if conn in idle:
            idle.remove(conn)

    def __repr__(self) -> str:
        return f"ConnectionPool(idle={[len(i) for i in self._idle]} keepalive={self.keepalive})"
