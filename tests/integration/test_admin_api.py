"""The admin API on its own listener, against a real master with 2 workers and 3 echo
backends: every endpoint, drain and weight changes seen by both workers, cache purge,
reload, the event and trace streams, and bearer-token authentication (on 127.0.0.2)."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.rawhttp import RawClient

TOKEN = "t0ken-for-tests"
# Workers apply overrides on their sweeper tick and publish counters on it (at most once
# a second). The config's 3 s header timeout makes the tick 0.3 s (a tenth of the
# shortest timeout), so this wait covers five ticks and a counters' flush with room to
# spare on a loaded machine (with the default 1 s tick it covered one, just).
TICK_WAIT = 1.6


@dataclass
class Stack:
    backends: list[EchoBackend]
    proxy: ProxyProcess
    admin_host: str
    admin_port: int
    cache_dir: Path
    token: str | None = None

    def by_uuid(self) -> dict[str, str]:
        return {b.uuid: b.address for b in self.backends}


def config_text(
    port: int, backends: list[EchoBackend], admin: str, cache_dir: Path, extra_admin: str = ""
) -> str:
    servers = "\n".join(f'      - {{address: "{b.address}"}}' for b in backends)
    return f"""workers: 2
timeouts: {{client_header: 3s}}
access_log: {{path: null}}
admin: {{listen: "{admin}"{extra_admin}}}
trace: {{header: X-Ferryman-Trace}}
cache_zones:
  - {{name: disk, path: {cache_dir}, max_size: 16m, memory_size: 4m}}
upstreams:
  app:
    balance: round_robin
    servers:
{servers}
servers:
  - listen: "127.0.0.1:{port}"
    routes:
      - path: /
        upstream: app
      - path: /cache
        upstream: app
        cache: {{zone: disk}}
