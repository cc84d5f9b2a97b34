"""Access rules against a real `ferryman run` in front of a real echo backend, with
clients bound to different loopback source addresses (127.0.0.1, 127.0.0.2, ...): the
proxy answers 403 (or the route's deny_status / deny_body) without the backend seeing
the request, lets allowed clients through, and its error log names the deciding rule.

One proxy and one backend serve the whole module; each route exercises one condition
type (address, CIDR, User-Agent, method, path, time window, inherited rules).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.rawhttp import RawClient, RawResponse, http_get_json


@dataclass
class BoundClient(RawClient):
    """A RawClient whose connection comes from `source` (any 127.0.0.0/8 address)."""

    source: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(
            (self.host, self.port), timeout=self.timeout, source_address=(self.source, 0)
        )


def _window(start: datetime, hours: int) -> str:
    end = start + timedelta(hours=hours)
    return f"{start:%H:%M}-{end:%H:%M}"


def config(port: int, backend: str) -> str:
    now = datetime.now(UTC)
    # A window around now (crossing midnight when now is near it) and one far from now.
    around_now = _window(now - timedelta(hours=1), 2)
    not_now = _window(now + timedelta(hours=3), 2)
    return f"""\
upstreams:
  app: {{servers: ["{backend}"]}}
servers:
  - listen: "127.0.0.1:{port}"
    access:
      - allow: 127.0.0.1
        name: only-one
      - deny: all
        name: everyone-else
    routes:
      - path: /
        upstream: app
      - path: /echo/cidr/
        upstream: app
        access:
          - deny: [127.0.0.0/30, 10.0.0.0/8]
            name: low-four
          - allow: all
      - path: /echo/status/
        upstream: app
        deny_status: 451
        deny_body: "not here\\n"
        access: [{{deny: 127.0.0.3}}]
      - path: /echo/ua/
        upstream: app
        access:
          - {{deny: all, user_agent: ["~*bot", "=curl/0.1"], name: bots}}
      - path: /echo/method/
        upstream: app
        access:
          - {{deny: all, methods: [POST, DELETE], name: read-only}}
      - path: /echo/path/
        upstream: app
        access:
          - {{deny: all, paths: [/echo/path/admin, "~\\\\.php$"], name: no-admin}}
      - path: /echo/time/
        upstream: app
        access:
          - {{deny: all, paths: [/echo/time/now], times: ["{around_now}"], name: now}}
          - {{deny: all, paths: [/echo/time/later], times: ["{not_now}"], name: later}}
      - path: /echo/open/
        upstream: app
        access: []
        routes:
          - path: /echo/open/nested/
            upstream: app
            access: [{{deny: 127.0.0.4, name: nested}}]
            routes:
              - {{path: /echo/open/nested/deeper/, upstream: app}}
