"""The TLS layer of a listening socket: a protocol on the raw TCP transport that runs
OpenSSL through memory BIOs and gives the HTTP connection (any asyncio protocol) a
transport that reads and writes plaintext.

Why not `loop.create_server(ssl=...)`: the event loop's TLS layer swallows handshake
failures silently and cannot answer a plain HTTP request sent to a TLS port, which
nginx answers with 400 "The plain HTTP request was sent to HTTPS port". Owning the
layer lets us answer that, log every failed handshake with its reason, bound the
handshake by the client header timeout, and later choose HTTP/2 by ALPN in one place.

Owns: the first-byte check, the handshake, close_notify, read pausing and write
back-pressure across the layer. Must not know HTTP beyond that one 400 answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final

from ferryman.http.serialize import error_response
from ferryman.tls.contexts import ListenerTls

__all__ = ["PLAIN_HTTP_REASON", "TlsServerProtocol"]

_log: Final = logging.getLogger(__name__)

PLAIN_HTTP_REASON: Final = "The plain HTTP request was sent to HTTPS port"
# A TLS record starts with its content type; a ClientHello comes in a handshake record.
_HANDSHAKE_RECORD: Final = 0x16
_READ_SIZE: Final = 256 * 1024


class _TlsTransport:
    """The plaintext transport the inner protocol sees (duck-typed asyncio.Transport)."""

    __slots__ = ("_layer",)

    def __init__(self, layer: TlsServerProtocol) -> None:
        self._layer = layer

    def write(self, data: bytes) -> None:
        self._layer.write_plain(data)

    def writelines(self, lines: list[bytes]) -> None:
        self._layer.write_plain(b"".join(lines))

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close of its own; close_notify ends both ways

    def close(self) -> None:
        self._layer.close()

    def abort(self) -> None:
        self._layer.abort()

    def is_closing(self) -> bool:
        return self._layer.closing

    def pause_reading(self) -> None:
        self._layer.pause_reading()

    def resume_reading(self) -> None:
        self._layer.resume_reading()

    def is_reading(self) -> bool:
        return not self._layer.inner_paused

    def get_write_buffer_size(self) -> int:
        raw = self._layer.raw
        return raw.get_write_buffer_size() if raw is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._layer.raw is not None:
            self._layer.raw.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        layer = self._layer
        sslobj = layer.sslobj
        if name == "ssl_object":
            return sslobj
        if name == "sslcontext":
            return sslobj.context if sslobj is not None else default
        if name == "peercert":
            return sslobj.getpeercert() if sslobj is not None else default
        if name == "cipher":
            return sslobj.cipher() if sslobj is not None else default
        raw = layer.raw
        return raw.get_extra_info(name, default) if raw is not None else default


class TlsServerProtocol:
    """An asyncio protocol by duck typing, one per accepted TLS connection."""

    __slots__ = (
        "closing",
        "h2_factory",
        "incoming",
        "inner",
        "inner_factory",
        "inner_paused",
        "loop",
        "outgoing",
        "peer",
        "raw",
        "sslobj",
        "timeout",
        "timer",
        "tls",
    )

    def __init__(
        self,
        tls: ListenerTls,
        inner_factory: Callable[[], Any],
        loop: asyncio.AbstractEventLoop,
        handshake_timeout: float,
        h2_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.tls = tls
        self.inner_factory = inner_factory
        # The HTTP/2 connection, for clients that chose `h2` by ALPN (None: not offered).
        self.h2_factory = h2_factory
        self.loop = loop
        self.timeout = handshake_timeout
        self.raw: asyncio.Transport | None = None
        self.sslobj: ssl.SSLObject | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.inner: Any = None  # set once the handshake is done
        self.inner_paused = False
        self.closing = False
        self.timer: asyncio.TimerHandle | None = None
        self.peer = "-"

    # ---- the raw transport's protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0])
        self.timer = self.loop.call_later(self.timeout, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        if self.sslobj is None and not self._start(data):
            return
        self.incoming.write(data)
        if self.inner is None:
            self._handshake()
        elif not self.inner_paused:
            self._read_plain()

    def eof_received(self) -> bool | None:
        # The peer closed its side without close_notify (or after it).
        self.incoming.write_eof()
        inner = self.inner
        if inner is None:
            self.abort()
            return None
        if not self.inner_paused:
            self._read_plain()
        keep: bool | None = inner.eof_received()
        return keep

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._cancel_timer()
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # ---- the handshake ----

    def _start(self, data: bytes) -> bool:
        """The first bytes: a TLS handshake record, or something else to answer."""
        if data[0] != _HANDSHAKE_RECORD:
            if data[:1].isalpha() and data[:1].isupper():
                # A request line ("GET / HTTP/1.1"): answered as nginx answers it.
                _log.info("client %s sent plain HTTP request to HTTPS port", self.peer)
                self._write_raw(error_response(400, PLAIN_HTTP_REASON))
                self.close_raw()
            else:
                _log.info("client %s sent no TLS handshake (first byte 0x%02x)", self.peer, data[0])
                self.abort()
            return False
        self.sslobj = self.tls.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        return True

    def _handshake(self) -> None:
        sslobj = self.sslobj
        assert sslobj is not None
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError) as exc:
            _log.info("TLS handshake with %s failed: %s", self.peer, _reason(exc))
            self._flush()  # the alert, so the client learns why
            self.close_raw()
            return
        self._flush()
        self._cancel_timer()
        factory = self.inner_factory
        if self.h2_factory is not None and sslobj.selected_alpn_protocol() == "h2":
            factory = self.h2_factory
        inner = self.inner = factory()
        inner.connection_made(_TlsTransport(self))
        if not self.closing and not self.inner_paused:
            self._read_plain()

    def _handshake_timed_out(self) -> None:
        self.timer = None
        if self.inner is None and not self.closing:
            _log.info("TLS handshake with %s timed out", self.peer)
            self.abort()

    # ---- plaintext in ----

    def _read_plain(self) -> None:
        sslobj = self.sslobj
        assert sslobj is not None
        chunks = []
        eof = False
        while True:
            try:
                chunk = sslobj.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                eof = True  # close_notify
                break
            except ssl.SSLEOFError:
                # TCP closed without close_notify: most clients do so; HTTP framing,
                # not TLS, tells whether a request was whole.
                eof = True
                break
            except ssl.SSLError as exc:
                _log.info("TLS error from %s: %s", self.peer, _reason(exc))
                self._flush()
                self.abort()
                return
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
            if not self.incoming.pending and not sslobj.pending():
                break  # all read: spares the SSLWantReadError a further read raises
        self._flush()  # TLS 1.3 tickets, key updates
        inner = self.inner
        if chunks and inner is not None:
            inner.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof and self.inner is not None and not self.closing and not self.inner.eof_received():
            self.close()

    def pause_reading(self) -> None:
        if not self.inner_paused:
            self.inner_paused = True
            if self.raw is not None and not self.closing:
                self.raw.pause_reading()

    def resume_reading(self) -> None:
        if self.inner_paused:
            self.inner_paused = False
            if self.raw is not None and not self.closing:
                self.raw.resume_reading()
                # Plaintext OpenSSL already holds would otherwise wait for the next read.
                if self.inner is not None and self.sslobj is not None:
                    self.loop.call_soon(self._read_pending)

    def _read_pending(self) -> None:
        if self.inner is not None and not self.inner_paused and not self.closing:
            self._read_plain()

    # ---- plaintext out ----

    def write_plain(self, data: bytes) -> None:
        if self.closing or self.sslobj is None:
            return
        try:
            self.sslobj.write(data)
        except ssl.SSLError as exc:
            _log.info("TLS write to %s failed: %s", self.peer, _reason(exc))
            self.abort()
            return
        self._flush()

    def close(self) -> None:
        """close_notify, then close once what is buffered has gone out."""
        if self.closing:
            return
        if self.sslobj is not None and self.inner is not None:
            # It wants the peer's close_notify, which we do not wait for.
            with contextlib.suppress(ssl.SSLError):
                self.sslobj.unwrap()
            self._flush()
        self.close_raw()

    def close_raw(self) -> None:
        self.closing = True
        self._cancel_timer()
        if self.raw is not None:
            self.raw.close()

    def abort(self) -> None:
        self.closing = True
        self._cancel_timer()
        if self.raw is not None:
            self.raw.abort()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self._write_raw(data)

    def _write_raw(self, data: bytes) -> None:
        raw = self.raw
        if raw is not None and not raw.is_closing():
            raw.write(data)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def __repr__(self) -> str:
        state = "open" if self.inner is not None else "handshake"
        return f"TlsServerProtocol({self.peer} {state} closing={self.closing})"


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else str(exc)
