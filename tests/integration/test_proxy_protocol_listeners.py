"""Listeners with `proxy_protocol: true` against a real `ferryman run` and echo backend.

A connection there must start with a valid PROXY header (v1 or v2) within the client
header timeout, or it is closed without an answer and the proxy logs why. The header's
address is not the client's by itself (no real_ip here): $remote_addr stays the peer,
as in nginx. A listener without proxy_protocol treats a PROXY line as a bad request.

One proxy and one backend serve the whole module.
"""

from __future__ import annotations

import ipaddress
import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.rawhttp import RawClient

HEADER_TIMEOUT = 1
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
REQUEST = b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n"


@dataclass(frozen=True)
class Stack:
    backend: EchoBackend
    proxy: ProxyProcess
    pp_port: int
    plain_port: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("proxy-protocol")
    backend = start_echo(workdir / "logs")
    try:
        pp_port, plain_port = free_port(), free_port()
        route = (
            "    routes:\n      - path: /\n        upstream: app\n"
            '        set_headers: {X-Client: "$remote_addr"}\n'
        )
        text = (
            f"workers: 1\ntimeouts: {{client_header: {HEADER_TIMEOUT}s}}\n"
            f'upstreams:\n  app: {{servers: ["{backend.address}"]}}\n'
            "servers:\n"
            f'  - listen: [{{address: "127.0.0.1:{pp_port}", proxy_protocol: true}}]\n'
            + route
            + f'  - listen: "127.0.0.1:{plain_port}"\n'
            + route
        )
        proxy = start_proxy(workdir / "proxy", text, plain_port)
        try:
            yield Stack(backend, proxy, pp_port, plain_port)
            assert "Traceback" not in proxy.output(), proxy.output()
        finally:
            proxy.stop()
    finally:
        backend.stop()


def v2(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if a.version == 4 else 0x21
    body = a.packed + b.packed + struct.pack("!HH", sport, dport) + tlvs
    return SIG + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def echoed(client: RawClient) -> dict[str, str]:
    resp = client.read_response()
    assert resp is not None and resp.status == 200, resp
    return {n.lower(): v for n, v in json.loads(resp.body)["headers"]}


def wait_for_log(stack: Stack, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + 5
    while stack.proxy.output().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{stack.proxy.output()}"
        time.sleep(0.05)


def test_v1_header_then_requests(stack: Stack) -> None:
    with RawClient(stack.pp_port) as client:
        client.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\n" + REQUEST)
        # Without real_ip the PROXY address is not the client: the peer is.
        assert echoed(client)["x-client"] == "127.0.0.1"
        # The header came once; the connection goes on as plain HTTP.
        client.send(REQUEST)
        assert echoed(client)["x-client"] == "127.0.0.1"


def test_v2_header_with_tlvs_in_pieces(stack: Stack) -> None:
    data = v2("2001:db8::1", "::1", 1234, 443, b"\x04\x00\x02ab") + REQUEST
    with RawClient(stack.pp_port) as client:
        for i in range(0, len(data), 7):
            client.send(data[i : i + 7])
            time.sleep(0.002)
        assert "x-client" in echoed(client)


def test_v1_unknown_and_v2_local_are_accepted(stack: Stack) -> None:
    with RawClient(stack.pp_port) as client:
        client.send(b"PROXY UNKNOWN\r\n" + REQUEST)
        echoed(client)
    with RawClient(stack.pp_port) as client:
        client.send(SIG + b"\x20\x00\x00\x00" + REQUEST)
        echoed(client)


@pytest.mark.parametrize(
    "data",
    [
        REQUEST,  # no header at all
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n" + REQUEST,
        b"PROXY TCP4 1.2.3.4\n" + REQUEST,
        SIG + b"\x21\x11\xff\xff",  # longer than we accept
    ],
)
def test_a_bad_header_closes_without_an_answer(stack: Stack, data: bytes) -> None:
    before = stack.proxy.output().count("broken PROXY protocol header")
    with RawClient(stack.pp_port, timeout=5) as client:
        client.send(data)
        started = time.monotonic()
        assert client.read_until_close() == b""
        assert time.monotonic() - started < HEADER_TIMEOUT / 2, "not closed at once"
    wait_for_log(stack, "broken PROXY protocol header", before + 1)


def test_a_missing_header_is_closed_by_the_header_timeout(stack: Stack) -> None:
    before = stack.proxy.output().count("no PROXY protocol header from")
    with RawClient(stack.pp_port, timeout=5) as client:
        client.send(b"PROXY TCP4 1.2.3.4 ")  # a start, then silence
        started = time.monotonic()
        assert client.read_until_close() == b""
        elapsed = time.monotonic() - started
    assert HEADER_TIMEOUT * 0.5 < elapsed < HEADER_TIMEOUT + 2, elapsed
    wait_for_log(stack, "no PROXY protocol header from", before + 1)


def test_a_trickled_header_does_not_extend_the_deadline(stack: Stack) -> None:
    line = b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\n"
    with RawClient(stack.pp_port, timeout=5) as client:
        started = time.monotonic()
        closed = False
        for byte in line:
            try:
                client.send(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)  # 44 bytes: 4.4 s in all, far past the 1 s deadline
            if client.is_closed(timeout=0.01):
                closed = True
                break
        assert closed or client.is_closed(timeout=3)
        assert time.monotonic() - started < HEADER_TIMEOUT + 2


def test_plain_listener_treats_a_proxy_line_as_a_bad_request(stack: Stack) -> None:
    with RawClient(stack.plain_port) as client:
        client.send(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n" + REQUEST)
        resp = client.read_response()
        assert resp is not None and resp.status == 400


def test_header_must_come_first_even_on_a_keep_alive_connection(stack: Stack) -> None:
    with RawClient(stack.pp_port) as client:
        client.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\n" + REQUEST)
        echoed(client)
        # A second header is just a bad request line now.
        client.send(b"PROXY TCP4 203.0.113.8 127.0.0.1 51000 80\r\n" + REQUEST)
        resp = client.read_response()
        assert resp is not None and resp.status == 400


def test_socket_is_not_shared_by_listeners_with_different_options() -> None:
    """Config check: one address cannot be both a PROXY listener and a plain one."""
    from ferryman.app import check_config
    from ferryman.config.native import load_native
    from ferryman.errors import ConfigError

    text = (
        'upstreams: {app: {servers: ["127.0.0.1:1"]}}\nservers:\n'
        '  - listen: [{address: "127.0.0.1:9", proxy_protocol: true}]\n'
        "    routes: [{path: /, upstream: app}]\n"
        '  - listen: "127.0.0.1:9"\n'
        "    routes: [{path: /, upstream: app}]\n"
    )
    with pytest.raises(ConfigError, match="with and without proxy_protocol"):
        check_config(load_native(text, "t.yaml"), resolve=False)
