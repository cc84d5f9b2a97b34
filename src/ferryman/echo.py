"""The echo backend: the demo and test upstream ("six small servers, each with its own UUID").

Owns a tiny, fast HTTP/1.1 origin server (asyncio.Protocol + httptools, uvloop when
importable) with keep-alive, in-order pipelining, and request bodies (Content-Length or
chunked) consumed streamingly. Its endpoints exist to exercise a proxy:

    GET /                      200 text/plain, body = this server's UUID (36 bytes)
    /big?bytes=N[&chunked=1]   N bytes (default 1 MiB) of `big_pattern`, 64 KiB writes,
                               honouring transport backpressure
    /slow?ms=N                 the UUID after N ms, without blocking other connections
    /status/CODE[?retry_after=S]  that status with a short body (and Retry-After)
    /echo                      JSON: method, target, version, headers as received,
                               body length and SHA-256 (hashed as it streams in)
    /count                     JSON: requests served so far, by method
    /headers?NAME=VALUE[&...]  200 with those response fields added (repeats allowed),
                               e.g. Server or X-Powered-By, for header hiding tests
    /truncate?bytes=N          announces Content-Length N, sends N/2 bytes, closes
    /close                     closes the connection without answering
    /cache?id=K&cc=..&etag=..&lm=..&vary=..&bytes=N&ms=N&status=N
                               a cacheable answer with the given Cache-Control, ETag,
                               Last-Modified and Vary, counted per id (default: the
                               query); 304 when If-None-Match / If-Modified-Since match;
                               body `id=K n=COUNT ae=ACCEPT-ENCODING` or N pattern bytes
    /cache/count?id=K          JSON: how many /cache requests (and 304s) id K had
    anything else              404

It must not know anything about the proxy: it imports nothing from ferryman, so that a
bug in the proxy can never hide behind a matching bug in its test backend.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import re
import signal
import sys
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast
from urllib.parse import parse_qsl

import httptools

__all__ = [
    "BIG_CHUNK_SIZE",
    "DEFAULT_BIG_BYTES",
    "EchoState",
    "big_pattern",
    "main",
    "serve",
    "start_echo_server",
]

log = logging.getLogger(__name__)

BIG_CHUNK_SIZE = 64 * 1024
DEFAULT_BIG_BYTES = 1024 * 1024
DEFAULT_SLOW_MS = 100
DEFAULT_TRUNCATE_BYTES = 1024
BACKLOG = 4096
# A prime period that does not divide the chunk size, so that a dropped, duplicated or
# reordered chunk changes the bytes a test sees (a period of 256 would hide it).
_PATTERN_PERIOD = 251
_PATTERN = bytes(i % _PATTERN_PERIOD for i in range(BIG_CHUNK_SIZE + _PATTERN_PERIOD))
# Requests parsed ahead of the response being written; past this we stop reading so that
# a client pipelining behind a /slow request cannot make us buffer without bound.
_MAX_QUEUED = 64
_MAX_UINT_DIGITS = 15
# RFC 9110 5.1 / 5.5: a field name is a token; a value has no controls but tab.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


def big_pattern(length: int, offset: int = 0) -> bytes:
    """The bytes /big sends from `offset`: byte i of the body is `i % 251`."""
    parts = []
    while length > 0:
        n = min(length, BIG_CHUNK_SIZE)
        start = offset % _PATTERN_PERIOD
        parts.append(_PATTERN[start : start + n])
        offset += n
        length -= n
    return b"".join(parts)


@dataclass(slots=True)
class EchoState:
    """What one echo server shares between its connections."""

    uuid: str
    requests: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    root_response: bytes = b""
    # /cache requests per id, and the 304s among them.
    by_key: dict[str, int] = field(default_factory=dict)
    not_modified: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        body = self.uuid.encode("ascii")
        self.root_response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )

    def record(self, method: str) -> None:
        self.requests += 1
        self.by_method[method] = self.by_method.get(method, 0) + 1


class _Request:
    """One parsed request; the body is counted (and hashed for /echo), never kept."""

    __slots__ = (
        "body_length",
        "error",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "sha",
        "target",
        "version",
    )

    def __init__(self) -> None:
        self.target = b""
        self.path = b""
        self.query = b""
        self.method = ""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.expect_continue = False
        self.body_length = 0
        self.sha: hashlib._Hash | None = None
        self.error = False

    def __repr__(self) -> str:
        return f"_Request({self.method} {self.target!r} body={self.body_length})"

    @property
    def is_head(self) -> bool:
        return self.method == "HEAD"

    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query.decode("latin-1"), keep_blank_values=True))


def _split_target(target: bytes) -> tuple[bytes, bytes]:
    """Path and query of an origin-form or absolute-form request-target (RFC 9112 3.2)."""
    if not target.startswith(b"/"):
        scheme_end = target.find(b"://")
        if scheme_end >= 0:
            slash = target.find(b"/", scheme_end + 3)
            target = target[slash:] if slash >= 0 else b"/"
    path, _, query = target.partition(b"?")
    return path, query


def _parse_uint(text: str | None, default: int) -> int | None:
    """ASCII digits only: int() would accept '+5', '1_0', ' 5 ' and Unicode digits."""
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_UINT_DIGITS:
        return None
    return int(text)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def _head(status: int, headers: list[tuple[str, str]], req: _Request) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    if not req.keep_alive:
        lines.append("Connection: close\r\n")
    elif req.version == "1.0":
        lines.append("Connection: keep-alive\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


class _EchoConnection(asyncio.Protocol):
    """One client connection: parse, queue, and answer requests strictly in order."""

    def __init__(self, state: EchoState) -> None:
        self._state = state
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._current: _Request | None = None
        self._queue: deque[_Request] = deque()
        self._busy = False  # an asynchronous response (/slow, /big, ...) is in progress
        self._done_reading = False  # a last request (Connection: close, error) was parsed
        self._read_paused = False
        self._write_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._batch: list[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"_EchoConnection(queued={len(self._queue)} busy={self._busy})"

    # ------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only look-alikes.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        if self._done_reading:
            return
        self._batch = []
        try:
            self._feed(data)
            if not self._busy:
                self._drain()
        finally:
            self._flush()
            self._batch = None
        if len(self._queue) >= _MAX_QUEUED and not self._read_paused and self._transport:
            self._read_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        # Answer what was already asked (a client may half-close after pipelining), then close.
        self._done_reading = True
        return self._busy or bool(self._queue)  # True keeps our half open until answered

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # llhttp completed the message, then paused. No protocol switch here: answer
            # what was asked, then close.
            if self._current is not None:
                self._queue.append(self._current)
                self._current = None
            if self._queue:
                self._queue[-1].keep_alive = False
            self._done_reading = True
        except httptools.HttpParserError:
            if not self._done_reading:  # bytes after `Connection: close` are not an error
                req = _Request()
                req.error, req.keep_alive = True, False
                self._queue.append(req)
                self._done_reading = True

    # ------------------------------------------------------------ httptools callbacks
    def on_message_begin(self) -> None:
        self._current = _Request()

    def on_url(self, url: bytes) -> None:
        assert self._current is not None
        self._current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        req = self._current
        assert req is not None
        req.method = self._parser.get_method().decode("latin-1")
        req.version = self._parser.get_http_version()
        req.path, req.query = _split_target(req.target)
        if req.path == b"/echo":
            req.sha = hashlib.sha256()
        for name, value in req.headers:
            if name.lower() == b"expect" and value.lower() == b"100-continue":
                req.expect_continue = True
        self._maybe_continue()

    def on_body(self, body: bytes) -> None:
        req = self._current
        assert req is not None
        req.body_length += len(body)
        if req.sha is not None:
            req.sha.update(body)

    def on_message_complete(self) -> None:
        req = self._current
        assert req is not None
        if self._done_reading:
            return  # pipelined after a request that ends the connection: never answered
        # Must be asked here: once feed_data() returns it no longer describes this message.
        req.keep_alive = self._parser.should_keep_alive()
        self._current = None
        self._queue.append(req)
        if not req.keep_alive:
            self._done_reading = True

    # ------------------------------------------------------------ response sequencing
    def _drain(self) -> None:
        while self._queue and not self._busy and self._transport is not None:
            req = self._queue.popleft()
            self._respond(req)
            if not req.keep_alive:
                self._queue.clear()
        if self._read_paused and len(self._queue) < _MAX_QUEUED // 2 and self._transport:
            self._read_paused = False
            self._transport.resume_reading()
        self._maybe_continue()
        if self._done_reading and not self._busy and not self._queue:
            self._close()

    def _maybe_continue(self) -> None:
        """Send 100 Continue (RFC 9110 10.1.1) once every earlier response is out."""
        req = self._current
        if req is None or not req.expect_continue or req.body_length:
            return
        if not self._busy and not self._queue:
            req.expect_continue = False
            self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _respond(self, req: _Request) -> None:
        if req.error:
            body = b"bad request\n"
            self._send(_head(400, [("Content-Length", str(len(body)))], req) + body)
            return
        self._state.record(req.method)
        handler = _ROUTES.get(req.path)
        if handler is not None:
            handler(self, req)
        elif req.path.startswith(b"/status/"):
            self._status(req)
        elif req.path.startswith(b"/echo/"):
            # Any path under /echo/ echoes too, so tests can see rewritten targets.
            _EchoConnection._echo(self, req)
        else:
            self._simple(req, 404, b"not found\n")

    def _finish_async(self, req: _Request) -> None:
        """An asynchronous response is complete: go on with the queue (or close)."""
        self._busy = False
        self._task = self._timer = None
        if not req.keep_alive:
            self._done_reading = True
        self._drain()

    # ------------------------------------------------------------ output
    def _send(self, data: bytes) -> None:
        if self._batch is not None:
            self._batch.append(data)
        elif self._transport is not None:
            self._transport.write(data)

    def _flush(self) -> None:
        if self._batch and self._transport is not None:
            self._transport.write(b"".join(self._batch))
        if self._batch:
            self._batch = []

    def _close(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def _wake_writer(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    async def _wait_writable(self) -> None:
        if self._write_paused and self._transport is not None:
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable

    def _simple(
        self,
        req: _Request,
        status: int,
        body: bytes,
        ctype: str = "text/plain",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), *extra]
        self._send(_head(status, headers, req) + (b"" if req.is_head else body))

    def _json(self, req: _Request, obj: object) -> None:
        self._simple(req, 200, json.dumps(obj).encode() + b"\n", "application/json")

    # ------------------------------------------------------------ endpoints
    def _root(self, req: _Request) -> None:
        if req.keep_alive and req.version == "1.1" and not req.is_head:
            self._send(self._state.root_response)  # the hot path: one prebuilt buffer
        else:
            self._simple(req, 200, self._state.uuid.encode("ascii"))

    def _status(self, req: _Request) -> None:
        code = _parse_uint(req.path[len(b"/status/") :].decode("latin-1"), -1)
        retry_after = req.params().get("retry_after")
        if code is None or not 200 <= code <= 599 or _parse_uint(retry_after, 0) is None:
            self._simple(req, 400, b"want /status/200..599[?retry_after=SECONDS]\n")
            return
        extra = (("Retry-After", retry_after),) if retry_after else ()
        if code in (204, 304):  # no body, no Content-Length (RFC 9110 8.6, 15.3.5)
            self._send(_head(code, list(extra), req))
            return
        self._simple(req, code, f"{code} {_reason(code)}\n".encode(), extra=extra)

    def _count(self, req: _Request) -> None:
        state = self._state
        self._json(
            req, {"uuid": state.uuid, "requests": state.requests, "by_method": state.by_method}
        )

    def _echo(self, req: _Request) -> None:
        self._json(
            req,
            {
                "uuid": self._state.uuid,
                "method": req.method,
                "target": req.target.decode("latin-1"),
                "version": req.version,
                "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in req.headers],
                "body_length": req.body_length,
                "body_sha256": (req.sha or hashlib.sha256()).hexdigest(),
            },
        )

    def _cache(self, req: _Request) -> None:
        params = req.params()
        key = params.get("id", req.query.decode("latin-1"))
        state = self._state
        state.by_key[key] = count = state.by_key.get(key, 0) + 1
        ms = _parse_uint(params.get("ms"), 0)
        size = _parse_uint(params.get("bytes"), -1)
        status = _parse_uint(params.get("status"), 200)
        if ms is None or size is None or status is None or not 200 <= status <= 599:
            self._simple(req, 400, b"want /cache?id=K&cc=&etag=&lm=&vary=&bytes=N&ms=N\n")
            return
        if ms:
            self._busy = True
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(ms / 1000, self._cache_done, req, key, count, status)
            return
        self._cache_answer(req, key, count, status)

    def _cache_done(self, req: _Request, key: str, count: int, status: int) -> None:
        self._cache_answer(req, key, count, status)
        self._finish_async(req)

    def _cache_answer(self, req: _Request, key: str, count: int, status: int) -> None:
        params = req.params()
        extra = [
            (name, params[param])
            for name, param in (
                ("Cache-Control", "cc"),
                ("ETag", "etag"),
                ("Last-Modified", "lm"),
                ("Vary", "vary"),
                ("Set-Cookie", "cookie"),
            )
            if param in params
        ]
        fields = {n.lower(): v for n, v in req.headers}
        etag, lm = params.get("etag"), params.get("lm")
        if (etag is not None and fields.get(b"if-none-match") == etag.encode("latin-1")) or (
            lm is not None
            and b"if-none-match" not in fields
            and fields.get(b"if-modified-since") == lm.encode("latin-1")
        ):
            self._state.not_modified[key] = self._state.not_modified.get(key, 0) + 1
            self._send(_head(304, extra, req))
            return
        size = _parse_uint(params.get("bytes"), -1) or 0
        if size > 0:
            body = big_pattern(size)
        else:
            ae = fields.get(b"accept-encoding", b"").decode("latin-1")
            body = f"id={key} n={count} ae={ae}\n".encode("latin-1")
        self._simple(req, status, body, extra=tuple(extra))

    def _cache_count(self, req: _Request) -> None:
        key = req.params().get("id", "")
        state = self._state
        self._json(
            req,
            {
                "id": key,
                "requests": state.by_key.get(key, 0),
                "not_modified": state.not_modified.get(key, 0),
            },
        )

    def _headers(self, req: _Request) -> None:
        fields = parse_qsl(req.query.decode("latin-1"), keep_blank_values=True)
        if not all(_FIELD_NAME.fullmatch(n) and _FIELD_VALUE.fullmatch(v) for n, v in fields):
            self._simple(req, 400, b"want /headers?NAME=VALUE with a token NAME, no controls\n")
            return
        self._simple(req, 200, b"headers\n", extra=tuple(fields))

    def _close_now(self, req: _Request) -> None:
        req.keep_alive = False  # no answer at all; _drain closes once earlier ones are out
        self._done_reading = True

    def _slow(self, req: _Request) -> None:
        ms = _parse_uint(req.params().get("ms"), DEFAULT_SLOW_MS)
        if ms is None:
            self._simple(req, 400, b"want /slow?ms=MILLISECONDS\n")
            return
        self._busy = True
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(ms / 1000, self._slow_done, req)

    def _slow_done(self, req: _Request) -> None:
        self._root(req)
        self._finish_async(req)

    def _big(self, req: _Request) -> None:
        params = req.params()
        size = _parse_uint(params.get("bytes"), DEFAULT_BIG_BYTES)
        if size is None:
            self._simple(req, 400, b"want /big?bytes=N[&chunked=1]\n")
            return
        chunked = params.get("chunked", "0") not in ("0", "") and req.version == "1.1"
        framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size))
        self._send(_head(200, [("Content-Type", "application/octet-stream"), framing], req))
        if req.is_head:
            return
        self._start_stream(req, size, chunked=chunked)

    def _truncate(self, req: _Request) -> None:
        size = _parse_uint(req.params().get("bytes"), DEFAULT_TRUNCATE_BYTES)
        if size is None:
            self._simple(req, 400, b"want /truncate?bytes=N\n")
            return
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        self._send(_head(200, headers, req))  # no `Connection: close`: the lie must be seen
        req.keep_alive = False  # the short body ends with a close
        self._start_stream(req, size // 2, chunked=False)

    def _start_stream(self, req: _Request, size: int, *, chunked: bool) -> None:
        self._busy = True
        self._task = asyncio.get_running_loop().create_task(self._stream(req, size, chunked))

    async def _stream(self, req: _Request, size: int, chunked: bool) -> None:
        """Write `size` pattern bytes in 64 KiB writes, waiting whenever the transport
        asks us to pause (its high-water mark), so memory stays bounded per connection."""
        offset = 0
        while offset < size and self._transport is not None:
            await self._wait_writable()
            n = min(BIG_CHUNK_SIZE, size - offset)
            start = offset % _PATTERN_PERIOD
            chunk = _PATTERN[start : start + n]
            self._send(b"%x\r\n%s\r\n" % (n, chunk) if chunked else chunk)
            offset += n
        if chunked:
            self._send(b"0\r\n\r\n")
        if self._transport is not None:
            self._finish_async(req)


_Handler = Callable[[_EchoConnection, _Request], None]
_ROUTES: dict[bytes, _Handler] = {
    b"/": _EchoConnection._root,
    b"/big": _EchoConnection._big,
    b"/slow": _EchoConnection._slow,
    b"/echo": _EchoConnection._echo,
    b"/count": _EchoConnection._count,
    b"/truncate": _EchoConnection._truncate,
    b"/cache": _EchoConnection._cache,
    b"/cache/count": _EchoConnection._cache_count,
    b"/close": _EchoConnection._close_now,
    b"/headers": _EchoConnection._headers,
}


# ---------------------------------------------------------------- server lifecycle
async def start_echo_server(host: str, port: int, *, uuid: str | None = None) -> asyncio.Server:
    """Bind and start accepting; `port` 0 picks a free port (see `server.sockets`)."""
    state = EchoState(uuid or str(uuidlib.uuid4()))
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _EchoConnection(state), host, port, reuse_address=True, backlog=BACKLOG
    )


async def serve(
    host: str, port: int, *, uuid: str | None = None, ready: Callable[[], None] | None = None
) -> None:
    """Run an echo server until cancelled; `ready` is called once it accepts connections."""
    server = await start_echo_server(host, port, uuid=uuid)
    try:
        if ready is not None:
            ready()
        await server.serve_forever()
    finally:
        server.close()


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    port = _parse_uint(port_text, -1) if sep else None
    if not host or port is None or port < 0 or port > 65535:
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {text!r}")
    return host.removeprefix("[").removesuffix("]"), port


def _server_id(text: str) -> str:
    if not (0 < len(text) <= 128 and text.isascii() and text.isprintable() and " " not in text):
        raise argparse.ArgumentTypeError("want 1..128 printable ASCII characters, no spaces")
    return text


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ferryman.echo", description="Echo backend for Ferryman demos and tests."
    )
    parser.add_argument("--listen", required=True, type=_listen_address, metavar="HOST:PORT")
    parser.add_argument("--uuid", type=_server_id, help="identity to answer (default: a UUID4)")
    return parser.parse_args(argv)


async def _run_until_signalled(host: str, port: int, uuid: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await start_echo_server(host, port, uuid=uuid)
    bound_port = server.sockets[0].getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"echo {uuid} listening on http://{shown_host}:{bound_port}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one echo server until SIGTERM/SIGINT; 0 on a clean stop."""
    args = _parse_args(argv)
    host, port = args.listen
    uuid = args.uuid or str(uuidlib.uuid4())
    logging.basicConfig(level=logging.WARNING, format="echo: %(levelname)s %(message)s")
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_run_until_signalled(host, port, uuid))
    except OSError as exc:
        print(f"echo: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
