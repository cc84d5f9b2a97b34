"""Raw HTTP/1.1 over plain sockets, for tests that must send bytes no well-behaved client
would (malformed heads, smuggling attempts) and see exactly what comes back.

`RawClient` is a blocking socket with a read buffer and a bounded timeout on every
operation; `ScriptedBackend` is a one-thread loopback server that answers each
connection with fixed bytes, for upstream misbehaviour the echo backend does not
offer. Nothing here knows about Ferryman.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BodyReader",
    "RawClient",
    "RawResponse",
    "ScriptedBackend",
    "http_get_json",
]

_CRLF = b"\r\n"


@dataclass(slots=True)
class RawResponse:
    status: int
    reason: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    # The body's framing was satisfied (Content-Length reached, last chunk seen, or
    # close-delimited and closed); False when the connection ended early.
    complete: bool = True
    # Chunked only: the raw chunked bytes as received.
    raw_body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        lname = name.lower()
        for n, v in self.headers:
            if n.lower() == lname:
                return v
        return None


@dataclass
class RawClient:
    """One TCP connection to 127.0.0.1:port with a bounded timeout on every call."""

    port: int
    host: str = "127.0.0.1"
    timeout: float = 10.0
    sock: socket.socket = field(init=False)
    buffer: bytearray = field(init=False, default_factory=bytearray)
    eof: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, size: int = 65536) -> bool:
        """Read more into the buffer; False once the peer closed (or reset)."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(size)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _line(self) -> bytes | None:
        while True:
            i = self.buffer.find(_CRLF)
            if i >= 0:
                line = bytes(self.buffer[:i])
                del self.buffer[: i + 2]
                return line
            if not self._fill():
                return None

    def read_exactly(self, n: int) -> tuple[bytes, bool]:
        """The next `n` bytes, or fewer if the peer closed first; and whether all came."""
        while len(self.buffer) < n:
            if not self._fill(max(65536, n - len(self.buffer))):
                break
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data, len(data) == n

    def read_head(self) -> RawResponse | None:
        """Read one response head; None if the connection closed before any byte."""
        line = self._line()
        if line is None:
            if self.buffer:
                raise AssertionError(f"connection closed mid status line: {bytes(self.buffer)!r}")
            return None
        version, _, rest = line.partition(b" ")
        code, _, reason = rest.partition(b" ")
        assert version.startswith(b"HTTP/1."), line
        headers = []
        while True:
            field_line = self._line()
            assert field_line is not None, "connection closed mid head"
            if field_line == b"":
                break
            name, _, value = field_line.partition(b":")
            headers.append((name, value.strip(b" \t")))
        return RawResponse(int(code), reason, version, headers)

    def read_response(self, *, head_request: bool = False) -> RawResponse | None:
        """Read one whole response (head and body, by its framing)."""
        resp = self.read_head()
        if resp is None:
            return None
        if head_request or resp.status in (204, 304) or 100 <= resp.status < 200:
            return resp
        te = resp.header(b"transfer-encoding")
        length = resp.header(b"content-length")
        if te is not None and te.lower().endswith(b"chunked"):
            resp.body, resp.raw_body, resp.complete = self._chunked_body()
        elif length is not None:
            resp.body, resp.complete = self.read_exactly(int(length))
        else:
            resp.body = self.read_until_close()
        return resp

    def _chunked_body(self) -> tuple[bytes, bytes, bool]:
        body = bytearray()
        raw = bytearray()
        while True:
            size_line = self._line()
            if size_line is None:
                raw += self.buffer
                return bytes(body), bytes(raw), False
            raw += size_line + _CRLF
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while (trailer := self._line()) not in (b"", None):
                    raw += trailer + _CRLF
                if trailer is None:
                    return bytes(body), bytes(raw), False
                raw += _CRLF
                return bytes(body), bytes(raw), True
            data, ok = self.read_exactly(size + 2)
            raw += data
            body += data[:size]
            if not ok:
                return bytes(body), bytes(raw), False
            assert data[size:] == _CRLF, data[size:]

    def body_reader(self, resp: RawResponse) -> BodyReader:
        """Stream the body of `resp` (whose head was read with `read_head`)."""
        return BodyReader(self, resp)

    def read_until_close(self, limit: int = 1 << 30) -> bytes:
        while len(self.buffer) < limit and self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True if the peer closes (recv gives b'' or a reset) within `timeout` with no
        further bytes; False if bytes arrive or it stays open."""
        if self.buffer:
            return False
        if self.eof:
            return True
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(self.timeout)
        if data:
            self.buffer += data
            return False
        self.eof = True
        return True


class BodyReader:
    """Reads a response body piece by piece by its framing (Content-Length, chunked or
    until close) without holding it; `complete` tells, at the end, whether the framing
    was satisfied."""

    def __init__(self, client: RawClient, resp: RawResponse) -> None:
        self.client = client
        te = resp.header(b"transfer-encoding")
        length = resp.header(b"content-length")
        self.chunked = te is not None and te.lower().endswith(b"chunked")
        self.remaining = -1 if self.chunked or length is None else int(length)
        self.until_close = not self.chunked and length is None
        self.chunk_left = 0  # bytes left in the current chunk (chunked only)
        self.done = False
        self.complete = False

    def read(self, max_bytes: int = 1 << 20) -> bytes:
        """Up to `max_bytes` of body (at least one byte unless the body ended: b'')."""
        if self.done:
            return b""
        c = self.client
        if self.chunked and self.chunk_left == 0 and not self._next_chunk():
            return b""
        want = max_bytes
        if self.chunked:
            want = min(want, self.chunk_left)
        elif not self.until_close:
            want = min(want, self.remaining)
            if want == 0:
                self.done = self.complete = True
                return b""
        if not c.buffer and not c._fill(max(want, 65536)):
            self.done = True
            self.complete = self.until_close
            return b""
        data = bytes(c.buffer[:want])
        del c.buffer[: len(data)]
        if self.chunked:
            self.chunk_left -= len(data)
            if self.chunk_left == 0:
                end, ok = c.read_exactly(2)
                if not ok:
                    self.done = True
                    return data
                assert end == _CRLF, end
        elif not self.until_close:
            self.remaining -= len(data)
            if self.remaining == 0:
                self.done = self.complete = True
        return data

    def _next_chunk(self) -> bool:
        line = self.client._line()
        if line is None:
            self.done = True
            return False
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:
            while (trailer := self.client._line()) not in (b"", None):
                pass
            self.done = True
            self.complete = trailer == b""
            return False
        self.chunk_left = size
        return True


def http_get_json(port: int, target: str, host: str = "127.0.0.1", timeout: float = 10.0) -> Any:
    """GET `target` with `Connection: close` and parse the JSON body."""
    with RawClient(port, host, timeout) as client:
        client.send(
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        resp = client.read_response()
    assert resp is not None and resp.status == 200, resp
    return json.loads(resp.body)


class ScriptedBackend:
    """A loopback server in a thread: for each connection, read one request head, then
    call `script(conn, head_bytes)` (default: send `reply` and close). Stopped by
    `close()` or as a context manager; every socket has a timeout."""

    def __init__(
        self,
        reply: bytes = b"",
        script: Callable[[socket.socket, bytes], None] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.reply = reply
        self.script = script or self._send_reply
        self.timeout = timeout
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="scripted-backend", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _send_reply(self, conn: socket.socket, head: bytes) -> None:
        conn.sendall(self.reply)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(self.timeout)
                try:
                    head = self._read_head(conn)
                    if head is None:
                        continue
                    self.requests.append(head)
                    self.script(conn, head)
                except OSError:
                    pass

    def _read_head(self, conn: socket.socket) -> bytes | None:
        data = b""
        deadline = time.monotonic() + self.timeout
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            piece = conn.recv(65536)
            if not piece:
                return None
            data += piece
        return data
