"""The forward proxy against real clients: curl (`-x`, `--proxy-user`), httpx
(`proxy=`) and raw sockets (for targets a polite client would rewrite, like
`http://2130706433/`), through one `ferryman run` whose listeners each show one
configuration. The origin is the echo backend (its /echo answers with the request
headers it received, /cache counts its fills); https origins are reached by CONNECT
to Ferryman's own TLS listener in front of the echo backend, with a certificate from
tls/devcert.py. Names resolve through the config's `hosts` (no DNS needed).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ferryman.tls.devcert import issue
from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.rawhttp import RawClient, RawResponse

CURL_TIMEOUT = 15
PASSWORD = "s3cret"


@dataclass
class Stack:
    proxy: ProxyProcess
    echo: EchoBackend
    ca: Path
    tls_port: int
    ports: dict[str, int]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


_LISTENERS = ("main", "anon", "elite", "auth", "ssrf", "access", "denyip", "reverse", "idle")


def _config(echo: EchoBackend, ports: dict[str, int], tls_port: int, certs: Path) -> str:
    cert = issue(certs, ("tls.test", "localhost"))
    users = certs / "users.htpasswd"
    users.write_text(f"ann:{{PLAIN}}{PASSWORD}\n")
    # A window that does not hold for the next hours: PUT is never refused by it.
    hour = datetime.now(UTC).hour
    later = f"{(hour + 3) % 24:02d}:00-{(hour + 4) % 24:02d}:00"
    return f"""\
workers: 1
hosts:
  origin.test: "127.0.0.1"
  tls.test: "127.0.0.1"
  rebind.test: "127.0.0.1"
  cidr.test: "127.0.0.5"
cache_zones: [{{name: fw}}]
upstreams:
  app: {{servers: ["{echo.address}"]}}
servers:
  - listen: "127.0.0.1:{ports["main"]}"
    forward:
      allow_private: true
      connect_ports: [{tls_port}, {ports["closed"]}]
      destinations:
        - deny: "*.blocked.test"
        - deny: "port:9"
        - deny: "127.0.0.4/30"
      cache: {{zone: fw}}
      resolve_timeout: 3s
      connect_timeout: 3s
  - listen: "127.0.0.1:{ports["anon"]}"
    forward:
      anonymity: anonymous
      # Loopback opened by an address rule, not by allow_private.
      destinations: [{{allow: "127.0.0.1/32"}}]
  - listen: "127.0.0.1:{ports["elite"]}"
    forward:
      anonymity: elite
      user_agent: "FerrymanTest/1.0"
      allow_private: true
  - listen: "127.0.0.1:{ports["auth"]}"
    forward:
      allow_private: true
      connect_ports: [{tls_port}]
      auth: {{realm: "Proxy users", user_file: "{users}"}}
  - listen: "127.0.0.1:{ports["ssrf"]}"
    forward: {{}}
  - listen: "127.0.0.1:{ports["access"]}"
    forward:
      allow_private: true
      access:
        - {{deny: all, user_agent: "~^BadBot", name: no-bots}}
        - {{deny: all, methods: [DELETE], times: "00:00-24:00", name: no-deletes}}
        - {{deny: all, methods: [PUT], times: "{later}", name: not-now}}
  - listen: "127.0.0.1:{ports["denyip"]}"
    forward:
      allow_private: true
      access: [{{deny: 127.0.0.0/8, name: no-loopback-clients}}]
  - listen: "127.0.0.1:{ports["idle"]}"
    forward:
      allow_private: true
      connect_ports: [{tls_port}]
      read_timeout: 1s
  - listen: "127.0.0.1:{ports["reverse"]}"
    routes: [{{path: /, upstream: app}}]
  - listen:
      - address: "127.0.0.1:{tls_port}"
        tls: {{certificates: [{{cert: {cert.cert}, key: {cert.key}}}]}}
    routes: [{{path: /, upstream: app}}]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("forward")
    echo = start_echo(workdir)
    proxy = None
    # A port that refuses for the whole module: bound but never listening, so no other
    # socket (not even an ephemeral source port of the proxy's own connections, which
    # would make a loopback connect succeed against itself) can take it meanwhile.
    refuser = socket.socket()
    refuser.bind(("127.0.0.1", 0))
    try:
        ports = {name: free_port() for name in _LISTENERS}
        ports["closed"] = refuser.getsockname()[1]
        tls_port = free_port()
        text = _config(echo, ports, tls_port, workdir / "certs")
        proxy = start_proxy(workdir, text, ports["main"])
        for port in (*(p for n, p in ports.items() if n != "closed"), tls_port):
            _wait_for(port)
        yield Stack(proxy, echo, workdir / "certs" / "ca.pem", tls_port, ports)
    finally:
        if proxy is not None:
            proxy.stop()
        echo.stop()
        refuser.close()


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            RawClient(port, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT,
        check=False,
    )


