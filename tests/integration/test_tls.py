"""TLS termination and TLS to upstreams, against a real `ferryman run` with real
clients: curl, Python's ssl, raw sockets. Certificates come from `ferryman cert dev`'s
own code (tls/devcert.py), in a CA made for this module; a second CA plays the wrong
one.

One proxy serves the module (listeners: TLS with optional client certificates, TLS
with required ones, plain with a redirect), in front of the echo backend and a TLS
backend (tests/support/ws_backend.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ferryman.echo import big_pattern
from ferryman.tls.devcert import DevCert, issue
from support.procs import (
    EchoBackend,
    Proc,
    ProxyProcess,
    free_port,
    start_echo,
    start_proxy,
)
from support.rawhttp import RawClient, RawResponse
from support.ws_backend import start_ws_backend

_HEADERS = (
    "{X-Client-DN: $ssl_client_s_dn, X-Client-Verify: $ssl_client_verify, "
    "X-SSL: '$ssl_protocol $ssl_cipher', X-SNI: $ssl_server_name, X-Scheme: $scheme}"
)


@dataclass
class Certs:
    dir: Path
    ca: Path
    default: DevCert
    exact: DevCert
    wild: DevCert
    client: DevCert
    wrong_ca: Path
    wrong_client: DevCert


@dataclass
class Stack:
    certs: Certs
    proxy: ProxyProcess
    tls_port: int  # client certificates optional
    mtls_port: int  # client certificates required
    plain_port: int
    backend: EchoBackend
    tls_backend: Proc


def make_certs(base: Path) -> Certs:
    d = base / "ca"
    default = issue(d, ("localhost", "127.0.0.1"))
    exact = issue(d, ("exact.test",))
    wild = issue(d, ("*.wild.test",))
    client = issue(d, ("client@example.com",), common_name="client one")
    other = base / "other-ca"
    wrong_client = issue(other, ("mallory@example.com",))
    return Certs(d, d / "ca.pem", default, exact, wild, client, other / "ca.pem", wrong_client)


def config(c: Certs, ports: tuple[int, int, int], backend: str, tls_backend: int) -> str:
    tls_port, mtls_port, plain_port = ports
    certs = (
        f"[{{cert: {c.default.cert}, key: {c.default.key}}},"
        f" {{cert: {c.exact.cert}, key: {c.exact.key}, names: [exact.test]}},"
        f" {{cert: {c.wild.cert}, key: {c.wild.key}, names: ['*.wild.test']}}]"
    )
    return f"""
workers: 2
timeouts: {{client_header: 2s}}
cache_zones:
  - {{name: disk, path: {c.dir.parent / "cache"}, max_size: 64m, memory_size: 8m}}
upstreams:
  app: {{servers: ["{backend}"]}}
  tlsapp: {{servers: ["127.0.0.1:{tls_backend}"]}}
servers:
  - listen:
      - address: "127.0.0.1:{tls_port}"
        tls:
          certificates: {certs}
          verify_client: optional
          client_ca: {c.ca}
          hsts: "max-age=31536000"
    routes:
      - {{path: /, upstream: app, set_headers: {_HEADERS}}}
      - {{path: /cached/, upstream: app, upstream_uri: /, cache: {{zone: disk}}}}
      - path: /up-good/
        upstream: tlsapp
        upstream_tls: {{trusted_ca: {c.ca}, name: localhost}}
        set_headers: {{X-Client-DN: $ssl_client_s_dn}}
      - path: /up-wrong-ca/
        upstream: tlsapp
        upstream_tls: {{trusted_ca: {c.wrong_ca}, name: localhost}}
      - path: /up-wrong-name/
        upstream: tlsapp
        upstream_tls: {{trusted_ca: {c.ca}, name: elsewhere.test}}
  - listen:
      - address: "127.0.0.1:{mtls_port}"
        tls:
          certificates: [{{cert: {c.default.cert}, key: {c.default.key}}}]
          verify_client: "on"
          client_ca: {c.ca}
    routes:
      - {{path: /, upstream: app, set_headers: {_HEADERS}}}
  - listen: "127.0.0.1:{plain_port}"
    script:
      - return: {{status: 301, text: "https://$host:{tls_port}$request_uri"}}
    routes:
      - {{path: /, upstream: app}}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("tls")
    certs = make_certs(workdir)
    backend = start_echo(workdir / "logs")
    tls_backend, tls_backend_port = start_ws_backend(
        workdir, "--cert", str(certs.default.cert), "--key", str(certs.default.key)
    )
    try:
        ports = (free_port(), free_port(), free_port())
        text = config(certs, ports, backend.address, tls_backend_port)
        proxy = start_proxy(workdir / "proxy", text, ports[0])
        try:
            yield Stack(certs, proxy, *ports, backend, tls_backend)
        finally:
            proxy.stop()
    finally:
        tls_backend.stop()
        backend.stop()


# ---------------------------------------------------------------- clients


def client_context(c: Certs, cert: DevCert | None = None, *, check: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(c.ca))
    ctx.check_hostname = check
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


