"""HTTP/2 for clients (server/h2_connection.py), against a real `ferryman run` with real
clients: curl --http2, h2load, and a Python client on the `h2` library over an ssl
socket for what well-behaved clients never send (malformed heads, floods, too many
streams). Certificates come from tls/devcert.py in a CA made for this module.

One proxy serves the module (a TLS listener with HTTP/2, one with `http2: false`) in
front of the echo backend; the graceful-shutdown test starts its own proxy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, HeadersFrame

from ferryman._lib_accel import LIBS_DIR, build_state
from ferryman.echo import big_pattern
from ferryman.tls.devcert import DevCert, issue
from support.h2load import run_h2load
from support.memory import wait_for_children
from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy

SCALE = float(os.environ.get("FERRYMAN_SLOW_SCALE", "1"))


@dataclass
class Stack:
    ca: Path
    cert: DevCert
    proxy: ProxyProcess
    port: int  # TLS with HTTP/2
    h1_port: int  # TLS with http2: false
    backend: EchoBackend


def _config(cert: DevCert, port: int, h1_port: int, backend: str) -> str:
    certs = f"[{{cert: {cert.cert}, key: {cert.key}}}]"
    return f"""
workers: 1
upstreams:
  app: {{servers: ["{backend}"], keepalive: 64}}
servers:
  - listen:
      - address: "127.0.0.1:{port}"
        tls: {{certificates: {certs}}}
      - address: "127.0.0.1:{h1_port}"
        http2: false
        tls: {{certificates: {certs}}}
    routes:
      - {{path: /, upstream: app}}
      - {{path: /fixed, match: exact, script: [{{return: {{status: 200, text: "fixed"}}}}]}}
"""


def _start(workdir: Path, cert: DevCert, backend: EchoBackend) -> tuple[ProxyProcess, int, int]:
    port, h1_port = free_port(), free_port()
    proxy = start_proxy(workdir, _config(cert, port, h1_port, backend.address), port)
    return proxy, port, h1_port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("h2")
    cert = issue(workdir / "ca", ("localhost", "127.0.0.1"))
    backend = start_echo(workdir / "logs")
    try:
        proxy, port, h1_port = _start(workdir / "proxy", cert, backend)
        try:
            yield Stack(workdir / "ca" / "ca.pem", cert, proxy, port, h1_port, backend)
        finally:
            proxy.stop()
    finally:
        backend.stop()


# ---------------------------------------------------------------- a raw h2 client


@dataclass
class Answer:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: ErrorCodes | int | None = None


class _Client(h2.connection.H2Connection):
    """h2's client, except that a graceful GOAWAY (NO_ERROR) still lets the streams
    it names finish (h2 would refuse every frame after any GOAWAY)."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        result = super()._receive_goaway_frame(frame)
        if frame.error_code == ErrorCodes.NO_ERROR:
            self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return result


class _Unlimited(_Client):
    """A client that ignores the server's MAX_CONCURRENT_STREAMS (to test that the
    server enforces it)."""

    @property
    def open_outbound_streams(self) -> int:
        super().open_outbound_streams  # noqa: B018
        return 0


class _CountingTls:
    """TLS over memory BIOs instead of ssl's socket, so that the test sees the record
    boundaries of what the server sent: `records` counts those received after the
    handshake. The part of ssl.SSLSocket's interface that H2Client uses."""

    def __init__(self, raw: socket.socket, ctx: ssl.SSLContext) -> None:
        self.raw = raw
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.records = 0
        self.partial = b""  # bytes of a record not yet whole
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_out()
                data = raw.recv(65536)
                if not data:
                    raise ConnectionError("closed during the TLS handshake") from None
                self._take(data)
        self._send_out()
        self.records = 0

    def _take(self, data: bytes) -> None:
        self.partial += data
        while len(self.partial) >= 5:  # type(1) version(2) length(2), RFC 8446 5.1
            end = 5 + int.from_bytes(self.partial[3:5], "big")
            if len(self.partial) < end:
                break
            self.records += 1
            self.partial = self.partial[end:]
        self.incoming.write(data)

    def _send_out(self) -> None:
        out = self.outgoing.read()
        if out:
            self.raw.sendall(out)

    def selected_alpn_protocol(self) -> str | None:
        return self.tls.selected_alpn_protocol()

    def sendall(self, data: bytes) -> None:
        self.tls.write(data)
        self._send_out()

    def settimeout(self, timeout: float) -> None:
        self.raw.settimeout(timeout)

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self.tls.read(size)
            except ssl.SSLWantReadError:
                data = self.raw.recv(65536)
                if not data:
                    return b""
                self._take(data)

    def close(self) -> None:
        self.raw.close()