"""


@dataclass(frozen=True)
class Stack:
    backend: EchoBackend
    proxy: ProxyProcess

    def backend_count(self) -> int:
        return int(http_get_json(self.backend.port, "/count")["requests"])

    def ask(
        self,
        target: str,
        source: str = "127.0.0.1",
        method: str = "GET",
        headers: tuple[str, ...] = (),
        body: bytes = b"",
    ) -> RawResponse:
        lines = [f"{method} {target} HTTP/1.1", "Host: test", *headers]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        with BoundClient(self.proxy.port, timeout=10, source=source) as client:
            client.send(data)
            resp = client.read_response(head_request=method == "HEAD")
        assert resp is not None, "closed without an answer"
        return resp


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("access-rules")
    backend = start_echo(workdir / "logs")
    try:
        port = free_port()
        proxy = start_proxy(workdir / "proxy", config(port, backend.address), port)
        try:
            yield Stack(backend, proxy)
        finally:
            proxy.stop()
    finally:
        backend.stop()


def assert_denied(
    stack: Stack, target: str, *, status: int = 403, rule: str | None = None, **kw: object
) -> RawResponse:
    before = stack.backend_count()
    resp = stack.ask(target, **kw)  # type: ignore[arg-type]
    assert resp.status == status, (resp.status, resp.body)
    time.sleep(0.05)  # anything wrongly forwarded has time to reach the backend
    assert stack.backend_count() == before + 1, "the backend saw a denied request"
    if rule is not None:
        assert wait_for_log(stack, f"access forbidden by rule {rule}")
    return resp


def assert_allowed(stack: Stack, target: str, **kw: object) -> RawResponse:
    resp = stack.ask(target, **kw)  # type: ignore[arg-type]
    assert resp.status == 200, (resp.status, resp.body)
    return resp


def wait_for_log(stack: Stack, text: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in stack.proxy.output():
            return True
        time.sleep(0.05)
    return False


# ---- addresses ----


def test_server_rules_allow_one_address_and_deny_the_rest(stack: Stack) -> None:
    assert_allowed(stack, "/", source="127.0.0.1")
    resp = assert_denied(stack, "/", source="127.0.0.2", rule="everyone-else")
    assert resp.body == b"403 Forbidden\n"
    assert resp.header(b"content-type") == b"text/plain"
    # The log line says who was refused and by which rule.
    lines = [x for x in stack.proxy.output().splitlines() if "rule everyone-else" in x]
    assert lines and all("from 127.0.0.2" in x and "(status 403)" in x for x in lines)


def test_cidr_and_first_match(stack: Stack) -> None:
    for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        assert_denied(stack, "/echo/cidr/x", source=source, rule="low-four")
    for source in ("127.0.0.4", "127.0.0.9", "127.1.2.3"):
        resp = assert_allowed(stack, "/echo/cidr/x", source=source)
        assert b'"target": "/echo/cidr/x"' in resp.body


def test_deny_status_and_body(stack: Stack) -> None:
    resp = assert_denied(stack, "/echo/status/", source="127.0.0.3", status=451, rule="access[0]")
    assert resp.body == b"not here\n"
    assert_allowed(stack, "/echo/status/", source="127.0.0.2")


def test_a_denied_keep_alive_connection_goes_on(stack: Stack) -> None:
    with BoundClient(stack.proxy.port, timeout=10, source="127.0.0.3") as client:
        client.send(b"GET /echo/status/ HTTP/1.1\r\nHost: t\r\n\r\n")
        first = client.read_response()
        client.send(b"GET /echo/cidr/ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        second = client.read_response()
    assert first is not None and first.status == 451
    assert first.header(b"connection") == b"keep-alive"
    assert second is not None and second.status == 403  # 127.0.0.3 is in 127.0.0.0/30


def test_a_denied_head_gets_no_body_and_the_connection_goes_on(stack: Stack) -> None:
    with BoundClient(stack.proxy.port, timeout=10, source="127.0.0.3") as client:
        client.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = client.read_response(head_request=True)
        client.send(b"HEAD /echo/status/ HTTP/1.1\r\nHost: t\r\n\r\n")
        second = client.read_response(head_request=True)
        client.send(b"GET /echo/cidr/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        third = client.read_response()
    assert head is not None and head.status == 403 and head.body == b""
    assert head.header(b"content-length") == b"14"  # what a GET would get
    assert second is not None and second.status == 451 and second.body == b""
    # Had a body followed either head, this would read it as a (bad) status line.
    assert third is not None and third.status == 403 and third.body == b"403 Forbidden\n"


def test_a_denied_request_with_a_body_is_answered(stack: Stack) -> None:
    resp = assert_denied(
        stack, "/echo/status/", source="127.0.0.3", method="POST", body=b"x" * 10_000, status=451
    )
    assert resp.body == b"not here\n"


# ---- User-Agent, method, path, time ----


@pytest.mark.parametrize("agent", ["Googlebot/2.1", "ahrefsBOT", "curl/0.1"])
def test_user_agent_denied(stack: Stack, agent: str) -> None:
    assert_denied(stack, "/echo/ua/", headers=(f"User-Agent: {agent}",), rule="bots")


@pytest.mark.parametrize("agent", [None, "curl/0.10", "Mozilla/5.0 Firefox"])
def test_user_agent_allowed(stack: Stack, agent: str | None) -> None:
    headers = (f"User-Agent: {agent}",) if agent is not None else ()
    assert_allowed(stack, "/echo/ua/", headers=headers)


def test_methods(stack: Stack) -> None:
    assert_denied(stack, "/echo/method/", method="POST", body=b"x", rule="read-only")
    assert_denied(stack, "/echo/method/", method="DELETE", rule="read-only")
    assert_allowed(stack, "/echo/method/", method="GET")
    assert_allowed(stack, "/echo/method/", method="PUT", body=b"x")


@pytest.mark.parametrize(
    "target",
    [
        "/echo/path/admin",
        "/echo/path/admin/users",
        "/echo/path/%61dmin",  # the rule sees $uri, decoded ...
        "/echo/path/x/../admin",  # ... and normalised
        "/echo/path//admin",
        "/echo/path/index.php",
    ],
)
def test_paths_denied(stack: Stack, target: str) -> None:
    assert_denied(stack, target, rule="no-admin")


@pytest.mark.parametrize("target", ["/echo/path/", "/echo/path/public", "/echo/path/x.php/y"])
def test_paths_allowed(stack: Stack, target: str) -> None:
    assert_allowed(stack, target)


def test_time_windows(stack: Stack) -> None:
    assert_denied(stack, "/echo/time/now", rule="now")
    assert_allowed(stack, "/echo/time/later")


# ---- inheritance ----


def test_an_empty_list_opts_out_and_nested_routes_inherit(stack: Stack) -> None:
    # /echo/open/ says `access: []`: the server's rules do not apply there.
    assert_allowed(stack, "/echo/open/", source="127.0.0.2")
    # A nested route's own rules; and a route nested in it inherits them.
    assert_denied(stack, "/echo/open/nested/", source="127.0.0.4", rule="nested")
    assert_denied(stack, "/echo/open/nested/deeper/", source="127.0.0.4", rule="nested")
    assert_allowed(stack, "/echo/open/nested/deeper/", source="127.0.0.2")


def test_log_never_shows_a_rule_for_allowed_requests(stack: Stack) -> None:
    assert_allowed(stack, "/echo/cidr/quiet-one", source="127.0.0.8")
    time.sleep(0.1)
    assert not re.search(r"forbidden[^\n]*quiet-one", stack.proxy.output())
