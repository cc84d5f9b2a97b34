"""A recording origin server for smuggling tests: a real loopback socket server (one
thread per connection) that keeps every byte it receives, per connection, splits it
into requests with a deliberately strict HTTP/1.1 parser, and answers each complete
request with a scripted raw response or a default 200 naming the request.

What it proves: every request that reached it is in `messages()`, framed exactly as
the strict parser reads it; anything it could not frame is in `errors()` (and the
connection is closed). A proxy that forwards only canonical messages never produces
an error here. Nothing here knows about Ferryman.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "FramingError",
    "Mark",
    "Message",
    "RecordedConnection",
    "Recorder",
    "default_response",
    "parse_request",
]

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) HTTP/1\.([01])")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_DIGITS = re.compile(rb"[0-9]{1,15}")
_MAX_HEAD = 256 * 1024
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class FramingError(Exception):
    """The bytes are not one unambiguous HTTP/1.1 request."""


@dataclass(slots=True)
class Message:
    """One complete request as the recorder framed it."""

    conn: int
    seq: int
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes

    def header(self, name: bytes) -> bytes | None:
        lname = name.lower()
        return next((v for n, v in self.headers if n.lower() == lname), None)


@dataclass(frozen=True, slots=True)
class Mark:
    """A point in the recording: the next message number and each connection's size."""

    seq: int
    sizes: tuple[int, ...]


@dataclass(slots=True)
class RecordedConnection:
    index: int
    data: bytearray = field(default_factory=bytearray)
    messages: list[Message] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # The peer (the proxy) closed or reset its side.
    peer_closed: bool = False
    opened_at: float = field(default_factory=time.monotonic)