def curl_status(*args: str) -> tuple[int, str]:
    out = curl("-o", "-", "-w", "\n%{http_code}", *args)
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body


def echoed(body: str) -> dict[str, str]:
    """/echo's headers, as a dict of lower-case name -> value."""
    return {name.lower(): value for name, value in json.loads(body)["headers"]}


def raw(port: int, request: bytes) -> RawResponse:
    with RawClient(port) as client:
        client.send(request)
        resp = client.read_response()
    assert resp is not None, "no answer"
    return resp


def wait_for_log(proxy: ProxyProcess, text: str) -> str:
    deadline = time.monotonic() + 5
    while text not in proxy.output():
        assert time.monotonic() < deadline, f"{text!r} never logged"
        time.sleep(0.05)
    return next(line for line in proxy.output().splitlines() if text in line)


# ---- plain HTTP through curl -x ----


def test_curl_fetches_through_the_proxy(stack: Stack) -> None:
    status, body = curl_status(
        "-x", stack.url("main"), f"http://origin.test:{stack.echo.port}/echo?q=1"
    )
    assert status == 200
    data = json.loads(body)
    # Origin-form upstream, the target's authority as Host (RFC 9112 3.2.2).
    assert data["target"] == "/echo?q=1"
    headers = echoed(body)
    assert headers["host"] == f"origin.test:{stack.echo.port}"
    # curl's Proxy-Connection is hop-by-hop: consumed here.
    assert "proxy-connection" not in headers


def test_one_client_connection_carries_several_requests(stack: Stack) -> None:
    url = f"http://origin.test:{stack.echo.port}/echo"
    out = curl("-v", "-x", stack.url("main"), url, url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('"uuid"') == 2
    assert "Re-using existing connection" in out.stderr or "Reusing existing" in out.stderr


def test_origin_connections_are_pooled(stack: Stack) -> None:
    """Requests for one origin reuse a kept-alive connection: the set of established
    connections to the origin stays the same across requests, and one is left open."""
    port = stack.echo.port
    seen = []
    with RawClient(stack.ports["main"]) as client:
        for _ in range(3):
            client.send(
                b"GET http://origin.test:%d/echo HTTP/1.1\r\nHost: origin.test:%d\r\n\r\n"
                % (port, port)
            )
            resp = client.read_response()
            assert resp is not None and resp.status == 200
            seen.append(_connections_to(port))
    assert seen[0], "no kept-alive connection to the origin"
    assert seen[0] == seen[1] == seen[2]


def _connections_to(port: int) -> frozenset[str]:
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT,
        check=True,
    )
    return frozenset(" ".join(line.split()) for line in out.stdout.splitlines() if line.strip())


# ---- HTTPS through CONNECT ----


def test_curl_https_through_connect(stack: Stack) -> None:
    status, body = curl_status(
        "--cacert",
        str(stack.ca),
        "-x",
        stack.url("main"),
        f"https://tls.test:{stack.tls_port}/echo",
    )
    assert status == 200
    assert json.loads(body)["uuid"] == stack.echo.uuid


def test_connect_answer_is_200_connection_established(stack: Stack) -> None:
    with RawClient(stack.ports["main"]) as client:
        client.send(b"CONNECT tls.test:%d HTTP/1.1\r\nHost: tls.test\r\n\r\n" % stack.tls_port)
        head = client.read_head()
        assert head is not None
        assert head.status == 200 and head.reason == b"Connection Established"
        # Bytes now go straight through: a TLS ClientHello-less garbage line makes the
        # TLS server close, which closes the tunnel.
        client.send(b"not tls\r\n\r\n")
        assert client.is_closed(timeout=5)


def _open_tunnel(stack: Stack, listener: str) -> RawClient:
    client = RawClient(stack.ports[listener])
    client.send(b"CONNECT tls.test:%d HTTP/1.1\r\nHost: tls.test\r\n\r\n" % stack.tls_port)
    head = client.read_head()
    assert head is not None and head.status == 200
    return client


