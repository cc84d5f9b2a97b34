"""One HTTP/1.1 connection to a peer: a transport plus a response parser.

It knows nothing of clients: while an exchange is attached, parser events go straight
to that exchange (the parser's sink is switched on attach, which saves a call per
event on the hot path), and transport events are forwarded to it. Detached, the
connection sits in its pool; any byte or close while idle retires it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from ferryman.errors import UpstreamProtocolError
from ferryman.http.messages import ResponseHead
from ferryman.http.response_parser import ResponseParser, ResponseSink
from ferryman.write_batch import HeldWrites, WriteBatch

if TYPE_CHECKING:
    # The one kind of user (typed, the compiled build calls it natively instead of by
    # method name; imported for type checking only: the exchange imports this layer).
    from ferryman.proxy.exchange import Exchange
    from ferryman.upstream.peer import PeerState

__all__ = ["UpstreamConnection"]


class _Idle(ResponseSink):
    """Sink used while no exchange is attached: a response nobody asked for."""

    def on_response_head(self, head: ResponseHead) -> None:
        raise UpstreamProtocolError("unsolicited response")

    def on_response_body(self, data: bytes) -> None:
        raise UpstreamProtocolError("unsolicited response body")

    def on_response_end(self, keep_alive: bool) -> None:
        raise UpstreamProtocolError("unsolicited response")


_IDLE: Final = _Idle()


class UpstreamConnection:
    """An asyncio protocol by duck typing: not derived from asyncio.Protocol so that the
    optional mypyc build can compile it into a native class."""

    __slots__ = (
        "batch",
        "closed",
        "deadline",
        "held",
        "on_close",
        "parser",
        "peer",
        "requests",
        "transport",
        "user",
    )
    # Made once connected (connection_made): the event loop builds this protocol before
    # it connects, and a parser made for a connect that failed would be left in a
    # reference cycle (see ResponseParser.close), one per failed attempt.
    parser: ResponseParser

    def __init__(self, peer: PeerState) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.user: Exchange | None = None
        self.requests = 0
        self.deadline = 0.0
        self.closed = False
        # Set by the pool: how to forget this connection once it is gone.
        self.on_close: object = None
        # This pass's small writes and the worker's batch that hands them over
        # (write_batch.py): made with the transport, and on the first attach.
        self.held: HeldWrites | None = None
        self.batch: WriteBatch | None = None

    # ---- attach / detach ----

    def attach(self, user: Exchange, head_request: bool) -> None:
        self.user = user
        if self.batch is None:
            self.batch = user.worker.write_batch
        self.requests += 1
        self.parser.sink = user
        self.parser.expect(head_request)

    def detach(self) -> None:
        self.user = None
        self.parser.sink = _IDLE

    def write(self, data: bytes) -> None:
        # Only an attached connection is written to (by its exchange): the batch is set.
        held, batch = self.held, self.batch
        assert held is not None and batch is not None
        batch.write(held, data)

    def flush_held(self) -> None:
        """Hand this pass's held writes to the transport now: before anything that must
        follow them on the wire (a FIN)."""
        held = self.held
        if held is not None:
            held.flush()

    def half_close(self) -> None:
        """A FIN after what was written (a tunnel's client half-closed); a transport
        that cannot half-close (TLS) is closed."""
        transport = self.transport
        if self.closed or transport is None:
            return
        if transport.can_write_eof():
            self.flush_held()
            transport.write_eof()
        else:
            self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.flush_held()
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            # Dropped, not sent: an aborted request must not reach the peer whole.
            if self.held is not None:
                self.held.drop()
            self.closed = True
            self.transport.abort()

    # ---- the asyncio protocol interface ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.held = HeldWrites(self.transport)
        self.parser = ResponseParser(_IDLE)

    def data_received(self, data: bytes) -> None:
        user = self.user
        if user is None:
            # Bytes on an idle connection: the framing is in doubt, retire it.
            self.abort()
            return
        if user.tunnel:
            user.tunnel_to_client(data)
            return
        try:
            tail = self.parser.feed(data)
        except UpstreamProtocolError as exc:
            self.abort()
            user.upstream_failed(exc)
            return
        if tail is not None:
            user.upstream_upgraded(tail)
            return
        user.flush_response()

    def eof_received(self) -> bool | None:
        # The transport closes itself when this returns: held bytes go to it first.
        self.flush_held()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        on_close = self.on_close
        if callable(on_close):
            on_close(self)
        user = self.user
        if user is not None:
            self.detach()
            user.upstream_lost(exc)
        self.parser.close()

    def pause_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_paused(False)

    # ---- Sweeper ----

    def on_timeout(self) -> None:
        user = self.user
        if user is None:
            self.close()  # idle too long in the pool
        else:
            user.upstream_timeout()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("busy" if self.user else "idle")
        return f"UpstreamConnection({self.peer.name} {state} requests={self.requests})"
