"""The reverse proxy end to end: real echo backend processes, a real `ferryman run`
master with its workers, real HTTP clients over loopback sockets."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from support.memory import wait_for_children
from support.procs import EchoBackend, EchoFactory, ProxyProcess, free_port, proxy_config

ProxyFactory = Callable[..., ProxyProcess]


def get(
    port: int,
    path: str = "/",
    conn: http.client.HTTPConnection | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        if own:
            c.close()


def read_length_delimited(f: io.BufferedReader) -> bytes:
    """One Content-Length-framed response off a buffered stream; returns its body."""
    length = None
    status = f.readline()
    assert status.startswith(b"HTTP/1.1 200"), status
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value.strip())
    assert length is not None
    return f.read(length)


def start(proxy: ProxyFactory, backends: list[EchoBackend], **kw: object) -> ProxyProcess:
    port = free_port()
    return proxy(proxy_config(port, [b.address for b in backends], **kw), port)  # type: ignore[arg-type]


def keep_getting(
    port: int, stop: threading.Event, statuses: Counter[int], served: Counter[str]
) -> None:
    """GET / on one kept-alive connection until `stop`; counts statuses (-1: a broken
    connection) and, for 200s, which backend answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not stop.is_set():
        try:
            status, body = get(port, conn=conn)
        except (http.client.HTTPException, OSError):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            statuses[-1] += 1
            continue
        statuses[status] += 1
        if status == 200:
            served[body.decode()] += 1
    conn.close()


