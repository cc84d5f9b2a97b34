"""Route: a RouteSpec compiled against its group and pool, headers pre-rendered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from ferryman.balancing import create_balancer
from ferryman.config.schema import PeerSpec, RouteSpec, UpstreamSpec
from ferryman.errors import ConfigError
from ferryman.http.messages import RequestHead
from ferryman.http.request_parser import RequestParser, RequestSink
from ferryman.proxy.route import Route
from ferryman.server.sweeper import Sweeper
from ferryman.upstream.group import UpstreamGroup
from ferryman.upstream.peer import PeerState
from ferryman.upstream.pool import ConnectionPool


class Loop:
    """What a Sweeper reads of its loop when built; this test never starts one."""

    def time(self) -> float:
        return 0.0


async def no_connect(peer: PeerState, timeout: float) -> Any:
    raise AssertionError("the route test must not connect")


def make_route(spec: RouteSpec, npeers: int = 3, where: str = "servers[0].routes[0]") -> Route:
    upstream = UpstreamSpec(
        name="app", servers=tuple(PeerSpec(f"10.0.0.{i + 1}", 80) for i in range(npeers))
    )
    peers = [PeerState(s, i) for i, s in enumerate(upstream.servers)]
    group = UpstreamGroup(upstream, peers, create_balancer(upstream.balance, upstream))
    sweeper = Sweeper(Loop())  # type: ignore[arg-type]
    pool = ConnectionPool(upstream, npeers, sweeper, no_connect)
    return Route(spec, group, pool, where)


class Recorder(RequestSink):
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_request_body(self, data: bytes) -> None:
        pass

    def on_request_end(self) -> None:
        pass


@dataclass
class Ctx:
    head: RequestHead
    remote_addr: bytes = b"192.0.2.7"
    remote_port: bytes = b"40000"
    scheme: bytes = b"https"
    server_port: bytes = b"443"
    server_name: bytes = b"proxy.local"


def ctx(host: bytes = b"Site.Example:8443", extra: bytes = b"", target: bytes = b"/a?id=7") -> Ctx:
    sink = Recorder()
    RequestParser(sink).feed(b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (target, host, extra))
    return Ctx(sink.heads[0])


# ---- wiring ----


def test_route_keeps_spec_group_pool_and_timeouts() -> None:
    spec = RouteSpec(
        upstream="app",
        path="/api",
        connect_timeout=1.5,
        read_timeout=2.5,
        send_timeout=3.5,
        forwarded_headers=False,
    )
    r = make_route(spec)
    assert r.spec is spec
    assert r.group.name == "app"
    assert isinstance(r.pool, ConnectionPool)
    assert (r.connect_timeout, r.read_timeout, r.send_timeout) == (1.5, 2.5, 3.5)
    assert r.forwarded is False
    assert "/api" in repr(r) and "app" in repr(r)


# ---- set_headers ----


def test_no_set_headers() -> None:
    r = make_route(RouteSpec(upstream="app"))
    assert r.static_headers == b""
    assert r.dynamic_headers == ()
    assert r.drop == frozenset()
    assert r.render_extra(ctx()) == b""


def test_static_headers_are_pre_rendered_in_order() -> None:
    spec = RouteSpec(upstream="app", set_headers=(("X-Env", "prod"), ("X-Team", "edge ops")))
    r = make_route(spec)
    assert r.static_headers == b"X-Env: prod\r\nX-Team: edge ops\r\n"
    assert r.dynamic_headers == ()
    assert r.drop == frozenset({b"x-env", b"x-team"})
    # With no dynamic header the pre-rendered bytes are returned as they are.
    assert r.render_extra(ctx()) is r.static_headers


def test_empty_value_removes_the_header() -> None:
    spec = RouteSpec(upstream="app", set_headers=(("Accept-Encoding", ""), ("X-Keep", "1")))
    r = make_route(spec)
    assert r.static_headers == b"X-Keep: 1\r\n"
    assert b"Accept-Encoding" not in r.render_extra(ctx())
    # The client's own Accept-Encoding is dropped too: that is what removes it.
    assert b"accept-encoding" in r.drop
    assert b"x-keep" in r.drop


def test_dynamic_header_rendered_per_request() -> None:
    spec = RouteSpec(
        upstream="app",
        set_headers=(
            ("X-Static", "s"),
            ("X-Real-IP", "$remote_addr"),
            ("X-Req", "$request_method $request_uri via $scheme"),
        ),
    )
    r = make_route(spec)
    assert r.static_headers == b"X-Static: s\r\n"
    assert [name for name, _ in r.dynamic_headers] == [b"X-Real-IP", b"X-Req"]
    assert r.drop == frozenset({b"x-static", b"x-real-ip", b"x-req"})
    c = ctx(target=b"/one?q")
    assert r.render_extra(c) == (
        b"X-Static: s\r\nX-Real-IP: 192.0.2.7\r\nX-Req: GET /one?q via https\r\n"
    )
    c2 = ctx(target=b"/two")
    c2.remote_addr = b"198.51.100.1"
    assert r.render_extra(c2) == (
        b"X-Static: s\r\nX-Real-IP: 198.51.100.1\r\nX-Req: GET /two via https\r\n"
    )


def test_dynamic_header_that_renders_empty_is_omitted() -> None:
    spec = RouteSpec(upstream="app", set_headers=(("X-Session", "$cookie_sid"),))
    r = make_route(spec)
    assert r.render_extra(ctx()) == b""
    assert r.render_extra(ctx(extra=b"Cookie: sid=42\r\n")) == b"X-Session: 42\r\n"
    assert r.drop == frozenset({b"x-session"})


def test_header_name_case_is_kept_on_the_wire_but_dropped_lowercase() -> None:
    r = make_route(RouteSpec(upstream="app", set_headers=(("X-MiXeD", "v"),)))
    assert r.static_headers == b"X-MiXeD: v\r\n"
    assert r.drop == frozenset({b"x-mixed"})


def test_unknown_variable_in_set_headers_names_the_header() -> None:
    spec = RouteSpec(upstream="app", set_headers=(("X-Bad", "$nope"),))
    with pytest.raises(ConfigError) as info:
        make_route(spec, where="servers[1].routes[2]")
    assert info.value.where == "servers[1].routes[2].set_headers.X-Bad"
    assert "$nope" in info.value.reason


# ---- max_tries ----


@pytest.mark.parametrize(
    ("npeers", "tries", "expected"),
    [
        (3, 0, 3),  # 0: every peer once (nginx's default)
        (1, 0, 1),
        (5, 0, 5),
        (3, 1, 1),
        (3, 2, 2),
        (3, 3, 3),
        (3, 10, 3),  # more tries than peers: each peer at most once
        (1, 4, 1),
    ],
)
def test_max_tries(npeers: int, tries: int, expected: int) -> None:
    r = make_route(RouteSpec(upstream="app", next_upstream_tries=tries), npeers=npeers)
    assert r.max_tries == expected


# ---- Host template ----


def test_default_host_template_is_the_clients_host() -> None:
    r = make_route(RouteSpec(upstream="app"))
    assert callable(r.host)
    assert r.render_host(ctx(host=b"Site.Example:8443")) == b"site.example"
    assert r.render_host(ctx(host=b"[::1]:8443")) == b"[::1]"


def test_constant_host_template() -> None:
    r = make_route(RouteSpec(upstream="app", host_header="backend.internal"))
    assert r.host == b"backend.internal"
    assert r.render_host(ctx()) == b"backend.internal"


def test_mixed_host_template() -> None:
    r = make_route(RouteSpec(upstream="app", host_header="$http_host"))
    assert r.render_host(ctx(host=b"Site.Example:8443")) == b"Site.Example:8443"
    r = make_route(RouteSpec(upstream="app", host_header="${host}.internal:81"))
    assert r.render_host(ctx(host=b"Site.Example:8443")) == b"site.example.internal:81"


def test_unknown_variable_in_host_template() -> None:
    with pytest.raises(ConfigError) as info:
        make_route(RouteSpec(upstream="app", host_header="$proxy_nope"), where="r")
    assert info.value.where == "r.host_header"
    assert "$proxy_nope" in info.value.reason