class H2Client:
    """A blocking HTTP/2 client over TLS: send frames, read until a condition holds."""

    def __init__(
        self,
        stack: Stack,
        *,
        unlimited: bool = False,
        raw: socket.socket | None = None,
        count_records: bool = False,
    ) -> None:
        ctx = ssl.create_default_context(cafile=str(stack.ca))
        ctx.set_alpn_protocols(["h2"])
        # `raw`: a TCP connection opened earlier (the TLS handshake starts now).
        raw = raw or socket.create_connection(("127.0.0.1", stack.port), timeout=10)
        self.counted: _CountingTls | None = None
        if count_records:
            self.counted = _CountingTls(raw, ctx)
            self.sock: ssl.SSLSocket | _CountingTls = self.counted
        else:
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        # Sends what it is told, malformed or not.
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        cls = _Unlimited if unlimited else _Client
        self.conn = cls(config=config)
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(2**24)
        self.answers: dict[int, Answer] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.write_failed = False
        self.authority = f"localhost:{stack.port}".encode()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.write_failed:
            try:
                self.sock.sendall(data)
            except OSError:
                # The server closed on us (a flood test); what it sent is still read.
                self.write_failed = True

    def request(
        self,
        path: str,
        *,
        method: bytes = b"GET",
        extra: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        end: bool = True,
        flush: bool = True,
    ) -> int:
        sid: int = self.conn.get_next_available_stream_id()
        if headers is None:
            headers = [
                (b":method", method),
                (b":scheme", b"https"),
                (b":authority", self.authority),
                (b":path", path.encode()),
                *(extra or []),
            ]
        self.answers[sid] = Answer()
        self.conn.send_headers(sid, headers, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        if flush:
            self.flush()
        return sid

    def read_until(self, done: object, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout * SCALE
        while not done():  # type: ignore[operator]
            if self.closed or time.monotonic() > deadline:
                return
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                return
            for event in self.conn.receive_data(data):
                self._on(event)
            self.flush()

    def _on(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        answer = self.answers.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and answer is not None:
            headers = dict(event.headers or [])
            answer.status = int(headers[b":status"])
            answer.headers = headers
        elif isinstance(event, h2.events.DataReceived) and answer is not None:
            answer.body += event.data or b""
            self.conn.acknowledge_received_data(event.flow_controlled_length or 0, sid)
        elif isinstance(event, h2.events.StreamEnded) and answer is not None:
            answer.ended = True
        elif isinstance(event, h2.events.StreamReset) and answer is not None:
            answer.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def finished(self, *sids: int) -> bool:
        return all(self.answers[s].ended or self.answers[s].reset is not None for s in sids)

    def wait(self, *sids: int, timeout: float = 15.0) -> list[Answer]:
        self.read_until(lambda: self.finished(*sids), timeout)
        return [self.answers[s] for s in sids]

    def close(self) -> None:
        self.sock.close()


def _good(stack: Stack, path: str = "/echo") -> Answer:
    client = H2Client(stack)
    try:
        (answer,) = client.wait(client.request(path))
        return answer
    finally:
        client.close()


def _curl(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", str(stack.ca), "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# ---------------------------------------------------------------- real clients


def test_curl_lists_http2() -> None:
    out = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=True)
    assert "HTTP2" in out.stdout


def test_curl_http2_two_requests_one_connection(stack: Stack) -> None:
    base = f"https://localhost:{stack.port}"
    fmt = "\n%{http_version} %{http_code} %{num_connects}\n"
    result = _curl(stack, "-w", fmt, f"{base}/echo?first", "-w", fmt, f"{base}/echo?second")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line]
    first, second = json.loads(lines[0]), json.loads(lines[2])
    assert first["target"] == "/echo?first" and second["target"] == "/echo?second"
    assert first["method"] == "GET" and first["version"] == "1.1"  # pooled HTTP/1.1 upstream
    sent = {n.lower(): v for n, v in first["headers"]}
    assert sent["host"] == "localhost"
    assert sent["x-forwarded-proto"] == "https"
    # HTTP/2 both times; the second request opened no new connection.
    assert lines[1] == "2 200 1" and lines[3] == "2 200 0", lines


def test_curl_post_body(stack: Stack, tmp_path: Path) -> None:
    body = os.urandom(1024 * 1024 + 17)
    path = tmp_path / "body.bin"
    path.write_bytes(body)
    url = f"https://localhost:{stack.port}/echo"
    result = _curl(stack, "--data-binary", f"@{path}", "-H", "Content-Type: x/y", url)
    assert result.returncode == 0, result.stderr
    echoed = json.loads(result.stdout)
    assert echoed["method"] == "POST"
    assert echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_curl_post_chunked_body(stack: Stack) -> None:
    # No content-length: the body is streamed upstream chunked.
    url = f"https://localhost:{stack.port}/echo"
    body = b"x" * 300_000
    proc = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", str(stack.ca), "-T", "-", "-X", "POST", url],
        input=body,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    echoed = json.loads(proc.stdout)
    assert echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("chunked", ["0", "1"])
def test_curl_large_response_through_flow_control(
    stack: Stack, tmp_path: Path, chunked: str
) -> None:
    size = 8 * 1024 * 1024
    out = tmp_path / "big.bin"
    url = f"https://localhost:{stack.port}/big?bytes={size}&chunked={chunked}"
    result = _curl(stack, "-o", str(out), "-w", "%{http_version} %{http_code}", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2 200"
    assert out.read_bytes() == big_pattern(size)


def test_curl_head(stack: Stack) -> None:
    result = _curl(stack, "-I", f"https://localhost:{stack.port}/big?bytes=1234")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/2 200")
    assert "content-length: 1234" in result.stdout.lower()


def test_listener_without_http2_offers_http11(stack: Stack) -> None:
    url = f"https://localhost:{stack.h1_port}/echo"
    result = _curl(stack, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", url)
    assert result.stdout == "1.1 200", result.stderr


def test_h2load_100_concurrent_streams(stack: Stack) -> None:
    n = int(2000 * min(SCALE, 5))
    result = run_h2load(f"https://127.0.0.1:{stack.port}/", n, 4, 100)
    assert (result.succeeded, result.failed, result.errored) == (n, 0, 0), result.stdout
    assert f"status codes: {n} 2xx" in result.stdout


def test_the_worker_serves_http2_on_the_libraries_this_build_selects(stack: Stack) -> None:
    """Where the Cython build of h2, hpack and hyperframe is made and current (`make
    accel`; ferryman/_lib_accel.py), a worker serving HTTP/2 has it loaded; under
    FERRYMAN_PURE=1 (the pure run of this suite), or without a build, it has not."""
    assert _good(stack).status == 200
    workers = wait_for_children(stack.proxy.proc.pid, 1)
    build = os.path.join(LIBS_DIR, "h2", "connection")
    mapped = [pid for pid in workers if build in Path(f"/proc/{pid}/maps").read_text()]
    if build_state() == "current" and os.environ.get("FERRYMAN_PURE") != "1":
        assert mapped == workers
    else:
        assert mapped == []


# ---------------------------------------------------------------- the h2 client


def test_100_concurrent_streams_one_connection(stack: Stack) -> None:
    client = H2Client(stack)
    try:
        sids = {}
        for i in range(100):
            # Some wait upstream, so that many streams are in flight at once.
            path = f"/slow?ms=200&i={i}" if i % 10 == 0 else f"/echo?i={i}"
            sids[client.request(path, flush=False)] = (i, path)
        client.flush()
        answers = client.wait(*sids, timeout=30)
        for (i, path), answer in zip(sids.values(), answers, strict=True):
            assert answer.status == 200 and answer.ended, (i, answer)
            if path.startswith("/echo"):
                assert json.loads(answer.body)["target"] == path
            else:
                assert answer.body.strip() == stack.backend.uuid.encode()
    finally:
        client.close()


def test_answers_finished_in_one_turn_leave_in_one_write(stack: Stack) -> None:
    """Fifty requests in one TLS record are answered (a `return`, no upstream) while the
    proxy handles that one read: their frames leave together, in a few TLS records,
    not one write (and one record) per stream."""
    client = H2Client(stack, count_records=True)
    counted = client.counted
    assert counted is not None
    try:
        # Settings, their acknowledgements and the session tickets go out first.
        (first,) = client.wait(client.request("/fixed"))
        assert first.status == 200
        counted.records = 0
        sids = [client.request(f"/fixed?i={i}", flush=False) for i in range(50)]
        client.flush()
        answers = client.wait(*sids)
        assert all(a.status == 200 and a.ended and bytes(a.body) == b"fixed" for a in answers)
        assert 1 <= counted.records <= 2, counted.records
    finally:
        client.close()


def test_post_with_content_length_and_window_backpressure(stack: Stack) -> None:
    # Larger than the 64 KiB stream window: it goes through only if the proxy hands
    # the window back as the upstream takes the body.
    body = os.urandom(700_000)
    client = H2Client(stack)
    try:
        sid = client.request(
            "/echo", method=b"POST", extra=[(b"content-length", b"%d" % len(body))], end=False
        )
        sent = 0
        while sent < len(body):
            window = client.conn.local_flow_control_window(sid)
            if window <= 0:
                client.read_until(lambda: client.conn.local_flow_control_window(sid) > 0, 10)
                assert client.conn.local_flow_control_window(sid) > 0, "window never reopened"
                continue
            size = min(window, client.conn.max_outbound_frame_size, len(body) - sent)
            client.conn.send_data(
                sid, body[sent : sent + size], end_stream=sent + size == len(body)
            )
            sent += size
            client.flush()
        (answer,) = client.wait(sid)
        assert answer.status == 200
        assert json.loads(answer.body)["body_sha256"] == hashlib.sha256(body).hexdigest()
    finally:
        client.close()


_MALFORMED = {
    "uppercase name": [(b"X-Upper", b"1")],
    "connection field": [(b"connection", b"keep-alive")],
    "transfer-encoding": [(b"transfer-encoding", b"chunked")],
    "te not trailers": [(b"te", b"gzip")],
    "pseudo after regular": [(b"x-a", b"1"), (b":foo", b"bar")],
    "value with CR": [(b"x-a", b"a\rb")],
    "host differs": [(b"host", b"elsewhere.test")],
}


@pytest.mark.parametrize("case", sorted(_MALFORMED))
def test_malformed_request_is_reset_and_connection_lives(stack: Stack, case: str) -> None:
    client = H2Client(stack)
    try:
        bad = client.request("/echo", extra=_MALFORMED[case])
        good = client.request("/echo?after")
        bad_answer, good_answer = client.wait(bad, good)
        assert bad_answer.reset == ErrorCodes.PROTOCOL_ERROR and bad_answer.status == 0
        assert good_answer.status == 200 and good_answer.ended
        assert client.goaway is None
    finally:
        client.close()


@pytest.mark.parametrize("missing", [b":path", b":method", b":scheme"])
def test_missing_pseudo_header_is_reset(stack: Stack, missing: bytes) -> None:
    client = H2Client(stack)
    try:
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", client.authority),
            (b":path", b"/echo"),
        ]
        sid = client.request("", headers=[h for h in headers if h[0] != missing])
        (answer,) = client.wait(sid)
        assert answer.reset == ErrorCodes.PROTOCOL_ERROR
    finally:
        client.close()


def test_body_longer_than_content_length_is_reset(stack: Stack) -> None:
    client = H2Client(stack)
    try:
        sid = client.request(
            "/echo", method=b"POST", extra=[(b"content-length", b"5")], body=b"0123456789"
        )
        (answer,) = client.wait(sid)
        assert answer.reset == ErrorCodes.PROTOCOL_ERROR
        assert _good(stack).status == 200
    finally:
        client.close()


def test_body_shorter_than_content_length_is_reset(stack: Stack) -> None:
    client = H2Client(stack)
    try:
        sid = client.request(
            "/echo", method=b"POST", extra=[(b"content-length", b"50")], body=b"short"
        )
        (answer,) = client.wait(sid)
        assert answer.reset == ErrorCodes.PROTOCOL_ERROR
    finally:
        client.close()


def test_connect_is_refused_with_405(stack: Stack) -> None:
    client = H2Client(stack)
    try:
        headers = [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]
        sid = client.request("", headers=headers)
        (answer,) = client.wait(sid)
        assert answer.status == 405 and answer.ended
    finally:
        client.close()


def test_too_many_fields_is_431(stack: Stack) -> None:
    client = H2Client(stack)
    try:
        extra = [(b"x-f%d" % i, b"v") for i in range(150)]  # ClientLimits.headers is 100
        (answer,) = client.wait(client.request("/echo", extra=extra))
        assert answer.status == 431
    finally:
        client.close()


def test_max_concurrent_streams_refused(stack: Stack) -> None:
    client = H2Client(stack, unlimited=True)
    try:
        client.read_until(lambda: client.conn.remote_settings.max_concurrent_streams == 128, 5)
        assert client.conn.remote_settings.max_concurrent_streams == 128
        slow = [client.request("/slow?ms=1500", flush=False) for _ in range(128)]
        extra = client.request("/echo?one-too-many", flush=False)
        client.flush()
        (refused,) = client.wait(extra, timeout=10)
        assert refused.reset == ErrorCodes.REFUSED_STREAM
        answers = client.wait(*slow, timeout=30)
        assert [a.status for a in answers] == [200] * 128
        # Once they are done, new streams are served again on the same connection.
        (after,) = client.wait(client.request("/echo?after"))
        assert after.status == 200
    finally:
        client.close()


def test_rapid_reset_flood_gets_goaway_while_others_are_served(stack: Stack) -> None:
    normal = H2Client(stack)
    attacker = H2Client(stack)
    try:
        for _ in range(6):
            for _ in range(100):
                sid = attacker.request("/slow?ms=1000", flush=False)
                attacker.conn.reset_stream(sid, ErrorCodes.CANCEL)
            try:
                attacker.flush()
            except OSError:
                break
            (answer,) = normal.wait(normal.request("/echo?during"))
            assert answer.status == 200
        attacker.read_until(lambda: attacker.goaway is not None, 10)
        assert attacker.goaway is not None
        assert attacker.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        attacker.read_until(lambda: False, 5)
        assert attacker.closed  # the connection is closed after the GOAWAY
        (answer,) = normal.wait(normal.request("/echo?after"))
        assert answer.status == 200 and normal.goaway is None
        assert _good(stack).status == 200
    finally:
        normal.close()
        attacker.close()


def test_ping_flood_gets_goaway(stack: Stack) -> None:
    client = H2Client(stack)
    try:
        for i in range(3000):
            client.conn.ping(b"%08d" % i)
            if i % 200 == 0:
                try:
                    client.flush()
                except OSError:
                    break
        with contextlib.suppress(OSError):
            client.flush()
        client.read_until(lambda: client.goaway is not None, 10)
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        client.close()


def test_settings_flood_gets_goaway(stack: Stack) -> None:
    client = H2Client(stack)
    try:
        for i in range(3000):
            client.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 4096 + i})
            if i % 200 == 0:
                try:
                    client.flush()
                except OSError:
                    break
        client.read_until(lambda: client.goaway is not None, 10)
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        client.close()


def test_continuation_flood_closes_the_connection(stack: Stack) -> None:
    client = H2Client(stack)
    try:
        block = client.conn.encoder.encode(
            [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/echo")]
        )
        headers = HeadersFrame(1, data=block)  # no END_HEADERS: CONTINUATION must follow
        filler = client.conn.encoder.encode([(b"x-filler", b"y" * 8000)])
        frames = [headers.serialize()]
        frames += [ContinuationFrame(1, data=filler).serialize() for _ in range(200)]
        try:
            for frame in frames:
                client.sock.sendall(frame)
        except OSError:
            pass  # closed on us mid-flood: what we want
        client.read_until(lambda: False, 5)
        assert client.closed
        # The GOAWAY may be lost to the reset of a socket closed with unread bytes.
        assert client.goaway is None or client.goaway.error_code != ErrorCodes.NO_ERROR
        assert _good(stack).status == 200
    finally:
        client.close()


# ---------------------------------------------------------------- graceful shutdown


def test_graceful_shutdown_sends_goaway_and_finishes_streams(stack: Stack, tmp_path: Path) -> None:
    proxy, port, _ = _start(tmp_path / "proxy", stack.cert, stack.backend)
    try:
        own = Stack(stack.ca, stack.cert, proxy, port, 0, stack.backend)
        client = H2Client(own)
        try:
            (warm,) = client.wait(client.request("/echo"))
            assert warm.status == 200
            slow = client.request("/slow?ms=1500")
            time.sleep(0.3)  # the request is in flight upstream
            os.kill(proxy.pid, signal.SIGTERM)
            client.read_until(lambda: client.goaway is not None, 10)
            assert client.goaway is not None
            assert client.goaway.error_code == ErrorCodes.NO_ERROR
            assert client.goaway.last_stream_id == slow
            (answer,) = client.wait(slow)
            assert answer.status == 200 and answer.ended
            assert answer.body.strip() == stack.backend.uuid.encode()
            client.read_until(lambda: False, 10)
            assert client.closed  # closed once its last stream was done
        finally:
            client.close()
    finally:
        proxy.stop()


def test_connection_whose_handshake_ends_during_a_reload_is_served(
    stack: Stack, tmp_path: Path
) -> None:
    """A connection the old worker accepted before a reload, whose TLS handshake (and so
    its HTTP/2 connection) only starts once that worker drains: its request is answered,
    then GOAWAY sends the client elsewhere (it used to be aborted unanswered)."""
    proxy, port, _ = _start(tmp_path / "proxy", stack.cert, stack.backend)
    try:
        own = Stack(stack.ca, stack.cert, proxy, port, 0, stack.backend)
        keeper = H2Client(own)  # a slow stream keeps the old worker alive while it drains
        late = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            slow = keeper.request("/slow?ms=3000")
            time.sleep(0.3)  # both accepted by the old worker; no TLS on `late` yet
            os.kill(proxy.pid, signal.SIGHUP)
            keeper.read_until(lambda: keeper.goaway is not None, 10)  # the old one drains
            assert keeper.goaway is not None and keeper.goaway.last_stream_id == slow
            client = H2Client(own, raw=late)
            try:
                sid = client.request("/")
                (answer,) = client.wait(sid, timeout=10)
                assert answer.status == 200 and answer.ended, answer
                assert answer.body.strip() == stack.backend.uuid.encode()
                client.read_until(lambda: client.goaway is not None, 5)
                assert client.goaway is not None
                assert client.goaway.error_code == ErrorCodes.NO_ERROR
                assert client.goaway.last_stream_id == sid
                client.read_until(lambda: False, 5)
                assert client.closed  # closed once its stream was done
            finally:
                client.close()
            (kept,) = keeper.wait(slow)
            assert kept.status == 200 and kept.ended
            assert _good(own).status == 200  # the new worker serves
        finally:
            late.close()
            keeper.close()
    finally:
        proxy.stop()


def test_client_goaway_lets_open_streams_finish(stack: Stack) -> None:
    client = H2Client(stack)
    try:
        slow = client.request("/slow?ms=300")
        client.conn.close_connection()  # GOAWAY(NO_ERROR) from the client
        client.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        client.flush()
        (answer,) = client.wait(slow)
        assert answer.status == 200 and answer.ended
        client.read_until(lambda: False, 5)
        assert client.closed  # and then the server closes
    finally:
        client.close()


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (b"\x80", "index 0"),
        (b"\x82\xff\x80\x80\x80\x80\x80\x01", "an index of 6 octets more"),
        (b"\x82\x04\x84\xff\xff\xff\xfc", "EOS in a Huffman-coded :path"),
        (b"\x82\x3f\xe1\x1f", "a table size update after a field"),
    ],
)
def test_a_header_block_that_does_not_decode_is_a_compression_error(
    stack: Stack, block: bytes, why: str
) -> None:
    # RFC 9113 4.3: a connection error of type COMPRESSION_ERROR (the HPACK state is
    # lost), while the next connection is served.
    client = H2Client(stack)
    try:
        client.sock.sendall(HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize())
        client.read_until(lambda: client.goaway is not None and client.closed, 5)
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.COMPRESSION_ERROR
        assert client.closed
        assert _good(stack).status == 200
    finally:
        client.close()


def test_header_list_over_the_limit_ends_the_connection(stack: Stack) -> None:
    # SETTINGS_MAX_HEADER_LIST_SIZE is ClientLimits.header_bytes (64 KiB), as an
    # HTTP/1.1 head; a decoded block over it is an HPACK bomb to h2 (connection error).
    client = H2Client(stack)
    try:
        client.read_until(lambda: client.conn.remote_settings.max_header_list_size is not None, 5)
        assert client.conn.remote_settings.max_header_list_size == 64 * 1024
        sid = client.request("/echo", extra=[(b"x-big", b"v" * 70_000)])
        client.read_until(lambda: client.goaway is not None or client.finished(sid), 10)
        assert client.answers[sid].status == 0
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert _good(stack).status == 200
    finally:
        client.close()