def test_client_half_close_reaches_the_origin(stack: Stack) -> None:
    # The origin (a TLS listener waiting for a ClientHello, 60 s header timeout) closes
    # at once on EOF; so the tunnel ends in well under its 60 s idle timeout only if the
    # client's FIN was passed on.
    with _open_tunnel(stack, "main") as client:
        client.sock.shutdown(socket.SHUT_WR)
        assert client.is_closed(timeout=5)


def test_idle_tunnel_is_closed_after_read_timeout(stack: Stack) -> None:
    started = time.monotonic()
    with _open_tunnel(stack, "idle") as client:
        assert client.is_closed(timeout=8)
    # The worker's timers are coarse (server/sweeper.py: deadlines from a clock read
    # once a tick), so "1s" may end a little early; not at once, though.
    assert time.monotonic() - started >= 0.5


def test_connect_to_a_port_not_allowed_is_403(stack: Stack) -> None:
    resp = raw(
        stack.ports["main"],
        b"CONNECT origin.test:%d HTTP/1.1\r\nHost: origin.test\r\n\r\n" % stack.echo.port,
    )
    assert resp.status == 403
    assert b"connect_ports" in resp.body
    wait_for_log(stack.proxy, f"origin.test:{stack.echo.port} refused by connect_ports")
    # The default is 443 only: the ssrf listener (forward: {}) refuses the TLS port too.
    resp = raw(
        stack.ports["ssrf"],
        b"CONNECT example.test:%d HTTP/1.1\r\nHost: example.test\r\n\r\n" % stack.tls_port,
    )
    assert resp.status == 403 and b"connect_ports 443" in resp.body


def test_https_absolute_uri_is_refused(stack: Stack) -> None:
    resp = raw(
        stack.ports["main"],
        b"GET https://tls.test:%d/echo HTTP/1.1\r\nHost: tls.test\r\n\r\n" % stack.tls_port,
    )
    assert resp.status == 400
    assert b"CONNECT" in resp.body


