"""The real client address against a real `ferryman run` and a real echo backend.

Clients connect from chosen loopback addresses (the socket is bound to 127.0.0.2,
127.0.0.3, ... before connecting), so the proxy sees trusted and untrusted peers. What
the proxy decided shows in four places: the `X-Client: $remote_addr` field a route
sends, the X-Forwarded-For it appends, its access log (`$remote_addr`), and ip_hash's
choice of backend.

One proxy and two backends serve the whole module.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.rawhttp import RawClient

UNTRUSTED = "127.0.0.3"
TRUSTED = "127.0.0.2"


@dataclass(frozen=True)
class Stack:
    backends: list[EchoBackend]
    proxy: ProxyProcess
    ports: dict[str, int]
    access_log: Path


def _config(ports: dict[str, int], backends: list[EchoBackend], log: Path) -> str:
    route = (
        "    routes:\n"
        "      - path: /\n"
        "        upstream: {up}\n"
        '        set_headers: {{X-Client: "$remote_addr", X-Client-Port: "$remote_port"}}\n'
    )

    def server(name: str, real_ip: str, up: str = "app", listen: str = "") -> str:
        address = listen or f'"127.0.0.1:{ports[name]}"'
        text = f"  - listen: {address}\n"
        if real_ip:
            text += f"    real_ip: {real_ip}\n"
        return text + route.format(up=up)

    return (
        "workers: 1\n"
        f"access_log: {{path: {json.dumps(str(log))}, format: addr}}\n"
        'log_formats: {addr: "$remote_addr $request_uri"}\n'
        "upstreams:\n"
        f'  app: {{servers: ["{backends[0].address}"]}}\n'
        "  pair:\n"
        "    balance: ip_hash\n"
        f'    servers: ["{backends[0].address}", "{backends[1].address}"]\n'
        "servers:\n"
        + server("xff", f'{{trusted: ["{TRUSTED}", "::1"]}}')
        + server("recursive", '{trusted: ["127.0.0.0/30", "10.0.0.0/8"], recursive: true}')
        + server("real_ip", f'{{trusted: ["{TRUSTED}"], header: X-Real-IP}}')
        + server("forwarded", f'{{trusted: ["{TRUSTED}"], header: Forwarded, recursive: true}}')
        + server("none", "")
        + server("hash", f'{{trusted: ["{TRUSTED}"]}}', up="pair")
        + server(
            "pp",
            f'{{trusted: ["{TRUSTED}"], header: proxy_protocol}}',
            listen=f'[{{address: "127.0.0.1:{ports["pp"]}", proxy_protocol: true}}]',
        )
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("real-ip")
    backends = [start_echo(workdir / "logs"), start_echo(workdir / "logs")]
    try:
        names = ("xff", "recursive", "real_ip", "forwarded", "none", "hash", "pp")
        ports = {name: free_port() for name in names}
        log = workdir / "access.log"
        text = _config(ports, backends, log)
        proxy = start_proxy(workdir / "proxy", text, ports["none"])
        try:
            for port in ports.values():
                _wait_listening(port)
            yield Stack(backends, proxy, ports, log)
            assert "Traceback" not in proxy.output(), proxy.output()
        finally:
            proxy.stop()
    finally:
        for b in backends:
            b.stop()


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class BoundClient(RawClient):
    """A RawClient whose socket is bound to a chosen loopback source address."""

    def __init__(self, port: int, source: str, timeout: float = 10.0) -> None:
        self._source = source
        super().__init__(port, timeout=timeout)

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(
            (self.host, self.port), timeout=self.timeout, source_address=(self._source, 0)
        )


def echo(
    stack: Stack, server: str, source: str, *fields: bytes, prefix: bytes = b""
) -> dict[str, Any]:
    """GET /echo through `server`'s listener from `source`; the backend's JSON, with
    its headers as a lower-case dict (repeated ones joined as the wire would)."""
    with BoundClient(stack.ports[server], source) as client:
        extra = b"".join(f + b"\r\n" for f in fields)
        tag = f"{server}-{time.monotonic_ns()}".encode()
        client.send(prefix + b"GET /echo?t=%s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (tag, extra))
        resp = client.read_response()
    assert resp is not None and resp.status == 200, resp
    body: dict[str, Any] = json.loads(resp.body)
    headers: dict[str, str] = {}
    for name, value in body["headers"]:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    body["h"] = headers
    body["tag"] = tag.decode()
    return body


def logged_address(stack: Stack, tag: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in stack.access_log.read_text().splitlines():
            if tag in line:
                return line.split(" ")[0]
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {tag}")


def test_untrusted_peer_is_the_client(stack: Stack) -> None:
    got = echo(stack, "xff", UNTRUSTED, b"X-Forwarded-For: 203.0.113.9")
    assert got["h"]["x-client"] == UNTRUSTED
    # The client's list is passed on, with the real peer appended.
    assert got["h"]["x-forwarded-for"] == f"203.0.113.9, {UNTRUSTED}"
    assert logged_address(stack, got["tag"]) == UNTRUSTED


def test_trusted_peer_names_the_client(stack: Stack) -> None:
    got = echo(stack, "xff", TRUSTED, b"X-Forwarded-For: 198.51.100.1, 203.0.113.9")
    assert got["h"]["x-client"] == "203.0.113.9"
    # As nginx's $proxy_add_x_forwarded_for: the received list plus the client address.
    assert got["h"]["x-forwarded-for"] == "198.51.100.1, 203.0.113.9, 203.0.113.9"
    # A header names no port: $remote_port is empty, as in nginx.
    assert got["h"].get("x-client-port", "") == ""
    assert logged_address(stack, got["tag"]) == "203.0.113.9"


def test_trusted_peer_without_the_header_stays_the_client(stack: Stack) -> None:
    got = echo(stack, "xff", TRUSTED)
    assert got["h"]["x-client"] == TRUSTED
    got = echo(stack, "xff", TRUSTED, b"X-Forwarded-For: not-an-address")
    assert got["h"]["x-client"] == TRUSTED


def test_server_without_real_ip_ignores_headers(stack: Stack) -> None:
    got = echo(stack, "none", TRUSTED, b"X-Forwarded-For: 203.0.113.9", b"X-Real-IP: 1.1.1.1")
    assert got["h"]["x-client"] == TRUSTED


def test_recursive_walks_past_trusted_hops(stack: Stack) -> None:
    xff = b"X-Forwarded-For: 192.0.2.66, 198.51.100.7, 10.1.1.1, 10.2.2.2"
    got = echo(stack, "recursive", TRUSTED, xff)
    assert got["h"]["x-client"] == "198.51.100.7"
    # 127.0.0.3 is inside 127.0.0.0/30 here: trusted too.
    assert echo(stack, "recursive", "127.0.0.3", xff)["h"]["x-client"] == "198.51.100.7"
    # 127.0.0.4 is not.
    assert echo(stack, "recursive", "127.0.0.4", xff)["h"]["x-client"] == "127.0.0.4"


def test_non_recursive_takes_the_rightmost(stack: Stack) -> None:
    got = echo(stack, "xff", TRUSTED, b"X-Forwarded-For: 198.51.100.7, 10.1.1.1")
    assert got["h"]["x-client"] == "10.1.1.1"


def test_x_real_ip(stack: Stack) -> None:
    assert echo(stack, "real_ip", TRUSTED, b"X-Real-IP: 192.0.2.5")["h"]["x-client"] == "192.0.2.5"
    got = echo(stack, "real_ip", UNTRUSTED, b"X-Real-IP: 192.0.2.5")
    assert got["h"]["x-client"] == UNTRUSTED
    # The other headers mean nothing on this server.
    got = echo(stack, "real_ip", TRUSTED, b"X-Forwarded-For: 192.0.2.5")
    assert got["h"]["x-client"] == TRUSTED


def test_forwarded_rfc7239(stack: Stack) -> None:
    field = b'Forwarded: for=192.0.2.60;proto=http, for="[2001:db8::17]:4711"'
    assert echo(stack, "forwarded", TRUSTED, field)["h"]["x-client"] == "2001:db8::17"
    assert echo(stack, "forwarded", UNTRUSTED, field)["h"]["x-client"] == UNTRUSTED


def test_ip_hash_uses_the_real_address(stack: Stack) -> None:
    """From one socket peer, requests naming clients in different /24s spread over both
    backends; without real_ip they would all hash the peer's address."""
    seen = set()
    for i in range(16):
        got = echo(stack, "hash", TRUSTED, b"X-Forwarded-For: 198.51.%d.1" % i)
        seen.add(got["h"]["x-client"])
        with BoundClient(stack.ports["hash"], TRUSTED) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.%d.1\r\n\r\n" % i)
            resp = client.read_response()
            assert resp is not None and resp.status == 200
            seen.add(resp.body.decode())
    uuids = {b.uuid for b in stack.backends}
    assert uuids <= seen, "ip_hash sent every real client to one backend"
    # And the same real client always lands on the same backend, whatever its peer.
    answers = set()
    for source in (TRUSTED, TRUSTED, TRUSTED):
        with BoundClient(stack.ports["hash"], source) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n")
            resp = client.read_response()
            assert resp is not None
            answers.add(resp.body)
    assert len(answers) == 1


def test_proxy_protocol_address_is_the_client_only_from_a_trusted_peer(stack: Stack) -> None:
    header = b"PROXY TCP4 203.0.113.77 127.0.0.1 40001 443\r\n"
    got = echo(stack, "pp", TRUSTED, b"X-Forwarded-For: 1.1.1.1", prefix=header)
    assert got["h"]["x-client"] == "203.0.113.77"
    assert got["h"]["x-client-port"] == "40001"
    assert logged_address(stack, got["tag"]) == "203.0.113.77"
    got = echo(stack, "pp", UNTRUSTED, prefix=header)
    assert got["h"]["x-client"] == UNTRUSTED