class TlsClient(RawClient):
    """RawClient over TLS: the same response reading, through an SSLSocket."""

    def __init__(self, port: int, ctx: ssl.SSLContext, name: str | None = "localhost") -> None:
        super().__init__(port)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=name)


def get(client: RawClient, path: str, host: str = "localhost") -> RawResponse:
    client.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    resp = client.read_response()
    assert resp is not None, "closed without an answer"
    return resp


def echoed_headers(resp: RawResponse) -> dict[str, str]:
    assert resp.status == 200, (resp.status, resp.body)
    return {n.lower(): v for n, v in json.loads(resp.body)["headers"]}


def served_cert(port: int, ctx: ssl.SSLContext, name: str | None) -> dict[str, object]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as tls,
    ):
        cert = tls.getpeercert()
        assert cert
        return cert


def san(cert: dict[str, object]) -> set[str]:
    return {value for _, value in cert["subjectAltName"]}  # type: ignore[attr-defined]


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- termination


def test_curl_over_tls_with_the_dev_ca(stack: Stack) -> None:
    out = subprocess.run(
        [
            "curl", "-sS", "--http1.1", "--max-time", "10", "-i",
            "--cacert", str(stack.certs.ca),
            "--resolve", f"localhost:{stack.tls_port}:127.0.0.1",
            f"https://localhost:{stack.tls_port}/echo",
        ],
        capture_output=True, check=True, timeout=20,
    )  # fmt: skip
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"\r\nStrict-Transport-Security: max-age=31536000" in head
    headers = {n.lower(): v for n, v in json.loads(body)["headers"]}
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-scheme"] == "https"
    assert headers["x-sni"] == "localhost"
    assert headers["x-client-verify"] == "NONE"
    assert headers["x-ssl"].startswith("TLSv1.3 TLS_")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("exact.test", "exact.test"),
        ("a.wild.test", "*.wild.test"),
        ("deep.a.wild.test", "*.wild.test"),
        ("wild.test", "localhost"),  # `*.wild.test` needs a label before it
        ("unknown.test", "localhost"),
        (None, "localhost"),
    ],
)
def test_sni_picks_the_certificate(stack: Stack, name: str | None, expected: str) -> None:
    ctx = client_context(stack.certs, check=False)
    assert expected in san(served_cert(stack.tls_port, ctx, name))


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_protocols_below_tls12_are_refused(stack: Stack) -> None:
    ctx = client_context(stack.certs)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        served_cert(stack.tls_port, ctx, "localhost")
    ctx = client_context(stack.certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with TlsClient(stack.tls_port, ctx) as c:
        assert echoed_headers(get(c, "/echo"))["x-ssl"].startswith("TLSv1.2 ECDHE-")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_keep_alive_and_session_resumption(stack: Stack, version: ssl.TLSVersion) -> None:
    """Tickets resume on every worker: the master builds the contexts (and so the
    ticket keys) before it forks, and the kernel spreads connections over 2 workers."""
    ctx = client_context(stack.certs)
    ctx.maximum_version = version
    with TlsClient(stack.tls_port, ctx) as first:
        for _ in range(3):
            assert get(first, "/").status == 200  # TLS 1.3: the ticket came with these
        session = first.sock.session  # type: ignore[attr-defined]
    for _ in range(8):
        raw = socket.create_connection(("127.0.0.1", stack.tls_port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as again:
            again.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert again.recv(4096).startswith(b"HTTP/1.1 200")
            assert again.session_reused


def test_large_cache_hit_from_disk_over_tls_is_whole(stack: Stack) -> None:
    """A body the cache keeps on disk only is sent to plain-TCP clients from the
    file's mapping; a TLS transport encrypts in this process, so it is read in chunks
    instead, and must arrive whole."""
    size = 1_300_000  # over the memory tier's 1 MiB promotion limit
    path = f"/cached/cache?id=tlsbig&cc=max-age%3D60&bytes={size}"
    with TlsClient(stack.tls_port, client_context(stack.certs)) as client:
        for expected in ("stored", "hit"):
            resp = get(client, path)
            assert resp.status == 200 and resp.complete
            assert expected in (resp.header(b"cache-status") or b"").decode()
            assert resp.body == big_pattern(size)


def test_http_redirects_to_https(stack: Stack) -> None:
    with RawClient(stack.plain_port) as c:
        resp = get(c, "/a?b=1", host="example.test")
    assert resp.status == 301
    assert resp.header(b"location") == f"https://example.test:{stack.tls_port}/a?b=1".encode()


# ---------------------------------------------------------------- client certificates


def refused(port: int, ctx: ssl.SSLContext) -> bool:
    """True if the server ends the handshake: an alert, a reset or a close, and no
    answer. (TLS 1.3: its verdict on the client's certificate arrives after the
    client's Finished, so the client learns it on its first read.)"""
    try:
        with TlsClient(port, ctx) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return c.read_response() is None
    except (ssl.SSLError, ConnectionError):
        return True


def test_mtls_required_refuses_a_client_without_a_certificate(stack: Stack) -> None:
    assert refused(stack.mtls_port, client_context(stack.certs))
    assert wait_until(lambda: "PEER_DID_NOT_RETURN_A_CERTIFICATE" in stack.proxy.output())


def test_mtls_refuses_a_certificate_from_another_ca(stack: Stack) -> None:
    assert refused(stack.mtls_port, client_context(stack.certs, stack.certs.wrong_client))
    assert wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in stack.proxy.output())


def test_mtls_identity_reaches_the_backend(stack: Stack) -> None:
    ctx = client_context(stack.certs, stack.certs.client)
    for port in (stack.mtls_port, stack.tls_port):
        with TlsClient(port, ctx) as c:
            headers = echoed_headers(get(c, "/echo"))
        assert headers["x-client-verify"] == "SUCCESS"
        assert headers["x-client-dn"].startswith("CN=client one,")
        assert "O=trustme" in headers["x-client-dn"]


# ---------------------------------------------------------------- hostile input


def test_plain_http_on_the_tls_port_gets_nginx_400(stack: Stack) -> None:
    with RawClient(stack.tls_port) as c:
        resp = get(c, "/")
        assert resp.status == 400
        assert b"The plain HTTP request was sent to HTTPS port" in resp.body
        assert c.is_closed()
    assert wait_until(lambda: "plain HTTP request to HTTPS port" in stack.proxy.output())


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x00\x20" + b"\x00" * 32,  # a handshake record with no ClientHello
        b"\x16\x03\x01\xff\xff" + os.urandom(200),  # an oversized record, random bytes
        b"\x80\x2b\x01\x00\x02" + os.urandom(40),  # SSLv2-style hello
        b"\x00" * 64,
    ],
)
def test_garbage_handshakes_close_cleanly(stack: Stack, data: bytes) -> None:
    with RawClient(stack.tls_port) as c:
        c.send(data)
        c.read_until_close(limit=4096)  # an alert at most, then the close
        assert c.eof
    # The worker is alive and still serving.
    with TlsClient(stack.tls_port, client_context(stack.certs)) as c:
        assert get(c, "/").status == 200
    assert stack.proxy.proc.is_running()