def _head_fields(head: bytes) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise FramingError(f"bare CR or LF in {line[:60]!r}")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise FramingError(f"bad request line {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise FramingError(f"bad field line {line[:80]!r}")
        value = value.strip(b" \t")
        if _FIELD_VALUE.fullmatch(value) is None:
            raise FramingError(f"control character in {line[:80]!r}")
        headers.append((name, value))
    return match[1], match[2], b"1." + match[3], headers


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[str, int]:
    lengths = [v for n, v in headers if n.lower() == b"content-length"]
    codings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    if lengths and codings:
        raise FramingError("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1 or len(codings) > 1:
        raise FramingError("repeated framing field")
    if codings:
        if codings[0] != b"chunked":
            raise FramingError(f"Transfer-Encoding {codings[0]!r}")
        return "chunked", 0
    if lengths:
        if _DIGITS.fullmatch(lengths[0]) is None:
            raise FramingError(f"Content-Length {lengths[0]!r}")
        return "length", int(lengths[0])
    return "none", 0


def _chunked(buf: bytes | bytearray, start: int) -> tuple[bytes, int] | None:
    """Strict chunked body from `start`: hex sizes with no extensions, CRLF after every
    chunk, no trailers (a re-framing proxy sends none). (body, end) or None if short."""
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > 32:
                raise FramingError("chunk-size line too long")
            return None
        size_text = bytes(buf[pos:eol])
        if _HEX.fullmatch(size_text) is None:
            raise FramingError(f"chunk size {size_text[:40]!r}")
        size = int(size_text, 16)
        pos = eol + 2
        if size == 0:
            if len(buf) < pos + 2:
                return None
            if buf[pos : pos + 2] != b"\r\n":
                raise FramingError("trailer section or missing CRLF after the last chunk")
            return bytes(body), pos + 2
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise FramingError("no CRLF after chunk data")
        pos += size + 2


def parse_request(
    buf: bytes | bytearray, conn: int = 0, seq: int = 0
) -> tuple[Message, int] | None:
    """The first request in `buf` and the bytes it used, None if it is incomplete;
    FramingError if it is not an unambiguous HTTP/1.1 request."""
    end = buf.find(b"\r\n\r\n")
    head = buf[: end + 4] if end >= 0 else buf[:_MAX_HEAD]
    if _BARE.search(head) is not None:
        raise FramingError("bare CR or LF in the head")
    if end < 0:
        if len(buf) > _MAX_HEAD:
            raise FramingError("head too large")
        return None
    method, target, version, headers = _head_fields(bytes(buf[:end]))
    kind, length = _framing(headers)
    start = end + 4
    if kind == "chunked":
        done = _chunked(buf, start)
        if done is None:
            return None
        body, stop = done
    else:
        if len(buf) < start + length:
            return None
        body, stop = bytes(buf[start : start + length]), start + length
    raw = bytes(buf[:stop])
    return Message(conn, seq, method, target, version, headers, body, raw), stop


def default_response(msg: Message) -> bytes:
    body = b"seq=%d conn=%d %s %s" % (msg.seq, msg.conn, msg.method, msg.target)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Recorder-Seq: %d\r\n"
        b"X-Recorder-Conn: %d\r\nContent-Length: %d\r\n\r\n%s"
        % (msg.seq, msg.conn, len(body), body)
    )


class Recorder:
    """A loopback origin on 127.0.0.1:`port`. `script(raw, ...)` queues raw responses for
    the next requests (any connection), in order; without one a request gets
    `default_response`. Connections stay open (keep-alive) until the peer closes them.
    Use as a context manager or call `close()`; every socket has a timeout."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conns: list[RecordedConnection] = []
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._scripted: deque[bytes] = deque()
        self._seq = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._accept = threading.Thread(target=self._serve, name="recorder", daemon=True)
        self._accept.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what the tests read ----

    def script(self, *responses: bytes) -> None:
        with self._lock:
            self._scripted.extend(responses)

    def clear_script(self) -> None:
        with self._lock:
            self._scripted.clear()

    def connections(self) -> list[RecordedConnection]:
        with self._lock:
            return list(self._conns)

    def mark(self) -> Mark:
        """Where things stand now: pass to `*_since` to see only what followed."""
        with self._lock:
            return Mark(self._seq, tuple(len(c.data) for c in self._conns))

    def messages_since(self, mark: Mark) -> list[Message]:
        with self._lock:
            found = [m for c in self._conns for m in c.messages if m.seq >= mark.seq]
        return sorted(found, key=lambda m: m.seq)

    def errors(self) -> list[str]:
        with self._lock:
            return [f"conn {c.index}: {e}" for c in self._conns for e in c.errors]

    def bytes_since(self, mark: Mark) -> bytes:
        """Every byte received since `mark`, whole messages or not, on every connection
        (kept-alive connections carry several cases), one connection after another."""
        sizes = mark.sizes
        with self._lock:
            return b"".join(
                bytes(c.data[sizes[c.index] if c.index < len(sizes) else 0 :]) for c in self._conns
            )

    def wait_closed(self, index: int, timeout: float = 5.0) -> bool:
        """True once the peer has closed connection `index`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._conns[index].peer_closed:
                    return True
            time.sleep(0.01)
        return False

    # ---- the server ----

    def close(self) -> None:
        self._stop.set()
        self._accept.join(timeout=5)
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in list(self._threads):
            thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(0.2)
            with self._lock:
                conn = RecordedConnection(len(self._conns))
                self._conns.append(conn)
                self._socks.append(sock)
            thread = threading.Thread(
                target=self._handle, args=(sock, conn), name=f"recorder-{conn.index}", daemon=True
            )
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()

    def _handle(self, sock: socket.socket, conn: RecordedConnection) -> None:
        pending = bytearray()
        idle_since = time.monotonic()
        with sock:
            while not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    # Nobody keeps an idle test connection this long: let it go.
                    if time.monotonic() - idle_since > self.timeout * 6:
                        break
                    continue
                except OSError:
                    data = b""
                if not data:
                    with self._lock:
                        conn.peer_closed = True
                    return
                idle_since = time.monotonic()
                pending += data
                with self._lock:
                    conn.data += data
                if not self._answer(sock, conn, pending):
                    return

    def _answer(self, sock: socket.socket, conn: RecordedConnection, pending: bytearray) -> bool:
        while True:
            try:
                with self._lock:
                    found = parse_request(pending, conn.index, self._seq)
                    if found is None:
                        return True
                    msg, used = found
                    self._seq += 1
                    conn.messages.append(msg)
                    reply = self._scripted.popleft() if self._scripted else default_response(msg)
            except FramingError as exc:
                with self._lock:
                    conn.errors.append(str(exc))
                return False
            del pending[:used]
            try:
                sock.sendall(reply)
            except OSError:
                return False

    def __repr__(self) -> str:
        return f"Recorder(127.0.0.1:{self.port} connections={len(self._conns)} seq={self._seq})"