def test_origin_form_request_is_not_proxied(stack: Stack) -> None:
    resp = raw(stack.ports["main"], b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 400 and b"forward proxy" in resp.body


def test_a_reverse_listener_keeps_refusing_connect(stack: Stack) -> None:
    port = stack.ports["reverse"]
    resp = raw(port, b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    assert resp.status == 405
    # ... and still sends absolute-form targets origin-form to its own upstream.
    resp = raw(port, b"GET http://elsewhere.test/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 200
    assert json.loads(resp.body)["target"] == "/echo"


# ---- proxy authentication ----


def test_proxy_auth_challenges_without_credentials(stack: Stack) -> None:
    out = curl("-i", "-x", stack.url("auth"), f"http://origin.test:{stack.echo.port}/echo")
    assert out.stdout.startswith("HTTP/1.1 407")
    assert 'Proxy-Authenticate: Basic realm="Proxy users"' in out.stdout


def test_proxy_auth_wrong_password_is_407(stack: Stack) -> None:
    status, _ = curl_status(
        "-x",
        stack.url("auth"),
        "--proxy-user",
        "ann:wrong",
        f"http://origin.test:{stack.echo.port}/echo",
    )
    assert status == 407
    wait_for_log(stack.proxy, "proxy user 'ann': password mismatch")


def test_proxy_auth_passes_and_is_consumed(stack: Stack) -> None:
    status, body = curl_status(
        "-x",
        stack.url("auth"),
        "--proxy-user",
        f"ann:{PASSWORD}",
        f"http://origin.test:{stack.echo.port}/echo",
    )
    assert status == 200
    assert "proxy-authorization" not in echoed(body)


def test_proxy_auth_on_connect(stack: Stack) -> None:
    url = f"https://tls.test:{stack.tls_port}/echo"
    out = curl("-v", "--cacert", str(stack.ca), "-x", stack.url("auth"), url)
    assert out.returncode != 0
    assert "< HTTP/1.1 407" in out.stderr
    status, body = curl_status(
        "--cacert",
        str(stack.ca),
        "-x",
        stack.url("auth"),
        "--proxy-user",
        f"ann:{PASSWORD}",
        url,
    )
    assert status == 200 and json.loads(body)["uuid"] == stack.echo.uuid


# ---- httpx ----


def test_httpx_http_and_https(stack: Stack) -> None:
    with httpx.Client(
        proxy=stack.url("main"), verify=ssl.create_default_context(cafile=str(stack.ca)), timeout=10
    ) as client:
        plain = client.get(f"http://origin.test:{stack.echo.port}/echo", headers={"X-T": "1"})
        assert plain.status_code == 200
        assert echoed(plain.text)["x-t"] == "1"
        tls = client.get(f"https://tls.test:{stack.tls_port}/echo")
        assert tls.status_code == 200 and tls.json()["uuid"] == stack.echo.uuid


def test_httpx_with_proxy_credentials(stack: Stack) -> None:
    proxy = f"http://ann:{PASSWORD}@127.0.0.1:{stack.ports['auth']}"
    with httpx.Client(proxy=proxy, timeout=10) as client:
        resp = client.get(f"http://origin.test:{stack.echo.port}/echo")
    assert resp.status_code == 200
    assert "proxy-authorization" not in echoed(resp.text)


# ---- anonymity ----

_CLIENT_FIELDS = (
    "-H",
    "X-Forwarded-For: 10.9.9.9",
    "-H",
    "Forwarded: for=10.9.9.9",
    "-H",
    "X-Forwarded-Host: inner.test",
    "-H",
    "Via: 1.0 inner-proxy",
)


def _through(stack: Stack, listener: str) -> dict[str, str]:
    status, body = curl_status(
        "-x", stack.url(listener), *_CLIENT_FIELDS, f"http://origin.test:{stack.echo.port}/echo"
    )
    assert status == 200
    return echoed(body)


def test_transparent_adds_via_and_x_forwarded_for(stack: Stack) -> None:
    headers = _through(stack, "main")
    assert headers["x-forwarded-for"] == "10.9.9.9, 127.0.0.1"
    assert headers["via"] == "1.0 inner-proxy, 1.1 ferryman"
    assert headers["forwarded"] == "for=10.9.9.9"


def test_anonymous_adds_via_only(stack: Stack) -> None:
    headers = _through(stack, "anon")
    assert headers["via"] == "1.0 inner-proxy, 1.1 ferryman"
    for gone in ("x-forwarded-for", "forwarded", "x-forwarded-host"):
        assert gone not in headers
    # No address of the client's anywhere in what the origin saw.
    assert "127.0.0.1" not in json.dumps(headers)
    assert "10.9.9.9" not in json.dumps(headers)


def test_elite_adds_nothing_and_replaces_the_user_agent(stack: Stack) -> None:
    headers = _through(stack, "elite")
    for gone in ("via", "x-forwarded-for", "forwarded", "x-forwarded-host", "proxy-connection"):
        assert gone not in headers
    assert headers["user-agent"] == "FerrymanTest/1.0"
    assert "127.0.0.1" not in json.dumps(headers)


# ---- destination rules ----


def _refused(stack: Stack, listener: str, target: bytes, host: bytes = b"x") -> RawResponse:
    resp = raw(stack.ports[listener], b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, host))
    assert resp.status == 403, (resp.status, resp.body)
    return resp


def test_domain_wildcard_rule(stack: Stack) -> None:
    resp = _refused(stack, "main", b"http://ads.blocked.test/")
    assert b"destinations[0] deny *.blocked.test" in resp.body
    line = wait_for_log(stack.proxy, "ads.blocked.test:80 refused by destinations[0]")
    assert "deny *.blocked.test" in line


def test_port_rule(stack: Stack) -> None:
    resp = _refused(stack, "main", b"http://origin.test:9/")
    assert b"destinations[1] deny port:9" in resp.body


def test_cidr_rule_on_the_resolved_address(stack: Stack) -> None:
    resp = _refused(stack, "main", b"http://cidr.test/")
    assert b"destinations[2] deny 127.0.0.4/30" in resp.body
    # The client learns the rule, not the internal address the name resolved to.
    assert b"127.0.0.5" not in resp.body
    line = wait_for_log(stack.proxy, "cidr.test:80 (127.0.0.5) refused by destinations[2]")
    assert "127.0.0.4/30" in line


def test_an_address_allow_rule_opens_loopback(stack: Stack) -> None:
    status, _ = curl_status("-x", stack.url("anon"), f"http://127.0.0.1:{stack.echo.port}/")
    assert status == 200


# ---- SSRF defaults (listener with `forward: {}`) ----


@pytest.mark.parametrize(
    "host",
    [
        b"127.0.0.1",
        b"2130706433",  # decimal
        b"0177.0.0.1",  # octal
        b"0x7f.0.0.1",  # hex
        b"127.1",  # short form
        b"[::1]",
        b"[::ffff:127.0.0.1]",
        b"rebind.test",  # a name that resolves to loopback (`hosts`)
    ],
)
def test_loopback_in_any_spelling_is_refused(stack: Stack, host: bytes) -> None:
    target = b"http://%s:%d/echo" % (host, stack.echo.port)
    resp = _refused(stack, "ssrf", target)
    assert b"loopback" in resp.body
    assert b"127.0.0.1" not in resp.body


def test_metadata_address_is_refused(stack: Stack) -> None:
    resp = _refused(stack, "ssrf", b"http://169.254.169.254/latest/meta-data/")
    assert b"cloud metadata" in resp.body
    wait_for_log(stack.proxy, "169.254.169.254:80 refused by default deny: cloud metadata")


def test_curl_sees_the_refusal(stack: Stack) -> None:
    status, body = curl_status("-x", stack.url("ssrf"), f"http://127.0.0.1:{stack.echo.port}/")
    assert status == 403 and "allow_private" in body


# ---- client access rules ----


def test_user_agent_rule(stack: Stack) -> None:
    url = f"http://origin.test:{stack.echo.port}/echo"
    status, _ = curl_status("-x", stack.url("access"), "-A", "BadBot/2", url)
    assert status == 403
    wait_for_log(stack.proxy, "no-bots")
    status, _ = curl_status("-x", stack.url("access"), "-A", "GoodBot/2", url)
    assert status == 200


def test_time_window_rules(stack: Stack) -> None:
    url = f"http://origin.test:{stack.echo.port}/echo"
    status, _ = curl_status("-x", stack.url("access"), "-X", "DELETE", url)
    assert status == 403
    status, _ = curl_status("-x", stack.url("access"), "-X", "PUT", url)
    assert status == 200


def test_client_address_rule(stack: Stack) -> None:
    status, _ = curl_status("-x", stack.url("denyip"), f"http://origin.test:{stack.echo.port}/")
    assert status == 403
    wait_for_log(stack.proxy, "no-loopback-clients")


# ---- failures ----


def test_unknown_host_is_502(stack: Stack) -> None:
    status, _ = curl_status("-x", stack.url("main"), "http://no-such-host.invalid/")
    assert status == 502
    line = wait_for_log(stack.proxy, "DNS lookup of 'no-such-host.invalid' failed")
    assert "forward" in line


def test_refused_connection_is_502(stack: Stack) -> None:
    closed = stack.ports["closed"]
    status, _ = curl_status("-x", stack.url("main"), f"http://origin.test:{closed}/")
    assert status == 502
    wait_for_log(stack.proxy, f"127.0.0.1:{closed} failed (connect)")
    # No passive-health verdict sticks to an origin: a second try still connects
    # (and is refused again, rather than "no live upstreams").
    status, _ = curl_status("-x", stack.url("main"), f"http://origin.test:{closed}/")
    assert status == 502


def test_refused_connect_tunnel_is_502(stack: Stack) -> None:
    closed = stack.ports["closed"]
    resp = raw(
        stack.ports["main"],
        b"CONNECT origin.test:%d HTTP/1.1\r\nHost: origin.test\r\n\r\n" % closed,
    )
    assert resp.status == 502
    wait_for_log(stack.proxy, f"CONNECT 127.0.0.1:{closed} failed (connect)")


# ---- cache ----


def test_repeated_plain_http_fetches_hit_the_cache(stack: Stack) -> None:
    key = f"fw-{time.monotonic_ns()}"
    url = f"http://origin.test:{stack.echo.port}/cache?id={key}&cc=max-age%3D60"
    bodies = []
    for _ in range(3):
        out = curl("-i", "-x", stack.url("main"), url)
        assert out.returncode == 0 and out.stdout.startswith("HTTP/1.1 200")
        bodies.append(out.stdout.split("\n\n", 1)[1])
    assert len(set(bodies)) == 1  # the same stored answer every time
    count = json.loads(
        curl(
            "-x", stack.url("main"), f"http://origin.test:{stack.echo.port}/cache/count?id={key}"
        ).stdout
    )
    assert count["requests"] == 1
    # The key is the absolute URI: another origin name for the same address is another key.
    other = url.replace("origin.test", "rebind.test")
    assert curl("-x", stack.url("main"), other).returncode == 0
    count = json.loads(
        curl(
            "-x", stack.url("main"), f"http://origin.test:{stack.echo.port}/cache/count?id={key}"
        ).stdout
    )
    assert count["requests"] == 2