def test_a_stalled_handshake_times_out(stack: Stack) -> None:
    with RawClient(stack.tls_port) as c:
        c.send(b"\x16\x03\x01")  # a record header, then nothing
        assert c.is_closed(timeout=6)  # client_header 2s bounds the handshake
    assert wait_until(lambda: "TLS handshake with 127.0.0.1 timed out" in stack.proxy.output())


# ---------------------------------------------------------------- TLS to upstreams


def test_upstream_tls_with_the_right_ca(stack: Stack) -> None:
    ctx = client_context(stack.certs, stack.certs.client)
    with TlsClient(stack.tls_port, ctx) as c:
        for _ in range(2):  # the second request may reuse the pooled TLS connection
            resp = get(c, "/up-good/x")
            assert resp.status == 200, resp.body
            seen = json.loads(resp.body)
            assert seen["tls"] is True
            assert seen["headers"]["X-Client-DN"].startswith("CN=client one,")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/up-wrong-ca/", "certificate verify failed: unable to get local issuer certificate"),
        ("/up-wrong-name/", "certificate verify failed: Hostname mismatch"),
    ],
)
def test_upstream_tls_verification_fails_with_502(stack: Stack, path: str, reason: str) -> None:
    with TlsClient(stack.tls_port, client_context(stack.certs)) as c:
        assert get(c, path).status == 502
    assert wait_until(lambda: reason in stack.proxy.output()), stack.proxy.output()[-2000:]


# ---------------------------------------------------------------- reload


def test_reload_swaps_certificates_without_dropping_requests(stack: Stack) -> None:
    """A request in flight on a kept-alive TLS connection finishes across the reload;
    new connections get the certificate re-read from disk. (Idle kept-alive connections
    are closed by the old worker as it drains, as nginx does, with close_notify.)"""
    ctx = client_context(stack.certs)
    before = served_cert(stack.tls_port, ctx, "localhost")["serialNumber"]
    with TlsClient(stack.tls_port, ctx) as busy, TlsClient(stack.tls_port, ctx) as idle:
        assert get(busy, "/").status == 200
        assert get(idle, "/").status == 200
        busy.send(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        time.sleep(0.2)
        # Same names, new key and serial: what a renewal looks like.
        issue(stack.certs.dir, ("localhost", "127.0.0.1"))
        os.kill(stack.proxy.pid, signal.SIGHUP)

        def renewed() -> bool:
            return served_cert(stack.tls_port, ctx, "localhost")["serialNumber"] != before

        assert wait_until(renewed), "new connections still get the old certificate"
        resp = busy.read_response()
        assert resp is not None and resp.status == 200, "the request in flight was dropped"
        assert idle.is_closed(timeout=15)
    with TlsClient(stack.tls_port, ctx) as c:
        assert get(c, "/").status == 200
