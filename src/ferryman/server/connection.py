"""One client connection: bytes in, request events to exchanges, responses out in order.

Owns what is per connection: the request parser, pipelining (requests queue up and are
answered in order; reading pauses while one waits, so a pipelining client cannot make
us buffer without bound), keep-alive, client-side timeouts, and read pausing for
backpressure. What happens to each request is the Exchange's business.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

from ferryman.errors import ProtocolError
from ferryman.http.messages import Framing, RequestHead
from ferryman.http.request_parser import RequestParser
from ferryman.http.serialize import error_response
from ferryman.proxy.exchange import Exchange
from ferryman.server.context import ListenerContext, WorkerContext

__all__ = ["ClientConnection"]

_log: Final = logging.getLogger(__name__)

# Why reading from the client is paused; reading resumes only when no reason is left.
_PAUSE_PIPELINE: Final = 1
_PAUSE_BODY: Final = 2

# Phases decide which timeout applies.
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
_WAIT: Final = 3
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientConnection:
    """An asyncio protocol by duck typing (see UpstreamConnection for why)."""

    __slots__ = (
        "_paused",
        "_write_paused",
        "closed",
        "current",
        "deadline",
        "listener",
        "parser",
        "pending",
        "phase",
        "receiving",
        "remote_addr",
        "remote_port",
        "requests",
        "transport",
        "tunnel",
        "upgrade_tail",
        "worker",
    )

    def __init__(self, listener: ListenerContext) -> None:
        self.listener = listener
        self.worker: WorkerContext = listener.worker
        self.transport: asyncio.Transport | None = None
        self.parser = RequestParser(self)
        self.current: Exchange | None = None
        self.receiving: Exchange | None = None
        self.pending: deque[Exchange] = deque()
        self.tunnel: Exchange | None = None
        self.upgrade_tail = b""
        self.deadline = 0.0
        self.phase = _IDLE
        self.requests = 0
        self.closed = False
        self._paused = 0
        self._write_paused = False
        self.remote_addr = b"-"
        self.remote_port = b""

    # ---- the asyncio protocol interface ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        worker = self.worker
        if len(worker.connections) >= worker.max_connections or worker.draining:
            # nginx logs "worker_connections are not enough" and drops the connection.
            worker.rejected_connections += 1
            if worker.rejected_connections % 1000 == 1:
                _log.warning("%d worker_connections are not enough", worker.max_connections)
            self.closed = True
            self.transport.abort()
            return
        peer = transport.get_extra_info("peername")
        if peer:
            self.remote_addr = str(peer[0]).encode()
            self.remote_port = str(peer[1]).encode()
        worker.connections.add(self)
        worker.sweeper.add(self)
        self.phase = _HEAD
        self.deadline = worker.sweeper.now + worker.timeouts.header

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        worker = self.worker
        worker.connections.discard(self)
        worker.sweeper.discard(self)
        for ex in (self.current, self.receiving, *self.pending):
            if ex is not None:
                ex.client_gone()
        if self.tunnel is not None:
            self.tunnel.finish_tunnel()
        self.current = self.receiving = self.tunnel = None
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.tunnel_to_upstream(data)
            return
        if self.phase == _IDLE:
            self.phase = _HEAD
            self.deadline = self.worker.sweeper.now + self.worker.timeouts.header
        try:
            tail = self.parser.feed(data)
        except ProtocolError as exc:
            self.reject(exc)
            return
        if tail is not None:
            # An Upgrade request stopped the parser; keep what followed for the tunnel.
            self.upgrade_tail = tail
            self._pause(_PAUSE_PIPELINE)

    def eof_received(self) -> bool | None:
        # A client that half-closes after its request still gets the answer (RFC 9112
        # 9.6 allows it); the connection closes once the current exchange is done.
        if self.current is not None or self.pending:
            self.worker.loop.call_soon(self._close_after_current)
            return True
        return None

    def pause_writing(self) -> None:
        self._write_paused = True
        self.deadline = self.worker.sweeper.now + self.worker.timeouts.send
        if self.current is not None:
            self.current.client_paused(True)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.phase == _WAIT:
            self.deadline = 0.0
        if self.current is not None:
            self.current.client_paused(False)

    # ---- RequestSink (events from the parser) ----

    def on_request_head(self, head: RequestHead) -> None:
        ex = Exchange(self, head)
        self.receiving = ex
        if head.framing is not Framing.NONE:
            self.phase = _BODY
            self.deadline = self.worker.sweeper.now + self.worker.timeouts.body
        else:
            self.phase = _WAIT
            self.deadline = 0.0
        if self.current is None:
            self.current = ex
            if self.parser.expect_continue and head.framing is not Framing.NONE:
                self.write(_CONTINUE)
            ex.start()
        else:
            self.pending.append(ex)
            self._pause(_PAUSE_PIPELINE)

    def on_request_body(self, data: bytes) -> None:
        self.deadline = self.worker.sweeper.now + self.worker.timeouts.body
        ex = self.receiving
        if ex is not None:
            ex.on_request_body(data)

    def on_request_end(self) -> None:
        ex = self.receiving
        self.receiving = None
        if self.phase == _BODY:
            self.phase = _WAIT
            self.deadline = 0.0
        if ex is not None:
            ex.on_request_end()

    # ---- called by exchanges ----

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None:
        if ex is not self.current:
            return
        self.current = None
        self.requests += 1
        if not keep_alive or self.closed or self.worker.draining:
            self.close()
            return
        if self.pending:
            nxt = self.pending.popleft()
            self.current = nxt
            if not self.pending:
                self._resume(_PAUSE_PIPELINE)
            nxt.start()
            return
        if self.receiving is None:
            self.phase = _IDLE
            self.deadline = self.worker.sweeper.now + self.worker.timeouts.keepalive

    def start_tunnel(self, ex: Exchange) -> None:
        self.tunnel = ex
        self.phase = _WAIT
        self.deadline = 0.0
        tail, self.upgrade_tail = self.upgrade_tail, b""
        self._paused = 0
        if self.transport is not None:
            self.transport.resume_reading()
        if tail:
            ex.tunnel_to_upstream(tail)

    def pause_body(self) -> None:
        self._pause(_PAUSE_BODY)

    def resume_body(self) -> None:
        self._resume(_PAUSE_BODY)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def close_if_idle(self) -> None:
        """Draining: an idle keep-alive connection can go now; a busy one after its
        current response (exchange_done sees `draining`)."""
        if self.current is None and self.receiving is None and self.tunnel is None:
            self.close()

    # ---- internals ----

    def reject(self, exc: ProtocolError) -> None:
        _log.info("bad request from %s: %s", self.remote_addr.decode(), exc.reason)
        ex = self.receiving or self.current
        answered = False
        if ex is not None and ex is self.current and not ex.finished:
            # Framing broke mid-body of a request already in flight: the upstream must not
            # see a complete message (its connection is aborted), and the client gets an
            # answer only if no response to it has started yet.
            answered = ex.response is not None
            ex.client_gone()
        if not answered:
            self.write(error_response(exc.status, exc.reason, extra=self.worker.date_line))
        self.close()

    def on_timeout(self) -> None:
        phase = self.phase
        if self._write_paused:
            _log.info("client %s timed out reading the response", self.remote_addr.decode())
            self.transport.abort() if self.transport else None
        elif phase == _IDLE:
            self.close()
        elif phase in (_HEAD, _BODY) and self.current is None:
            # nginx answers 408 to a client that stalls mid-request.
            self.write(error_response(408, "Request Timeout", extra=self.worker.date_line))
            self.close()
        else:
            if self.current is not None:
                self.current.client_gone()
            self.close()

    def _close_after_current(self) -> None:
        if self.current is None and not self.pending:
            self.close()

    def _pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def __repr__(self) -> str:
        return (
            f"ClientConnection({self.remote_addr.decode()}:{self.remote_port.decode()} "
            f"phase={self.phase} requests={self.requests} pending={len(self.pending)})"
        )
