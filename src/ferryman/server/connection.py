"""One client connection: bytes in, request events to exchanges, responses out in order.

Owns what is per connection: the request parser, pipelining (requests queue up and are
answered in order; reading pauses while one waits, so a pipelining client cannot make
us buffer without bound), keep-alive, client-side timeouts, and read pausing for
backpressure. What happens to each request is the Exchange's business.

Defences against slow and greedy clients (nginx's, in its terms):
  client_header_timeout  the whole head (and, on a proxy_protocol listener, the PROXY
                         header before it) must arrive within it from its first byte;
                         later reads do not extend it (slowloris)
  client_body_timeout    the longest silence between two pieces of a body (slow POST)
  send_timeout           the longest a response may wait for the client to read on
  slow readers           above the transport's high-water mark the upstream is no
                         longer read (Exchange.client_paused), and no next pipelined
                         request starts, so an unread response costs one buffer
  worker_connections     connections per worker; Config.max_connections across all
                         workers (server/conn_cap.py); over either, closed at once
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

from ferryman.errors import ProtocolError
from ferryman.file_views import VIEW_TRANSPORTS
from ferryman.http.messages import Framing, RequestHead
from ferryman.http.request_parser import RequestParser, RequestSink
from ferryman.http.serialize import error_response
from ferryman.proxy.exchange import Exchange
from ferryman.server.context import ListenerContext, WorkerContext
from ferryman.server.proxy_protocol import ProxyHeaderParser, ProxyProtocolError
from ferryman.write_batch import HeldWrites

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


class ClientConnection(RequestSink):
    """An asyncio protocol by duck typing (see UpstreamConnection for why)."""

    __slots__ = (
        "_paused",
        "_write_paused",
        "closed",
        "current",
        "deadline",
        "half_closed",
        "heads",
        "held",
        "listener",
        "number",
        "parser",
        "pending",
        "phase",
        "proxy_addr",
        "proxy_parser",
        "proxy_port",
        "receiving",
        "rejected",
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
        # This pass's small writes (write_batch.py); made with the transport.
        self.held: HeldWrites | None = None
        # The client half-closed after its requests: close once they are answered.
        self.half_closed = False
        self.parser = RequestParser(self, listener.worker.client_limits)
        # A refused request behind valid pipelined ones: its error is written once they
        # have been answered (responses go in request order), then the connection closes.
        self.rejected: ProtocolError | None = None
        self.current: Exchange | None = None
        self.receiving: Exchange | None = None
        self.pending: deque[Exchange] = deque()
        self.tunnel: Exchange | None = None
        self.upgrade_tail = b""
        self.deadline = 0.0
        self.phase = _IDLE
        self.requests = 0
        self.heads = 0
        self.closed = False
        self._paused = 0
        self._write_paused = False
        self.remote_addr = b"-"
        self.remote_port = b""
        # nginx's connection number (`*N` in error-log lines; $connection).
        self.worker.connections_accepted += 1
        self.number = self.worker.connections_accepted
        # nginx $proxy_protocol_addr / $proxy_protocol_port ("" without a header, or
        # with one that carried no addresses); the parser until the header is read.
        self.proxy_addr = b""
        self.proxy_port = b""
        self.proxy_parser: ProxyHeaderParser | None = None

    # ---- the asyncio protocol interface ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.held = HeldWrites(self.transport)
        worker = self.worker
        # Not refused while draining: a connection accepted just before the listener
        # closed (its connection_made still queued) is served once, with
        # Connection: close; aborting it would reset a client during a reload.
        if len(worker.connections) >= worker.max_connections:
            # nginx logs "worker_connections are not enough" and drops the connection.
            worker.rejected_connections += 1
            if worker.rejected_connections % 1000 == 1:
                _log.warning("%d worker_connections are not enough", worker.max_connections)
            self.closed = True
            self.transport.abort()
            return
        cap = worker.conn_cap
        if cap is not None and not cap.admit():
            if cap.rejected % 1000 == 1:
                _log.warning(
                    "max_connections (%d across all workers) reached: new connections are"
                    " closed at once (%d so far in this worker)",
                    cap.limit,
                    cap.rejected,
                )
            self.closed = True
            self.transport.abort()
            return
        peer = transport.get_extra_info("peername")
        if peer:
            self.remote_addr = str(peer[0]).encode()
            self.remote_port = str(peer[1]).encode()
        if self.listener.proxy_protocol:
            self.proxy_parser = ProxyHeaderParser()
        worker.connections.add(self)
        worker.sweeper.add(self)
        self.phase = _HEAD
        self.deadline = worker.sweeper.now + worker.header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        worker = self.worker
        if self in worker.connections:
            worker.connections.remove(self)
            if worker.conn_cap is not None:
                worker.conn_cap.leave()
        worker.sweeper.discard(self)
        for ex in (self.current, self.receiving, *self.pending):
            if ex is not None:
                ex.client_gone()
        if self.tunnel is not None:
            self.tunnel.finish_tunnel()
        self.current = self.receiving = self.tunnel = None
        self.pending.clear()
        self.parser.close()

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.tunnel_to_upstream(data)
            return
        if self.phase == _IDLE:
            self.phase = _HEAD
            self.deadline = self.worker.sweeper.now + self.worker.header_timeout
        if self.proxy_parser is not None:
            data = self._read_proxy_header(data)
            if not data:
                return
        if self.rejected is not None:
            return  # framing is lost: nothing after a refused request is parsed
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
        if self.tunnel is not None:
            # Half-close in a tunnel: passed on; the tunnel ends when the upstream closes.
            self.tunnel.tunnel_client_eof()
            return True
        if self.receiving is not None or self.parser.busy:
            # Half-closed in the middle of a request: it can never be complete, so it is
            # refused now rather than when a timeout fires (requests before it are still
            # answered, see reject).
            self.reject(ProtocolError("client closed the connection mid-request"))
            return True
        # A client that half-closes after its request still gets the answer (RFC 9112
        # 9.6 allows it); the connection closes once the requests it sent are answered
        # (exchange_done), however many passes of the loop that takes.
        if self.current is not None or self.pending:
            self.half_closed = True
            return True
        # The transport closes itself when this returns: what this pass still holds for
        # the client (the last answer) goes to it first.
        self.flush_held()
        return None

    def pause_writing(self) -> None:
        self._write_paused = True
        self.deadline = self.worker.sweeper.now + self.worker.send_timeout
        if self.current is not None:
            self.current.client_paused(True)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.phase == _WAIT:
            self.deadline = 0.0
        if self.current is not None:
            self.current.client_paused(False)
        elif self.pending and not self.closed:
            # A slow reader's next request waited for its previous answers to drain.
            self._start_next()

    # ---- RequestSink (events from the parser) ----

    def on_request_head(self, head: RequestHead) -> None:
        if self.closed:
            # An answer with `Connection: close` went out while the rest of the read was
            # still being parsed: RFC 9112 9.6, nothing after it is processed.
            return
        self.heads += 1
        if self.heads >= self.worker.keepalive_requests:
            # nginx keepalive_requests: this answer says close, as nginx's does.
            head.keep_alive = False
        ex = Exchange(self, head)
        ex.h1 = self
        self.receiving = ex
        if head.framing is not Framing.NONE:
            self.phase = _BODY
            self.deadline = self.worker.sweeper.now + self.worker.body_timeout
        else:
            self.phase = _WAIT
            self.deadline = 0.0
        if self.current is None and not self._write_paused:
            self.current = ex
            if self.parser.expect_continue and head.framing is not Framing.NONE:
                self.write(_CONTINUE)
            ex.start()
        else:
            # In order after the one in flight; or, while the client is not reading
            # what it was already sent, not before it does (else every pipelined
            # request would add one more unread response to our buffer).
            self.pending.append(ex)
            self._pause(_PAUSE_PIPELINE)

    def on_request_body(self, data: bytes) -> None:
        self.deadline = self.worker.sweeper.now + self.worker.body_timeout
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

    @property
    def is_write_paused(self) -> bool:
        """The client is not reading: its transport's buffer is over the high-water mark."""
        return self._write_paused

    def write(self, data: bytes) -> None:
        held = self.held
        if not self.closed and held is not None:
            self.worker.write_batch.write(held, data)

    def flush_held(self) -> None:
        """Hand this pass's held writes to the transport now: before anything that must
        follow them on the wire."""
        held = self.held
        if held is not None:
            held.flush()

    @property
    def takes_mapped_views(self) -> bool:
        """A view of a file mapping may be written here (write_mapped): the transport
        passes it to the kernel without reading it (file_views.py says why)."""
        return not self.closed and type(self.transport) in VIEW_TRANSPORTS

    def write_mapped(self, view: memoryview) -> None:
        """Write a view of a file mapping; only where takes_mapped_views is true."""
        if not self.closed and self.transport is not None:
            self.flush_held()
            self.transport.write(view)

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None:
        if ex is not self.current:
            return
        self.current = None
        self.requests += 1
        if (
            not keep_alive
            or self.closed
            or self.worker.draining
            or (self.half_closed and not self.pending and self.rejected is None)
        ):
            self.close()
            return
        if (ex.head.upgrade is not None or ex.head.method == b"CONNECT") and not ex.tunnel:
            # llhttp stops at CONNECT as at an Upgrade: a refused one (405, 403, 407)
            # leaves the connection HTTP (RFC 9110 9.3.6).
            self._after_refused_upgrade()
            return
        if self.rejected is not None and not self.pending:
            self._refuse(self.rejected)
            return
        if self.pending:
            if not self._write_paused:
                self._start_next()
            return
        if self.receiving is None:
            self.phase = _IDLE
            self.deadline = self.worker.sweeper.now + self.worker.keepalive_timeout

    def _after_refused_upgrade(self) -> None:
        """The answer to an Upgrade request was not a 101: the connection stays HTTP,
        and the bytes after that request are the next request, through every check.
        llhttp stops for good at an Upgrade head, hence a fresh parser."""
        tail, self.upgrade_tail = self.upgrade_tail, b""
        self.parser = RequestParser(self, self.worker.client_limits)
        self.receiving = None
        self.phase = _IDLE
        self.deadline = self.worker.sweeper.now + self.worker.keepalive_timeout
        self._resume(_PAUSE_PIPELINE)
        if tail:
            self.data_received(tail)

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
            self.flush_held()
            self.closed = True
            self.transport.close()

    def close_if_idle(self) -> None:
        """Draining: an idle keep-alive connection can go now; a busy one after its
        current response (exchange_done sees `draining`)."""
        if self.current is None and self.receiving is None and self.tunnel is None:
            self.close()

    # ---- internals ----

    def _start_next(self) -> None:
        nxt = self.pending.popleft()
        self.current = nxt
        if not self.pending:
            self._resume(_PAUSE_PIPELINE)
        nxt.start()

    def _read_proxy_header(self, data: bytes) -> bytes:
        """Feed the PROXY header parser; what followed the header is returned (b"" while
        the header is incomplete or after a bad one, which closes the connection)."""
        parser = self.proxy_parser
        assert parser is not None
        try:
            found = parser.feed(data)
        except ProxyProtocolError as exc:
            # nginx: "broken header" and the connection is closed without an answer.
            _log.warning("broken PROXY protocol header from %s: %s", self._peer(), exc.reason)
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            return b""
        if found is None:
            return b""
        header, rest = found
        self.proxy_parser = None
        if header.source is not None:
            self.proxy_addr = header.source[0].encode()
            self.proxy_port = b"%d" % header.source[1]
        return rest

    def _peer(self) -> str:
        return f"{self.remote_addr.decode()}:{self.remote_port.decode()}"

    def reject(self, exc: ProtocolError) -> None:
        if self.rejected is not None or self.closed:
            return
        _log.info("bad request from %s: %s", self.remote_addr.decode(), exc.reason)
        bad, self.receiving = self.receiving, None
        if bad is not None and bad is not self.current:
            # Broke mid-body while still queued behind another request: it never starts.
            if bad in self.pending:
                self.pending.remove(bad)
            bad.client_gone()
        elif bad is not None and not bad.finished:
            # Framing broke mid-body of a request already in flight: the upstream must not
            # see a complete message (its connection is aborted), and the client gets an
            # answer only if no response to it has started yet.
            answered = bad.response is not None
            bad.client_gone()
            if answered:
                self.close()
                return
        current = self.current
        if current is not None and current is not bad and not current.finished:
            # The requests before the bad one were valid and are answered first.
            self.rejected = exc
            self._pause(_PAUSE_PIPELINE)
            return
        self._refuse(exc)

    def _refuse(self, exc: ProtocolError) -> None:
        self.write(error_response(exc.status, exc.reason, extra=self.worker.date_line))
        self.close()

    def on_timeout(self) -> None:
        phase = self.phase
        if self.proxy_parser is not None:
            _log.warning(
                "no PROXY protocol header from %s within client_header_timeout", self._peer()
            )
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        elif self._write_paused:
            _log.info("client %s timed out reading the response", self.remote_addr.decode())
            self.transport.abort() if self.transport else None
        elif phase == _IDLE:
            self.close()
        elif phase in (_HEAD, _BODY) and self.current is None:
            # nginx answers 408 to a client that stalls mid-request.
            self.write(error_response(408, "Request Timeout", extra=self.worker.date_line))
            self.close()
        elif (
            phase == _BODY
            and self.current is not None
            and self.receiving is self.current
            and self.current.response is None
        ):
            # A body stalled while being streamed upstream: the upstream request is
            # abandoned (never completed), and the client still gets nginx's 408.
            ex = self.current
            ex.status = 408
            ex.client_gone()
            self.write(error_response(408, "Request Timeout", extra=self.worker.date_line))
            self.close()
        else:
            if self.current is not None:
                self.current.client_gone()
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