def test_round_robin_is_exact_over_six_peers(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    backends = echo_server(6)
    p = start(proxy, backends)
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    seen = [get(p.port, conn=conn)[1].decode() for _ in range(60)]
    counts = Counter(seen)
    assert set(counts) == {b.uuid for b in backends}
    assert all(n == 10 for n in counts.values()), counts
    # Strict rotation: each window of six consecutive answers has every peer once.
    for i in range(0, 60, 6):
        assert len(set(seen[i : i + 6])) == 6


def test_weighted_round_robin_follows_weights(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    a, b = echo_server(2)
    port = free_port()
    text = proxy_config(port, [a.address, b.address]).replace(
        f'{{address: "{a.address}"}}', f'{{address: "{a.address}", weight: 3}}'
    )
    p = proxy(text, port)
    seen = [get(p.port)[1].decode() for _ in range(40)]
    assert Counter(seen) == {a.uuid: 30, b.uuid: 10}


def test_least_conn_favours_the_idle_peer(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    backends = echo_server(3)
    p = start(proxy, backends, balance="least_conn")
    # Occupy one peer with slow requests, then watch where quick ones go.
    slow_peer: list[str] = []

    def slow() -> None:
        slow_peer.append(json.loads(get(p.port, "/echo")[1])["uuid"])  # warm, then
        get(p.port, "/slow?ms=1500")

    # Find which peer the slow request lands on via its own echo: use /slow directly.
    results: list[tuple[int, bytes]] = []
    threads = [
        threading.Thread(target=lambda: results.append(get(p.port, "/slow?ms=1500")))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)
    quick = Counter(get(p.port)[1].decode() for _ in range(30))
    for t in threads:
        t.join()
    busy = {body.decode() for _, body in results}
    assert len(busy) == 2, "two concurrent slow requests must go to two different peers"
    idle = ({b.uuid for b in backends} - busy).pop()
    # While two peers each hold a slow request, every quick request goes to the idle one.
    assert quick == {idle: 30}


def test_backend_killed_under_load_is_skipped(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    backends = echo_server(3)
    p = start(proxy, backends, server_params="max_fails: 1, fail_timeout: 30s")
    victim = backends[0]
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    served_by: Counter[str] = Counter()

    threads = [
        threading.Thread(target=keep_getting, args=(p.port, stop, statuses, served_by))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    victim.proc.popen.kill()  # SIGKILL: connections reset, port refuses
    victim.proc.popen.wait()
    time.sleep(0.3)
    served_by.clear()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert set(statuses) == {200}, statuses  # GETs kept succeeding: retried on other peers
    assert victim.uuid not in served_by
    assert set(served_by) == {backends[1].uuid, backends[2].uuid}
    assert "failed (connect)" in p.output() or "failed (reset)" in p.output()


def test_upstream_connections_are_kept_alive(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    (backend,) = echo_server(1)
    p = start(proxy, [backend])
    for _ in range(20):
        assert get(p.port)[0] == 200
    # The backend counts requests; the number of upstream TCP connections is visible
    # from its side in /proc: count established sockets to the backend's port.
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{backend.port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert len(out.splitlines()) == 1, out


def test_headers_forwarded_and_hop_by_hop_removed(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    (backend,) = echo_server(1)
    p = start(proxy, [backend])
    status, body = get(
        p.port,
        "/echo?x=1",
        headers={
            "Host": "example.test:8080",
            "Connection": "keep-alive, X-Private",
            "X-Private": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "X-Forwarded-For": "203.0.113.7",
            "X-Custom": "kept",
        },
    )
    assert status == 200
    seen = json.loads(body)
    names = [n.lower() for n, _ in seen["headers"]]
    got = {n.lower(): v for n, v in seen["headers"]}
    for hop in ("connection", "keep-alive", "te", "x-private"):
        assert hop not in names
    assert got["host"] == "example.test"  # $host: the client's, without the port
    assert got["x-custom"] == "kept"
    assert got["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == "example.test:8080"
    assert names.count("host") == 1
    assert seen["target"] == "/echo?x=1"


def test_host_header_configurable(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    (backend,) = echo_server(1)
    p = start(
        proxy,
        [backend],
        route_params='host_header: "backend.internal"\n'
        'set_headers: {X-Via-Ferryman: "$remote_addr $request_method"}',
    )
    seen = json.loads(get(p.port, "/echo")[1])
    got = {n.lower(): v for n, v in seen["headers"]}
    assert got["host"] == "backend.internal"
    assert got["x-via-ferryman"] == "127.0.0.1 GET"


def test_pipelined_requests_answered_in_order(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    import socket

    backends = echo_server(2)
    p = start(proxy, backends)
    paths = ["/slow?ms=300", "/echo?n=2", "/slow?ms=10", "/echo?n=4"]
    raw = b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % s.encode() for s in paths)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(raw)
        f = s.makefile("rb")
        bodies = [read_length_delimited(f) for _ in paths]
    assert json.loads(bodies[1])["target"] == "/echo?n=2"
    assert json.loads(bodies[3])["target"] == "/echo?n=4"
    assert bodies[0].decode() in {b.uuid for b in backends}


def test_post_body_streamed_both_framings(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    import hashlib

    (backend,) = echo_server(1)
    p = start(proxy, [backend])
    data = os.urandom(3 * 1024 * 1024 + 17)
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=20)
    conn.request("POST", "/echo", body=data)
    seen = json.loads(conn.getresponse().read())
    assert seen["body_length"] == len(data)
    assert seen["body_sha256"] == hashlib.sha256(data).hexdigest()

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    conn.request(
        "POST",
        "/echo",
        body=chunks(),
        encode_chunked=True,
        headers={"Transfer-Encoding": "chunked"},
    )
    seen = json.loads(conn.getresponse().read())
    assert seen["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert ["Transfer-Encoding", "chunked"] in seen["headers"]


def test_curl_expect_continue_and_http10(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    (backend,) = echo_server(1)
    p = start(proxy, [backend])
    body = "x" * 5000
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            body,
            f"{p.url}/echo",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out)["body_length"] == 5000
    out = subprocess.run(
        ["curl", "-sS", "-0", "-i", f"{p.url}/big?bytes=1000&chunked=1"],
        capture_output=True,
        check=True,
    ).stdout
    head, _, rest = out.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head  # HTTP/1.0 clients get close-delimited bodies
    assert len(rest) == 1000


def test_sigterm_drains_in_flight_requests(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    (backend,) = echo_server(1)
    p = start(proxy, [backend], workers=2)
    result: list[tuple[int, bytes]] = []
    t = threading.Thread(target=lambda: result.append(get(p.port, "/slow?ms=1000")))
    t.start()
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGTERM)
    t.join(10)
    assert result and result[0][0] == 200 and result[0][1].decode() == backend.uuid
    assert p.proc.popen.wait(timeout=10) == 0


def test_master_restarts_a_crashed_worker(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    (backend,) = echo_server(1)
    p = start(proxy, [backend], workers=2)
    # The master binds (and the port answers) before it forks the workers.
    kids = [str(pid) for pid in wait_for_children(p.pid, 2)]
    assert len(kids) == 2
    os.kill(int(kids[0]), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = subprocess.run(
            ["pgrep", "-P", str(p.pid)], capture_output=True, text=True
        ).stdout.split()
        if len(now) == 2 and kids[0] not in now:
            break
        time.sleep(0.05)
    assert len(now) == 2 and kids[0] not in now
    assert all(get(p.port)[0] == 200 for _ in range(10))


def test_worker_connections_cap(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    import socket

    (backend,) = echo_server(1)
    p = start(proxy, [backend], top="worker_connections: 4")
    held = [socket.create_connection(("127.0.0.1", p.port)) for _ in range(4)]
    time.sleep(0.2)
    extra = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    extra.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    try:
        data = extra.recv(100)
    except ConnectionResetError:
        data = b""
    assert data == b""  # over the cap: dropped, like nginx
    for s in held:
        s.close()
    extra.close()
    time.sleep(0.3)
    assert get(p.port)[0] == 200


def _upgrade_origin(listener: socket.socket, answer_101: bool) -> None:
    """A one-connection origin: answers the upgrade, then echoes bytes upper-cased."""
    conn, _ = listener.accept()
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        if not answer_101:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
            return
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-test\r\nConnection: Upgrade\r\n\r\n"
        )
        conn.sendall(b"SERVER-FIRST")
        while data := conn.recv(4096):
            conn.sendall(data.upper())


def test_upgrade_becomes_a_tunnel_after_101(proxy: ProxyFactory) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    origin = threading.Thread(target=_upgrade_origin, args=(listener, True), daemon=True)
    origin.start()
    port = free_port()
    p = proxy(proxy_config(port, [f"127.0.0.1:{listener.getsockname()[1]}"]), port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: x-test\r\nConnection: Upgrade\r\n\r\n")
        data = b""
        while b"SERVER-FIRST" not in data:
            data += s.recv(4096)
        assert data.startswith(b"HTTP/1.1 101 ")
        assert b"Upgrade: x-test" in data
        s.sendall(b"hello tunnel")
        got = b""
        while len(got) < 12:
            got += s.recv(4096)
        assert got == b"HELLO TUNNEL"
    origin.join(5)
    listener.close()


def test_upgrade_refused_stays_http(proxy: ProxyFactory) -> None:
    # No 101: no tunnel, and the connection stays HTTP (kept alive) for the next
    # request (tests/integration/test_websocket.py covers what follows).
    listener = socket.create_server(("127.0.0.1", 0))
    origin = threading.Thread(target=_upgrade_origin, args=(listener, False), daemon=True)
    origin.start()
    port = free_port()
    p = proxy(proxy_config(port, [f"127.0.0.1:{listener.getsockname()[1]}"]), port)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: x-test\r\nConnection: Upgrade\r\n\r\n")
        data = b""
        while not data.endswith(b"no"):
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" not in data
    origin.join(5)
    listener.close()


def test_stock_asyncio_loop(echo_server: EchoFactory, proxy: ProxyFactory) -> None:
    """`--no-uvloop`: the same engine on the standard library's event loop."""
    import hashlib

    backends = echo_server(2)
    port = free_port()
    p = proxy(proxy_config(port, [b.address for b in backends]), port, args=["--no-uvloop"])
    assert {get(p.port)[1].decode() for _ in range(4)} == {b.uuid for b in backends}
    data = os.urandom(300_000)
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    conn.request("POST", "/echo", body=data)
    assert json.loads(conn.getresponse().read())["body_sha256"] == hashlib.sha256(data).hexdigest()
    status, body = get(p.port, "/big?bytes=3000000&chunked=1", conn=conn)
    assert status == 200 and len(body) == 3_000_000


def test_flapping_backend_costs_no_client_errors(
    echo_server: EchoFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    """One backend goes down and comes back, again and again, under load: GET clients
    never see an error while a healthy peer remains, and the flapping one serves again
    each time it is back (its fail_timeout is short)."""
    from support.procs import start_echo

    steady = echo_server(2)
    flapper = start_echo(tmp_path / "flap", "127.0.0.1", 0)
    flap_port = flapper.port
    p = start(
        proxy,
        [*steady, flapper],
        server_params="max_fails: 1, fail_timeout: 200ms",
    )
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    served: Counter[str] = Counter()

    threads = [
        threading.Thread(target=keep_getting, args=(p.port, stop, statuses, served))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    uuids_of_flapper = set()
    try:
        for _ in range(3):
            time.sleep(0.4)
            uuids_of_flapper.add(flapper.uuid)
            flapper.proc.popen.kill()
            flapper.proc.popen.wait()
            time.sleep(0.4)
            flapper = start_echo(tmp_path / "flap", "127.0.0.1", flap_port)
        time.sleep(0.6)
        uuids_of_flapper.add(flapper.uuid)
    finally:
        stop.set()
        for t in threads:
            t.join()
        flapper.stop()
    assert set(statuses) == {200}, statuses
    # The flapping backend served between its outages (each incarnation has a new UUID).
    assert sum(served[u] for u in uuids_of_flapper) > 0
    assert all(served[b.uuid] > 0 for b in steady)