"""


def start_stack(workdir: Path, admin_host: str, token: str | None) -> Stack:
    backends = [start_echo(workdir / "logs") for _ in range(3)]
    port = free_port()
    admin_port = free_port(admin_host)
    cache_dir = workdir / "cache"
    extra = f', token: "{token}"' if token else ""
    text = config_text(port, backends, f"{admin_host}:{admin_port}", cache_dir, extra)
    try:
        proxy = start_proxy(workdir / "proxy", text, port)
        _wait_admin(admin_host, admin_port)
    except BaseException:
        for b in backends:
            b.stop()
        raise
    return Stack(backends, proxy, admin_host, admin_port, cache_dir, token)


def _wait_admin(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"admin listener {host}:{port} did not open")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("admin"), "127.0.0.1", None)
    try:
        yield s
    finally:
        s.proxy.stop()
        for b in s.backends:
            b.stop()


# ---------------------------------------------------------------- helpers


def admin(
    s: Stack,
    method: str,
    path: str,
    body: object = None,
    *,
    token: str | None = None,
    send_token: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {s.admin_host}", "Connection: close"]
    tok = token if token is not None else s.token
    if send_token and tok:
        lines.append(f"Authorization: Bearer {tok}")
    if method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + data
    with socket.create_connection((s.admin_host, s.admin_port), timeout=10) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {n.lower(): v.strip(" ") for n, _, v in (f.partition(":") for f in fields)}
    return int(status_line.split(" ")[1]), headers, payload


def admin_json(s: Stack, method: str, path: str, body: object = None) -> tuple[int, object]:
    status, _, payload = admin(s, method, path, body)
    return status, json.loads(payload)


def hit(s: Stack, n: int, path: str = "/", headers: tuple[bytes, ...] = ()) -> list[bytes]:
    """`n` requests, each on a new connection (so both workers take some)."""
    bodies = []
    for _ in range(n):
        with RawClient(s.proxy.port, timeout=10) as client:
            extra = b"".join(h + b"\r\n" for h in headers)
            client.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
            resp = client.read_response()
            assert resp.status == 200, resp
            bodies.append(resp.body)
    return bodies


def served_by(s: Stack, n: int) -> Counter[str]:
    names = s.by_uuid()
    return Counter(names[body.decode()] for body in hit(s, n))


def peers(s: Stack) -> dict[str, dict[str, object]]:
    status, data = admin_json(s, "GET", "/api/upstreams")
    assert status == 200
    assert isinstance(data, dict)
    (app,) = data["upstreams"]
    assert app["name"] == "app"
    return {p["address"]: p for p in app["peers"]}


def read_sse(s: Stack, path: str, seconds: float, during: object = None) -> str:
    """Read an event stream for `seconds` (calling `during()` once it is open)."""
    sock = socket.create_connection((s.admin_host, s.admin_port), timeout=seconds + 5)
    auth = f"Authorization: Bearer {s.token}\r\n" if s.token else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    sock.settimeout(0.3)
    out = b""
    deadline = time.monotonic() + seconds
    called = False
    try:
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                chunk = b"-"
            if not chunk:
                break
            if chunk != b"-":
                out += chunk
            if not called and b"\r\n\r\n" in out and callable(during):
                called = True
                during()
    finally:
        sock.close()
    return out.decode("utf-8", "replace")


def events(text: str, name: str) -> list[object]:
    found = []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        if f"event: {name}" in lines:
            data = "".join(line[6:] for line in lines if line.startswith("data: "))
            found.append(json.loads(data))
    return found


# ---------------------------------------------------------------- endpoints


def test_config_is_the_native_dump(stack: Stack) -> None:
    status, headers, body = admin(stack, "GET", "/api/config")
    assert status == 200
    assert headers["content-type"].startswith("application/yaml")
    doc = yaml.safe_load(body)
    servers = doc["upstreams"]["app"]["servers"]
    addresses = [s if isinstance(s, str) else s["address"] for s in servers]
    assert addresses == [b.address for b in stack.backends]
    assert doc["admin"]["listen"] == f"127.0.0.1:{stack.admin_port}"
    assert doc["workers"] == 2


def test_upstreams_report_every_peer(stack: Stack) -> None:
    hit(stack, 12)
    time.sleep(TICK_WAIT)
    view = peers(stack)
    assert set(view) == {b.address for b in stack.backends}
    for p in view.values():
        assert p["state"] == "up"
        assert p["weight"] == p["configured_weight"] == 1
        assert p["fails"] == 0 and p["in_flight"] == 0
        assert p["latency_ms"] is None  # round_robin keeps no latency average
    assert sum(int(p["requests"]) for p in view.values()) >= 12  # type: ignore[call-overload]


def test_drain_stops_traffic_across_both_workers(stack: Stack) -> None:
    victim = stack.backends[0].address
    status, data = admin_json(stack, "POST", f"/api/upstreams/app/peers/{victim}/drain")
    assert status == 200 and data == {
        "upstream": "app",
        "address": victim,
        "draining": True,
        "weight": 0,
    }
    time.sleep(TICK_WAIT)
    assert peers(stack)[victim]["state"] == "draining"
    counts = served_by(stack, 40)
    assert counts[victim] == 0, counts
    assert len(counts) == 2  # the others share the load
    status, _ = admin_json(stack, "POST", f"/api/upstreams/app/peers/{victim}/undrain")
    assert status == 200
    time.sleep(TICK_WAIT)
    assert peers(stack)[victim]["state"] == "up"
    assert served_by(stack, 30)[victim] > 0


def test_both_workers_serve(stack: Stack) -> None:
    hit(stack, 20)
    time.sleep(TICK_WAIT)
    status, data = admin_json(stack, "GET", "/api/requests/recent?n=20")
    assert status == 200 and isinstance(data, dict)
    assert {r["worker"] for r in data["requests"]} == {0, 1}


def test_weight_change_shifts_distribution(stack: Stack) -> None:
    heavy = stack.backends[1].address
    status, data = admin_json(
        stack, "POST", f"/api/upstreams/app/peers/{heavy}/weight", {"weight": 8}
    )
    assert status == 200 and isinstance(data, dict) and data["weight"] == 8
    try:
        time.sleep(TICK_WAIT)
        view = peers(stack)
        assert view[heavy]["weight"] == 8 and view[heavy]["configured_weight"] == 1
        counts = served_by(stack, 60)
        # Smooth weighted round-robin in each worker: 8 of every 10 picks.
        assert counts[heavy] >= 40, counts
    finally:
        admin_json(stack, "POST", f"/api/upstreams/app/peers/{heavy}/weight", {"weight": 1})
        time.sleep(TICK_WAIT)
    counts = served_by(stack, 30)
    assert counts[heavy] <= 16, counts


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/upstreams/app/peers/127.0.0.1:1/drain", None, 404),
        ("/api/upstreams/nope/peers/127.0.0.1:1/drain", None, 404),
        ("/api/upstreams/app/peers/{addr}/weight", {"weight": 0}, 400),
        ("/api/upstreams/app/peers/{addr}/weight", {"weight": "3"}, 400),
        ("/api/upstreams/app/peers/{addr}/weight", {"weight": True}, 400),
        ("/api/upstreams/app/peers/{addr}/explode", None, 404),
        ("/api/cache/purge", {"zone": "nope", "key": "k"}, 400),
        ("/api/cache/purge", {"zone": "disk"}, 400),
        ("/api/cache/purge", {"zone": "disk", "key": "a", "prefix": "b"}, 400),
        ("/api/nothing", None, 404),
    ],
)
def test_bad_requests_are_refused(stack: Stack, path: str, body: object, status: int) -> None:
    path = path.replace("{addr}", stack.backends[0].address)
    got, _, payload = admin(stack, "POST", path, body)
    assert got == status, payload
    assert "error" in json.loads(payload)


def test_wrong_method(stack: Stack) -> None:
    assert admin(stack, "POST", "/api/upstreams")[0] == 405
    assert (
        admin(stack, "GET", f"/api/upstreams/app/peers/{stack.backends[0].address}/drain")[0] == 405
    )


def test_cache_purge(stack: Stack) -> None:
    path = "/cache?id=purge1&cc=max-age%3D60"

    def cache_status() -> str:
        with RawClient(stack.proxy.port, timeout=10) as client:
            client.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            resp = client.read_response()
            assert resp.status == 200
            return resp.header(b"cache-status").decode()

    cache_status()
    assert "hit" in cache_status()  # stored on disk: either worker finds it
    status, data = admin_json(
        stack, "POST", "/api/cache/purge", {"zone": "disk", "prefix": "httpapp/cache?id=purge1"}
    )
    assert status == 202 and isinstance(data, dict)
    assert data["removed_from_disk"] >= 1
    time.sleep(TICK_WAIT)  # the workers drop their memory copies on their tick
    assert "hit" not in cache_status()


def test_recent_requests(stack: Stack) -> None:
    hit(stack, 3, "/echo/recent-probe")
    time.sleep(TICK_WAIT)  # records reach the shared ring on the worker's tick
    status, data = admin_json(stack, "GET", "/api/requests/recent?n=3")
    assert status == 200 and isinstance(data, dict)
    assert len(data["requests"]) == 3
    # The newest few, not exactly three: the workers' rings are merged by end time (to
    # the millisecond), and the previous test's last request may end as late as these.
    status, data = admin_json(stack, "GET", "/api/requests/recent?n=6")
    assert status == 200 and isinstance(data, dict)
    rows = [r for r in data["requests"] if r["target"] == "/echo/recent-probe"]
    assert len(rows) == 3
    addresses = {b.address for b in stack.backends}
    for row in rows:
        assert row["method"] == "GET" and row["target"] == "/echo/recent-probe"
        assert row["status"] == 200 and row["client"] == "127.0.0.1"
        assert row["peer"] in addresses and row["upstream"] == "app"
        assert row["duration"] >= 0 and abs(row["time"] - time.time()) < 30
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    assert admin(stack, "GET", "/api/requests/recent?n=0")[0] == 400
    assert admin(stack, "GET", "/api/requests/recent?n=+5")[0] == 400


def test_event_stream(stack: Stack) -> None:
    text = read_sse(stack, "/api/events", 2.6, during=lambda: hit(stack, 4, "/echo/sse-probe"))
    assert "text/event-stream" in text.split("\r\n\r\n")[0]
    snapshots = events(text, "snapshot")
    assert len(snapshots) >= 2
    first = snapshots[0]
    assert isinstance(first, dict) and first["upstreams"][0]["name"] == "app"
    tail = [r for batch in events(text, "requests") for r in batch]  # type: ignore[union-attr]
    assert [r["target"] for r in tail if r["target"] == "/echo/sse-probe"] == [
        "/echo/sse-probe"
    ] * 4


def test_trace_header_and_stream(stack: Stack) -> None:
    plain = RawClient(stack.proxy.port, timeout=10)
    with plain:
        plain.send(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        assert plain.read_response().header(b"x-ferryman-trace") is None
    seen: list[str] = []

    def traced() -> None:
        with RawClient(stack.proxy.port, timeout=10) as client:
            client.send(b"GET /traced HTTP/1.1\r\nHost: x\r\nX-Ferryman-Trace: 1\r\n\r\n")
            seen.append(client.read_response().header(b"x-ferryman-trace").decode())

    text = read_sse(stack, "/api/trace", 1.5, during=traced)
    (line,) = seen
    fields = dict(part.split("=", 1) for part in line.split("; "))
    assert fields["location"] == "/" and fields["retries"] == "0"
    assert fields["balancer"].startswith("round_robin(")
    assert fields["peer"] in {b.address for b in stack.backends}
    assert fields["cache"] == "-" and fields["tried"] == "-"
    (published,) = events(text, "trace")
    assert isinstance(published, dict)
    assert published["target"] == "/traced" and published["trace"] == line


def test_reload_through_the_api(stack: Stack) -> None:
    text = stack.proxy.config_path.read_text()
    stack.proxy.config_path.write_text(
        text.replace("workers: 2", "workers: 2\nmax_connections: 777")
    )
    try:
        status, _ = admin_json(stack, "POST", "/api/reload")
        assert status == 202
        deadline = time.monotonic() + 15
        doc: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                code, _, body = admin(stack, "GET", "/api/config")
            except OSError:
                code = 0
            if code == 200:
                doc = yaml.safe_load(body)
                if doc.get("max_connections") == 777:
                    break
            time.sleep(0.2)
        assert doc.get("max_connections") == 777
        assert len(hit(stack, 3)) == 3
    finally:
        stack.proxy.config_path.write_text(text)


def test_dashboard_page(stack: Stack) -> None:
    status, headers, body = admin(stack, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"/api/events" in body and b"<script>" in body
    # Self-contained: no external scripts, styles or fonts.
    assert b"src=" not in body and b"href=" not in body


# ---------------------------------------------------------------- token, off loopback


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("admin-token"), "127.0.0.2", TOKEN)
    try:
        yield s
    finally:
        s.proxy.stop()
        for b in s.backends:
            b.stop()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/config"),
        ("GET", "/api/upstreams"),
        ("GET", "/api/requests/recent"),
        ("GET", "/api/events"),
        ("GET", "/api/trace"),
        ("POST", "/api/reload"),
        ("POST", "/api/cache/purge"),
        ("POST", "/api/upstreams/app/peers/x/drain"),
        ("GET", "/api/nothing"),
    ],
)
def test_every_endpoint_needs_the_token(guarded: Stack, method: str, path: str) -> None:
    assert admin(guarded, method, path, send_token=False)[0] == 401
    assert admin(guarded, method, path, token="t0ken-for-test")[0] == 401
    assert admin(guarded, method, path, token=TOKEN + "x")[0] == 401


def test_token_opens_the_api(guarded: Stack) -> None:
    status, _, body = admin(guarded, "GET", "/api/config")
    assert status == 200
    assert TOKEN.encode() not in body  # the dump hides the secret
    assert yaml.safe_load(body)["admin"]["token"] == "<redacted>"
    victim = guarded.backends[2].address
    status, _, _ = admin(guarded, "POST", f"/api/upstreams/app/peers/{victim}/drain")
    assert status == 200
    time.sleep(TICK_WAIT)
    assert peers(guarded)[victim]["state"] == "draining"
    assert served_by(guarded, 12)[victim] == 0
    # The dashboard page itself is open: it holds no data and asks for the token.
    assert admin(guarded, "GET", "/", send_token=False)[0] == 200


def test_trace_needs_the_token_as_its_value(guarded: Stack) -> None:
    def trace_field(value: bytes) -> bytes | None:
        with RawClient(guarded.proxy.port, timeout=10) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Ferryman-Trace: " + value + b"\r\n\r\n")
            return client.read_response().header(b"x-ferryman-trace")

    assert trace_field(b"1") is None
    assert trace_field(TOKEN.encode()[:-1]) is None
    field = trace_field(TOKEN.encode())
    assert field is not None and b"balancer=round_robin(" in field
