"""ConnectionPool's keep-or-close policy on release: `keepalive` idle connections per
peer keep the long `keepalive_timeout`; the surplus waits `keepalive_surplus_timeout`
(0: closed at once, nginx's behaviour). No sockets: the transport is a stand-in that
records close(), the sweeper's clock is set by hand (it is never started)."""

from __future__ import annotations

from typing import Any

from ferryman.config.schema import PeerSpec, UpstreamSpec
from ferryman.server.sweeper import Sweeper
from ferryman.upstream.connection import UpstreamConnection
from ferryman.upstream.peer import PeerState
from ferryman.upstream.pool import ConnectionPool


class Loop:
    """What a Sweeper reads of its loop when built."""

    def time(self) -> float:
        return 100.0


class Transport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


async def no_connect(peer: PeerState, timeout: float) -> Any:
    raise AssertionError("never called")


def make(keepalive: int, surplus: float, requests: int = 1000) -> tuple[ConnectionPool, PeerState]:
    spec = UpstreamSpec(
        name="app",
        servers=(PeerSpec("127.0.0.1", 9),),
        keepalive=keepalive,
        keepalive_timeout=60.0,
        keepalive_requests=requests,
        keepalive_surplus_timeout=surplus,
    )
    peer = PeerState(spec.servers[0], 0)
    sweeper = Sweeper(Loop())  # type: ignore[arg-type]
    pool = ConnectionPool(spec, 1, sweeper, no_connect, [peer])
    return pool, peer


def conns(peer: PeerState, n: int) -> list[UpstreamConnection]:
    out = []
    for _ in range(n):
        c = UpstreamConnection(peer)
        c.connection_made(Transport())  # type: ignore[arg-type]
        out.append(c)
    return out


def test_within_keepalive_kept_for_keepalive_timeout() -> None:
    pool, peer = make(keepalive=2, surplus=1.0)
    a, b = conns(peer, 2)
    pool.release(a, True)
    pool.release(b, True)
    assert not a.closed and not b.closed
    assert a.deadline == b.deadline == 160.0


def test_surplus_kept_briefly_then_reused_most_recent_first() -> None:
    pool, peer = make(keepalive=2, surplus=1.0)
    a, b, c = conns(peer, 3)
    for conn in (a, b, c):
        pool.release(conn, True)
    assert not c.closed
    assert c.deadline == 101.0  # the surplus: one second, not a minute
    # The next request takes the most recently used: the surplus one, deadline cleared.
    assert pool.acquire(peer) is c and c.deadline == 0.0
    # Its timeout (the sweeper's tick) closes an idle surplus connection.
    pool.release(c, True)
    c.on_timeout()
    assert c.closed
    assert pool.acquire(peer) is b and pool.acquire(peer) is a


def test_surplus_zero_closes_at_once_like_nginx() -> None:
    pool, peer = make(keepalive=1, surplus=0.0)
    a, b = conns(peer, 2)
    pool.release(a, True)
    pool.release(b, True)
    assert not a.closed and b.closed


def test_not_reusable_or_worn_out_closed_whatever_the_room() -> None:
    pool, peer = make(keepalive=8, surplus=1.0, requests=2)
    a, b = conns(peer, 2)
    pool.release(a, False)
    assert a.closed
    b.requests = 2
    pool.release(b, True)
    assert b.closed
    assert pool.acquire(peer) is None
