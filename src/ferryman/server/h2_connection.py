"""One HTTP/2 client connection (RFC 9113), chosen by ALPN `h2` on a TLS listener.

Owns the h2 state machine (the `h2` library, sans-I/O), the SETTINGS we offer, both
directions of flow control, the per-connection limits and GOAWAY. Every stream is an
`H2Stream` (h2_stream.py) that runs the same Exchange lifecycle an HTTP/1.1 request
runs, over the same pooled HTTP/1.1 upstream connections; see there for how the two
meet. Must not know about routing, upstreams or TLS.

Limits (nginx's, in its terms, and why):
  MAX_CONCURRENT_STREAMS  128 (http2_max_concurrent_streams); a stream over it gets
                          RST_STREAM(REFUSED_STREAM), so the client may retry it,
                          instead of h2's connection error
  MAX_HEADER_LIST_SIZE    ClientLimits.header_bytes (large_client_header_buffers), so
                          an HTTP/2 head is bounded like an HTTP/1.1 one; the field count
                          and request line limits are the RequestParser's own
  header block size       h2 buffers at most 64 CONTINUATION frames of at most
                          16 KiB (SETTINGS_MAX_FRAME_SIZE) before it refuses the
                          connection (the CVE-2024-27316 class: endless CONTINUATION)
  HPACK tables            4 KiB each way (SETTINGS_HEADER_TABLE_SIZE's default); ours
                          for the responses stays at 4 KiB when a client offers more
                          (http/hpack_codec.py)
  receive windows         64 KiB per stream (http2_body_preread_size); the connection
                          window is raised so that 128 full streams fit; a stream's
                          window is handed back only as its upstream takes the body
                          (backpressure: pause_body/resume_body)
  floods                  per second: client resets (CVE-2023-44487 rapid reset) and
                          refused streams over _RESET_LIMIT, or SETTINGS/PING/PRIORITY/
                          empty DATA/unknown frames over _CONTROL_LIMIT, end the
                          connection with GOAWAY(ENHANCE_YOUR_CALM); while the client
                          does not read what we send, we do not read what it sends
                          (so a PING flood cannot grow our output buffer)
  idle                    keepalive_timeout with no stream open; send_timeout while the
                          client reads nothing; the preface within client_header_timeout
  draining                GOAWAY(NO_ERROR) naming the last stream taken: those finish,
                          later ones are refused, and the connection closes when idle;
                          one that arrives while draining has its first streams served
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack.exceptions
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, Frame, GoAwayFrame
from mypy_extensions import mypyc_attr

from ferryman.http import hpack_codec
from ferryman.server.context import ListenerContext, WorkerContext
from ferryman.server.h2_stream import WRITE_HIGH, WRITE_LOW, H2Stream, Malformed, to_http1_head

__all__ = ["MAX_CONCURRENT_STREAMS", "H2Connection"]

_log: Final = logging.getLogger(__name__)

MAX_CONCURRENT_STREAMS: Final = 128
# RFC 9113 6.9.2 default: the stream window nginx keeps (http2_body_preread_size 64k).
_STREAM_WINDOW: Final = 65535
# Enough that the connection window never binds before the streams' own windows do.
_CONNECTION_WINDOW: Final = MAX_CONCURRENT_STREAMS * _STREAM_WINDOW
# Flood bounds per _FLOOD_WINDOW seconds (see the module docstring).
_FLOOD_WINDOW: Final = 1.0
_RESET_LIMIT: Final = 2 * MAX_CONCURRENT_STREAMS
_CONTROL_LIMIT: Final = 1000
# Streams h2 may hold beyond the concurrent limit before the closed ones are dropped
# (see _H2.open_inbound_streams).
_PRUNE_SLACK: Final = 32
_CONFIG: Final = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    # Validation is ours (h2_stream.to_http1_head): h2 would make a malformed request a
    # connection error, RFC 9113 8.1.1 makes it a stream error.
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    # What we send is built lower-case and without connection-specific fields.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)


# Subclasses of h2's classes: plain Python classes in the compiled build (a compiled
# class derives only from compiled ones).
@mypyc_attr(native_class=False)
class _CompressionError(h2.exceptions.ProtocolError):
    """RFC 9113 4.3: a header block that does not decode is a connection error of type
    COMPRESSION_ERROR (nginx's too). h2 would report it as PROTOCOL_ERROR: it wraps the
    codec's exception in a plain ProtocolError, but lets its own kind through, and
    GOAWAY carries the error's code."""

    error_code = ErrorCodes.COMPRESSION_ERROR


@mypyc_attr(native_class=False)
class _GoawayTolerantMachine(h2.connection.H2ConnectionStateMachine):
    """h2 closes its state machine on a received GOAWAY, so any frame the client sends
    after it (the SETTINGS ACK that crossed our SETTINGS, WINDOW_UPDATEs for the
    streams still finishing) becomes a connection error, although RFC 9113 6.8 lets
    those streams complete. A GOAWAY here leaves the state open; the connection itself
    refuses new streams once it has seen one (`goaway_sent`)."""

    def process_input(self, input_: h2.connection.ConnectionInputs) -> list[h2.events.Event]:
        if (
            input_ is h2.connection.ConnectionInputs.RECV_GOAWAY
            and self.state is not h2.connection.ConnectionState.CLOSED
        ):
            return []
        return super().process_input(input_)


@mypyc_attr(native_class=False)
class _H2(h2.connection.H2Connection):
    """h2's connection with its own stream-count check turned off: over the limit it
    raises a connection error before decoding the header block; we refuse the one
    stream instead (RFC 9113 5.1.2 allows either), counting our own streams. Its
    header compression is ours (http/hpack_codec.py, where the reason is)."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        self.encoder = hpack_codec.Encoder()  # type: ignore[assignment]
        self.decoder = _Decoder(self.DEFAULT_MAX_HEADER_LIST_SIZE)  # type: ignore[assignment]

    @property
    def open_inbound_streams(self) -> int:
        # h2's count walks every stream it holds, for each new stream, and drops the
        # closed ones as it goes: about 100 steps a stream at 100 concurrent ones. Here
        # the walk runs only once more streams are held than may be open at once (a few
        # steps a stream), and when the connection has none left (drop_closed).
        if len(self.streams) > MAX_CONCURRENT_STREAMS + _PRUNE_SLACK:
            self.drop_closed()
        return 0

    def drop_closed(self) -> None:
        super().open_inbound_streams  # noqa: B018 (for its pruning)

    def _receive_data_frame(self, frame: DataFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        """h2 makes DATA beyond (or short of) the content-length a connection error;
        RFC 9113 8.1.1 makes it a stream error: that stream is reset, the connection's
        window share handed back, and a StreamReset(remote_reset=False) reported."""
        try:
            return super()._receive_data_frame(frame)
        except h2.exceptions.InvalidBodyLengthError:
            self.reset_stream(frame.stream_id, ErrorCodes.PROTOCOL_ERROR)
            if frame.flow_controlled_length:
                self.increment_flow_control_window(frame.flow_controlled_length)
            event = h2.events.StreamReset(
                stream_id=frame.stream_id,
                error_code=ErrorCodes.PROTOCOL_ERROR,
                remote_reset=False,
            )
            return [], [event]


class _Decoder(hpack_codec.Decoder):
    """Our HPACK decoder as the connection's: its decoding errors as COMPRESSION_ERROR.
    (A compiled class: it derives from a compiled one, not from h2's.)"""

    def decode(self, data: bytes, raw: bool = True) -> list[tuple[bytes, bytes]]:
        try:
            return super().decode(data, raw)
        except hpack.exceptions.OversizedHeaderListError:
            raise  # a decompression bomb: h2 answers it with ENHANCE_YOUR_CALM
        except hpack.exceptions.HPACKDecodingError as exc:
            raise _CompressionError(f"Error decoding header block: {exc}") from exc


class H2Connection:
    """An asyncio protocol by duck typing, like ClientConnection."""

    __slots__ = (
        "closed",
        "control_count",
        "deadline",
        "flood_start",
        "flush_due",
        "goaway_sent",
        "good_host",
        "h2",
        "known_names",
        "listener",
        "remote_addr",
        "remote_port",
        "requests",
        "reset_count",
        "streams",
        "transport",
        "worker",
        "write_paused",
    )

    def __init__(self, listener: ListenerContext) -> None:
        self.listener = listener
        self.worker: WorkerContext = listener.worker
        self.transport: asyncio.Transport | None = None
        self.h2 = _H2(config=_CONFIG)
        self.h2.state_machine = _GoawayTolerantMachine()
        self.streams: dict[int, H2Stream] = {}
        self.closed = False
        self.write_paused = False
        self.flush_due = False
        self.goaway_sent = False
        self.deadline = 0.0
        self.requests = 0
        self.remote_addr = b"-"
        self.remote_port = b""
        self.flood_start = 0.0
        self.reset_count = 0
        self.control_count = 0
        # What this connection's streams were already checked for: the last Host value
        # (and its name) a head passed with (H2Stream.start), the valid field names
        # (to_http1_head).
        self.good_host: tuple[bytes, bytes] = (b"", b"")
        self.known_names: set[bytes] = set()

    # ---- the asyncio protocol interface ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self._admit():
            return
        peer = transport.get_extra_info("peername")
        if peer:
            self.remote_addr = str(peer[0]).encode()
            self.remote_port = str(peer[1]).encode()
        worker = self.worker
        worker.connections.add(self)
        worker.sweeper.add(self)
        self.deadline = worker.sweeper.now + worker.header_timeout
        self.flood_start = worker.sweeper.now
        conn = self.h2
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: worker.client_limits.header_bytes,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
            },
        )
        conn.initiate_connection()
        # Bounded before the client acknowledges our SETTINGS too (h2 applies it on ACK).
        conn.decoder.max_header_list_size = worker.client_limits.header_bytes
        conn.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
        self._flush()

    def _admit(self) -> bool:
        """worker_connections and max_connections, as ClientConnection. Not refused
        while draining: a connection whose TLS handshake ended after the listener closed
        (a reload) was accepted by this worker; aborting it would reset a client that did
        nothing wrong. Its first round of streams is served, then GOAWAY
        (`data_received`), as ClientConnection answers one request with Connection: close."""
        worker = self.worker
        transport = self.transport
        assert transport is not None
        if len(worker.connections) >= worker.max_connections:
            worker.rejected_connections += 1
            self.closed = True
            transport.abort()
            return False
        cap = worker.conn_cap
        if cap is not None and not cap.admit():
            self.closed = True
            transport.abort()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        worker = self.worker
        if self in worker.connections:
            worker.connections.remove(self)
            if worker.conn_cap is not None:
                worker.conn_cap.leave()
        worker.sweeper.discard(self)
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.abandon()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued the GOAWAY naming the error; it goes out before the close.
            _log.info("HTTP/2 protocol error from %s: %s", self.remote_addr.decode(), exc)
            self._flush()
            self.close()
            return
        taken = self.requests
        try:
            for event in events:
                self._dispatch(event)
                if self.closed:
                    return
        except Exception:
            # Our bug: one connection is lost, not the worker, and never left hanging.
            _log.exception("HTTP/2 connection from %s failed", self.remote_addr.decode())
            self.abort()
            return
        if self.worker.draining and self.requests != taken and not self.goaway_sent:
            # Draining: the streams just taken are answered; GOAWAY names the last of
            # them, so the client sends later requests to the new workers (RFC 9113 6.8).
            self.close_if_idle()
        self._flush()

    def eof_received(self) -> bool | None:
        return None  # the client closed: the transport closes, connection_lost cleans up

    def pause_writing(self) -> None:
        # The client reads nothing: no DATA is framed, and nothing more is read from it
        # (each frame it sends may make us send one: PING, SETTINGS, RST_STREAM).
        self.write_paused = True
        self.deadline = self.worker.sweeper.now + self.worker.send_timeout
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._set_idle_deadline()
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        for stream in list(self.streams.values()):
            self._send_stream(stream)
        self._flush()

    # ---- events from h2 ----

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._on_stream_ended(event.stream_id)
        elif isinstance(event, h2.events.WindowUpdated):
            self._on_window(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)
        elif isinstance(
            event,
            h2.events.RemoteSettingsChanged
            | h2.events.PingReceived
            | h2.events.PriorityUpdated
            | h2.events.UnknownFrameReceived,
        ):
            self._count_control()
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self._on_window(0)  # INITIAL_WINDOW_SIZE may have grown every window

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        assert sid is not None
        ended = event.stream_ended is not None
        if self.goaway_sent or len(self.streams) >= MAX_CONCURRENT_STREAMS:
            # RFC 9113 5.1.2 / 6.8: refused, never processed, safe for the client to retry.
            self._count_reset()
            self._reset(sid, ErrorCodes.REFUSED_STREAM)
            return
        try:
            request = to_http1_head(event.headers or [], ended, self.known_names)
        except Malformed as exc:
            _log.info("malformed HTTP/2 request from %s: %s", self.remote_addr.decode(), exc)
            self._reset(sid, ErrorCodes.PROTOCOL_ERROR)
            return
        stream = H2Stream(self, sid)
        self.streams[sid] = stream
        self.deadline = 0.0
        self.requests += 1
        if request.method == b"CONNECT":
            # No tunnels over HTTP/2 (RFC 8441's extended CONNECT is not offered).
            stream.request_ended = ended
            stream.respond_error(405, "Method Not Allowed")
            return
        stream.start(request, ended)

    def _on_data(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id
        assert sid is not None
        data = event.data or b""
        size = event.flow_controlled_length or 0
        stream = self.streams.get(sid)
        if stream is None:
            # A stream we reset or finished: its bytes still count against the
            # connection window, which is handed back at once.
            if size:
                self._acknowledge(sid, size)
            return
        if not data and event.stream_ended is None:
            self._count_control()  # an empty DATA frame moves nothing forward
        if not stream.on_data(data):
            _log.info("HTTP/2 request body longer than its content-length")
            self._reset_stream(stream, ErrorCodes.PROTOCOL_ERROR)
            self._acknowledge(sid, size)
            return
        if stream.body_paused:
            stream.unacked += size
        elif size:
            self._acknowledge(sid, size)

    def _on_stream_ended(self, sid: int | None) -> None:
        stream = self.streams.get(sid or 0)
        if stream is None:
            return
        if not stream.on_end():
            _log.info("HTTP/2 request body shorter than its content-length")
            self._reset_stream(stream, ErrorCodes.PROTOCOL_ERROR)
            return
        if stream.end_sent:
            self._finish(stream)

    def _on_window(self, sid: int | None) -> None:
        if not sid:
            for stream in list(self.streams.values()):
                self._send_stream(stream)
            return
        one = self.streams.get(sid)
        if one is not None:
            self._send_stream(one)

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        if event.remote_reset:
            self._count_reset()
        stream = self.streams.pop(event.stream_id or 0, None)
        if stream is not None:
            stream.abandon()
            self._after_stream()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """The client will open no more streams: a graceful GOAWAY lets the open ones
        finish (see _GoawayTolerantMachine), any other ends the connection now."""
        self.goaway_sent = True
        if event.error_code == ErrorCodes.NO_ERROR and self.streams:
            return
        self._flush()
        self.close()

    # ---- flood accounting ----

    def _count_reset(self) -> None:
        self._roll_window()
        self.reset_count += 1
        if self.reset_count > _RESET_LIMIT:
            self._calm_down("streams reset or refused")

    def _count_control(self) -> None:
        self._roll_window()
        self.control_count += 1
        if self.control_count > _CONTROL_LIMIT:
            self._calm_down("control frames")

    def _roll_window(self) -> None:
        now = self.worker.sweeper.now
        if now - self.flood_start >= _FLOOD_WINDOW:
            self.flood_start = now
            self.reset_count = self.control_count = 0

    def _calm_down(self, what: str) -> None:
        if self.closed:
            return
        _log.warning(
            "HTTP/2 flood from %s (%s per %.0fs over the limit): GOAWAY and close",
            self.remote_addr.decode(),
            what,
            _FLOOD_WINDOW,
        )
        self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        self._flush()
        self.close()

    # ---- called by streams ----

    def send_response(self, stream: H2Stream) -> None:
        """Whatever the stream's exchange has written so far: HEADERS once, then DATA
        as the windows allow, END_STREAM when all of it is out."""
        if self.closed or stream.closed:
            return
        try:
            head = stream.pending_head
            if head is not None:
                stream.pending_head = None
                whole = stream.complete and stream.done and not stream.out
                self.h2.send_headers(stream.stream_id, head, end_stream=whole)
                if whole:
                    stream.end_sent = True
            self._send_stream(stream)
        except h2.exceptions.ProtocolError as exc:
            # A state h2 refuses to send in (our bug or a peer's race): this connection
            # is lost, never the exchange that called us.
            _log.error("HTTP/2 send to %s failed: %s", self.remote_addr.decode(), exc)
            self.abort()
            return
        self._flush_soon()

    def send_informational(self, stream: H2Stream, status: int) -> None:
        self.h2.send_headers(stream.stream_id, [(b":status", b"%d" % status)])
        self._flush()

    def acknowledge(self, stream: H2Stream) -> None:
        """The stream's upstream takes its body again: hand the window back."""
        size, stream.unacked = stream.unacked, 0
        if size and not stream.closed and not self.closed:
            self._acknowledge(stream.stream_id, size)
            self._flush()

    def reset_stream(self, stream: H2Stream, internal: bool) -> None:
        code = ErrorCodes.INTERNAL_ERROR if internal else ErrorCodes.CANCEL
        self._reset_stream(stream, code)
        self._flush()

    # ---- sending ----

    def _send_stream(self, stream: H2Stream) -> None:
        if stream.closed or stream.end_sent or stream.pending_head is not None:
            return
        conn = self.h2
        sid = stream.stream_id
        out = stream.out
        if not self.write_paused:
            frame_max = conn.max_outbound_frame_size
            while out:
                window = conn.local_flow_control_window(sid)
                if window <= 0:
                    break
                piece = out[0]
                size = min(window, frame_max, len(piece))
                if size < len(piece):
                    out[0] = piece[size:]
                    piece = piece[:size]
                else:
                    out.pop(0)
                stream.out_size -= size
                last = not out and stream.complete and stream.done
                conn.send_data(sid, piece, end_stream=last)
                if last:
                    stream.end_sent = True
        if not out and stream.complete and stream.done and not stream.end_sent:
            conn.end_stream(sid)
            stream.end_sent = True
        self._note_backlog(stream)
        if stream.end_sent:
            if not stream.request_ended:
                # RFC 9113 8.1: the answer is whole; the rest of the body is not wanted.
                self._reset(sid, ErrorCodes.NO_ERROR)
            self._finish(stream)

    def _note_backlog(self, stream: H2Stream) -> None:
        """Stop reading the stream's upstream while the client's window holds its
        bytes back (Exchange.client_paused), start again once they have gone."""
        ex = stream.exchange
        if not stream.is_write_paused and stream.out_size > WRITE_HIGH:
            stream.is_write_paused = True
            if ex is not None and not ex.finished:
                ex.client_paused(True)
        elif stream.is_write_paused and stream.out_size <= WRITE_LOW:
            stream.is_write_paused = False
            if ex is not None:
                ex.client_paused(False)

    def _finish(self, stream: H2Stream) -> None:
        stream.release()
        if self.streams.pop(stream.stream_id, None) is not None:
            self._after_stream()

    def _after_stream(self) -> None:
        if self.streams:
            return
        self.h2.drop_closed()  # an idle connection holds no finished streams
        if self.goaway_sent or self.worker.draining:
            self._flush()
            self.close()
        else:
            self._set_idle_deadline()

    def _reset_stream(self, stream: H2Stream, code: ErrorCodes) -> None:
        if not stream.closed:
            self._reset(stream.stream_id, code)
        self.streams.pop(stream.stream_id, None)
        stream.abandon()
        self._after_stream()

    def _reset(self, sid: int, code: ErrorCodes) -> None:
        # A stream already closed both ways has nothing to reset.
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.h2.reset_stream(sid, code)

    def _acknowledge(self, sid: int, size: int) -> None:
        try:
            self.h2.acknowledge_received_data(size, sid)
        except h2.exceptions.StreamClosedError:
            # The stream is gone; the connection's share still goes back.
            self.h2.increment_flow_control_window(size)

    def _flush_soon(self) -> None:
        """Responses finish one upstream read at a time: their frames wait for the end of
        the loop's turn and leave in one TLS write (one record, one system call) instead
        of one write per stream. Anything written later in this turn (_flush) takes them
        along, in h2's order."""
        if not self.flush_due:
            self.flush_due = True
            self.worker.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self.flush_due = False
        if not self.closed:
            self._flush()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # ---- lifetime ----

    def _set_idle_deadline(self) -> None:
        if self.write_paused:
            return
        self.deadline = (
            self.worker.sweeper.now + self.worker.keepalive_timeout if not self.streams else 0.0
        )

    def on_timeout(self) -> None:
        if self.write_paused:
            _log.info("client %s timed out reading HTTP/2 responses", self.remote_addr.decode())
            self.abort()
        elif not self.streams:
            self.close_if_idle()

    def close_if_idle(self) -> None:
        """Draining (and idle timeout): GOAWAY(NO_ERROR) naming the last stream taken;
        those still open finish, and the connection closes when none is left."""
        if self.closed:
            return
        if not self.goaway_sent:
            self.goaway_sent = True
            self._flush()
            # Written beside h2, not through close_connection(): that would move h2 to
            # CLOSED, where the streams still open could send nothing more.
            frame = GoAwayFrame(0)
            frame.last_stream_id = self.h2.highest_inbound_stream_id
            frame.error_code = ErrorCodes.NO_ERROR
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(frame.serialize())
        if not self.streams:
            self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self._flush()  # frames still waiting for _flush_now
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def __repr__(self) -> str:
        return (
            f"H2Connection({self.remote_addr.decode()}:{self.remote_port.decode()}"
            f" streams={len(self.streams)} requests={self.requests}"
            f" goaway={self.goaway_sent})"
        )
