"""Origin hiding against a real `ferryman run`: what a client learns about the servers
behind the proxy. Error answers (502 connect refused, 502 invalid or missing response,
504 timeout) name no upstream address, port or internal error text, in the body or any
header; and response fields the configuration hides (nginx proxy_hide_header: route
`hide_headers`, the server-level default, nginx.conf's Server and Date) never reach the
client, while a control route shows the backend really sends them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.rawhttp import RawClient, RawResponse, ScriptedBackend

# The echo backend's /headers endpoint adds these response fields.
ORIGIN_FIELDS = {
    "Server": "secret-origin/1.2.3",
    "X-Powered-By": "PHP/8.3.0",
    "X-Backend-Host": "db-7.internal",
    "X-Kept": "yes",
}
HEADERS_TARGET = "/headers?" + "&".join(f"{n}={quote(v)}" for n, v in ORIGIN_FIELDS.items())
# Only these fields may be on a proxy's own error answer.
ERROR_FIELDS = {b"date", b"content-type", b"content-length", b"connection"}


def config(port: int, port2: int, echo: str, dead: str, garbage: str) -> str:
    return f"""\
upstreams:
  app: {{servers: ["{echo}"]}}
  dead: {{servers: ["{dead}"]}}
  garbage: {{servers: ["{garbage}"]}}
servers:
  - listen: "127.0.0.1:{port}"
    routes:
      - path: /
        upstream: app
      - path: /hidden/
        upstream: app
        upstream_uri: /
        hide_headers: [server, X-Powered-By, x-backend-host]
      - path: /dead/
        upstream: dead
      - path: /garbage/
        upstream: garbage
      - path: /slow
        upstream: app
        read_timeout: 300ms
  - listen: "127.0.0.1:{port2}"
    hide_headers: [server, x-powered-by]
    routes:
      - path: /
        upstream: app
      - path: /own/
        upstream: app
        upstream_uri: /
        hide_headers: [x-backend-host]
      - path: /none/
        upstream: app
        upstream_uri: /
        hide_headers: []
"""


NGINX_CONF = """\
events {{}}
http {{
    proxy_hide_header X-Powered-By;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://{echo}; }}
    }}
}}
"""


@dataclass(frozen=True)
class Stack:
    backend: EchoBackend
    proxy: ProxyProcess
    port2: int
    nginx_style: ProxyProcess
    secrets: tuple[str, ...]  # what must never reach a client
    dead: str  # the address that refuses connections


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("origin-hiding")
    backend = start_echo(workdir / "logs")
    # Answers every request with bytes that are not HTTP.
    garbage = ScriptedBackend(b"SSH-2.0-OpenSSH_9.6 internal-db-7\r\n\r\n", timeout=5)
    dead_port = free_port()  # nothing listens there: connect is refused
    try:
        port, port2, port3 = free_port(), free_port(), free_port()
        text = config(port, port2, backend.address, f"127.0.0.1:{dead_port}", garbage.address)
        proxy = start_proxy(workdir / "proxy", text, port)
        try:
            conf = NGINX_CONF.format(port=port3, echo=backend.address)
            nginx_style = start_proxy(workdir / "nginx-style", conf, port3)
            try:
                secrets = (
                    "127.0.0.1",
                    str(backend.port),
                    str(dead_port),
                    str(garbage.port),
                    "refused",
                    "errno",
                    "timed out",
                    "traceback",
                    "ssh",
                    "internal",
                    "upstream",
                )
                dead = f"127.0.0.1:{dead_port}"
                yield Stack(backend, proxy, port2, nginx_style, secrets, dead)
            finally:
                nginx_style.stop()
        finally:
            proxy.stop()
    finally:
        garbage.close()
        backend.stop()


def get(port: int, target: str) -> RawResponse:
    with RawClient(port, timeout=10) as client:
        client.send(f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        resp = client.read_response()
    assert resp is not None, "closed without an answer"
    return resp


def assert_tells_nothing(stack: Stack, resp: RawResponse, status: int, text: bytes) -> None:
    # The body is the status and its phrase, nothing more; the fields are the few a
    # local answer has, and their values (but Date's, whose digits may contain a port
    # number by chance) name nothing behind the proxy.
    assert resp.status == status
    assert resp.body == text
    assert {n.lower() for n, _ in resp.headers} <= ERROR_FIELDS, resp.headers
    values = " ".join(v.decode("latin-1") for n, v in resp.headers if n.lower() != b"date")
    for secret in stack.secrets:
        assert not re.search(re.escape(secret), values, re.I), (secret, values)


# ---- error answers say nothing about the peer ----


def test_connect_refused(stack: Stack) -> None:
    assert_tells_nothing(stack, get(stack.proxy.port, "/dead/x"), 502, b"502 Bad Gateway\n")
    # The detail is not lost: it is in the error log, for the operator.
    assert f"upstream {stack.dead} failed (connect)" in stack.proxy.output()


def test_invalid_response(stack: Stack) -> None:
    assert_tells_nothing(stack, get(stack.proxy.port, "/garbage/x"), 502, b"502 Bad Gateway\n")


def test_no_response(stack: Stack) -> None:
    assert_tells_nothing(stack, get(stack.proxy.port, "/close"), 502, b"502 Bad Gateway\n")


def test_timeout(stack: Stack) -> None:
    resp = get(stack.proxy.port, "/slow?ms=3000")
    assert_tells_nothing(stack, resp, 504, b"504 Gateway Timeout\n")


def test_no_debug_header_by_default(stack: Stack) -> None:
    resp = get(stack.proxy.port, "/echo")
    assert resp.status == 200
    assert resp.header(b"x-ferryman-upstream") is None


# ---- hidden response fields ----


def _fields(resp: RawResponse) -> dict[str, str]:
    return {n.decode().lower(): v.decode() for n, v in resp.headers}


def test_control_the_backend_sends_them(stack: Stack) -> None:
    fields = _fields(get(stack.proxy.port, HEADERS_TARGET))
    for name, value in ORIGIN_FIELDS.items():
        assert fields[name.lower()] == value


def test_route_hide_headers(stack: Stack) -> None:
    resp = get(stack.proxy.port, "/hidden" + HEADERS_TARGET)
    assert resp.status == 200 and resp.body == b"headers\n"
    fields = _fields(resp)
    for name in ("server", "x-powered-by", "x-backend-host"):
        assert name not in fields
    assert fields["x-kept"] == "yes"


def test_server_level_hide_headers(stack: Stack) -> None:
    fields = _fields(get(stack.port2, HEADERS_TARGET))
    assert "server" not in fields and "x-powered-by" not in fields
    assert fields["x-backend-host"] == "db-7.internal" and fields["x-kept"] == "yes"
    # A route's own list replaces the server's ...
    fields = _fields(get(stack.port2, "/own" + HEADERS_TARGET))
    assert "x-backend-host" not in fields
    assert fields["server"] == "secret-origin/1.2.3"
    # ... and `hide_headers: []` hides nothing.
    fields = _fields(get(stack.port2, "/none" + HEADERS_TARGET))
    assert {"server", "x-powered-by", "x-backend-host"} <= set(fields)


def test_nginx_conf_hides_server_and_configured_fields(stack: Stack) -> None:
    fields = _fields(get(stack.nginx_style.port, HEADERS_TARGET))
    # nginx hides Server (and Date, replaced by the proxy's own) unless proxy_pass_header.
    assert "server" not in fields and "x-powered-by" not in fields
    assert fields["x-backend-host"] == "db-7.internal" and fields["x-kept"] == "yes"
