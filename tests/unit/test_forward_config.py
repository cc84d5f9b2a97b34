"""The forward proxy's configuration: the native `forward` section (values, defaults,
key-path errors), its dump round trip, the quick form behind `ferryman forward`, the
route the engine runs on, and the pure header rewrite of each anonymity level."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ferryman.app import build_worker
from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
from ferryman.config.quick import forward_config
from ferryman.config.schema import DestinationRule, ForwardSpec, ProxyAuthSpec
from ferryman.errors import ConfigError
from ferryman.proxy.forward import ProxyAuthFilter, forward_route, rewrite_fields

FULL = """\
cache_zones: [{name: fw}]
limit_zones: [{name: perip, kind: req, key: $remote_addr, rate: 10r/s}]
servers:
  - listen: "127.0.0.1:3128"
    forward:
      connect_ports: [443, 8443]
      anonymity: elite
      user_agent: "Mozilla/5.0 (proxy)"
      destinations:
        - deny: "*.ads.test"
        - deny: "port:25"
        - allow: "10.1.0.0/16"
      allow_private: true
      access:
        - allow: 127.0.0.0/8
        - deny: all
      limit_req: [{zone: perip, burst: 5}]
      cache: {zone: fw}
      resolve_timeout: 2s
      connect_timeout: 3s
      read_timeout: 30s
      keepalive: 4
      pac: {path: /wpad.dat}
"""


def test_the_full_section_loads() -> None:
    config = load_native(FULL, "fw.yaml")
    forward = config.servers[0].forward
    assert forward is not None
    assert forward.connect_ports == (443, 8443)
    assert forward.anonymity == "elite"
    assert forward.user_agent == "Mozilla/5.0 (proxy)"
    assert forward.destinations == (
        DestinationRule("deny", "*.ads.test"),
        DestinationRule("deny", "port:25"),
        DestinationRule("allow", "10.1.0.0/16"),
    )
    assert forward.allow_private
    assert [r.action for r in forward.access] == ["allow", "deny"]
    assert forward.limit_req[0].zone == "perip"
    assert forward.cache is not None and forward.cache.zone == "fw"
    assert (forward.resolve_timeout, forward.connect_timeout, forward.read_timeout) == (2, 3, 30)
    assert forward.keepalive == 4
    assert forward.pac is not None and forward.pac.path == "/wpad.dat"
    assert config.servers[0].routes == ()


def test_defaults_are_safe() -> None:
    text = 'servers: [{listen: "127.0.0.1:3128", forward: {}}]\n'
    forward = load_native(text, "fw.yaml").servers[0].forward
    assert forward == ForwardSpec()
    assert forward.connect_ports == (443,)
    assert not forward.allow_private
    assert forward.anonymity == "transparent"


def test_dump_round_trips() -> None:
    config = load_native(FULL, "fw.yaml")
    assert load_native(dump_native(config), "fw.yaml") == config
    minimal = load_native('servers: [{listen: "127.0.0.1:3128", forward: {}}]\n', "fw.yaml")
    assert load_native(dump_native(minimal), "fw.yaml") == minimal


@pytest.mark.parametrize(
    ("forward", "where", "why"),
    [
        ("{anonymity: invisible}", "servers[0].forward.anonymity", "transparent"),
        ("{connect_ports: [0]}", "servers[0].forward.connect_ports[0]", "1 to 65535"),
        ("{connect_ports: [443, 443]}", "servers[0].forward.connect_ports", "443"),
        (
            "{destinations: [{deny: 'port:99999'}]}",
            "servers[0].forward.destinations[0].deny",
            "port",
        ),
        ("{destinations: [{deny: 'a..b'}]}", "servers[0].forward.destinations[0].deny", "domain"),
        ("{destinations: [{allow: x, deny: y}]}", "servers[0].forward.destinations[0]", "one of"),
        ("{auth: {realm: r}}", "servers[0].forward.auth", "user_file"),
        ("{bogus: 1}", "servers[0].forward.bogus", "unknown key"),
        ("{cache: {zone: nope}}", "servers[0].forward.cache.zone", "not in cache_zones"),
        ("{limit_req: [{zone: nope}]}", "servers[0].forward.limit_req[0].zone", "req zone"),
        ("{resolve_timeout: 0s}", "servers[0].forward.resolve_timeout", "longer than 0"),
    ],
)
def test_errors_name_their_key_path(forward: str, where: str, why: str) -> None:
    text = f'servers: [{{listen: "127.0.0.1:3128", forward: {forward}}}]\n'
    with pytest.raises(ConfigError) as info:
        load_native(text, "fw.yaml")
    assert where in str(info.value)
    assert why in str(info.value)


def test_a_forward_server_has_no_routes() -> None:
    text = (
        "upstreams: {app: {servers: ['127.0.0.1:1']}}\n"
        'servers: [{listen: "127.0.0.1:3128", forward: {}, routes: [{path: /, upstream: app}]}]\n'
    )
    with pytest.raises(ConfigError, match=r"servers\[0\]\.routes"):
        load_native(text, "fw.yaml")


def test_an_address_is_forward_or_reverse_not_both() -> None:
    text = (
        "upstreams: {app: {servers: ['127.0.0.1:1']}}\n"
        "servers:\n"
        '  - {listen: "127.0.0.1:3128", forward: {}}\n'
        '  - {listen: "127.0.0.1:3128", routes: [{path: /, upstream: app}]}\n'
    )
    config = load_native(text, "fw.yaml")
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ConfigError, match=r"servers\[0\]\.forward"):
            build_worker(config, loop, {})
    finally:
        loop.close()


def test_the_worker_puts_the_engine_on_the_forward_listener_only(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("ann:{PLAIN}secret\n")
    text = (
        "upstreams: {app: {servers: ['127.0.0.1:1']}}\n"
        "servers:\n"
        f'  - {{listen: "127.0.0.1:3128", forward: {{auth: {{realm: p, user_file: "{users}"}}}}}}\n'
        '  - {listen: "127.0.0.1:8080", routes: [{path: /, upstream: app}]}\n'
    )
    loop = asyncio.new_event_loop()
    try:
        runtime = build_worker(load_native(text, "fw.yaml"), loop, {})
    finally:
        loop.close()
    by_port = {listen.port: ctx for listen, ctx in runtime.listeners}
    assert by_port[8080].forward is None
    engine = by_port[3128].forward
    assert engine is not None and engine.connect_ports == frozenset({443})
    route = by_port[3128].table.server_for(b"x").single
    assert route is not None
    assert any(isinstance(f, ProxyAuthFilter) for f in route.filters)


def test_quick_form() -> None:
    config = forward_config(
        "127.0.0.1:3128",
        connect_ports="443,8443",
        anonymity="anonymous",
        allow_private=True,
        auth_file="/etc/users",
        destinations=(("deny", "*.ads.test"), ("allow", "all")),
        access_log="off",
    )
    forward = config.servers[0].forward
    assert forward is not None
    assert forward.connect_ports == (443, 8443)
    assert forward.anonymity == "anonymous"
    assert forward.allow_private
    assert forward.auth == ProxyAuthSpec(realm="proxy", user_file="/etc/users")
    assert forward.destinations[0] == DestinationRule("deny", "*.ads.test")
    assert config.access_log.path is None
    # The quick form is a config like any other: it dumps and loads back.
    assert load_native(dump_native(config), "<command line>") == config


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"connect_ports": "443,x"}, "--connect-ports"),
        ({"connect_ports": "70000"}, "--connect-ports"),
        ({"anonymity": "invisible"}, "--anonymity"),
        ({"destinations": (("deny", "port:0"),)}, "--deny-dest"),
        ({"listen": "nowhere"}, "--listen"),
    ],
)
def test_quick_form_errors_name_the_flag(kwargs: dict[str, object], flag: str) -> None:
    listen = str(kwargs.pop("listen", "127.0.0.1:3128"))
    with pytest.raises(ConfigError, match=flag):
        forward_config(listen, **kwargs)  # type: ignore[arg-type]


def test_the_route_keys_the_cache_by_the_absolute_uri() -> None:
    config = load_native(FULL, "fw.yaml")
    forward = config.servers[0].forward
    assert forward is not None
    route = forward_route(forward)
    assert route.cache is not None and route.cache.key == "$request_uri"
    assert route.host_header == "$http_host"
    assert not route.forwarded_headers
    assert route.read_timeout == 30


FIELDS = (
    b"User-Agent: curl/8\r\n"
    b"Via: 1.0 upstream-proxy\r\n"
    b"Forwarded: for=10.0.0.7\r\n"
    b"X-Forwarded-Port: 443\r\n"
    b"X-Real-IP: 10.0.0.7\r\n"
    b"Proxy-Authorization: Basic YTpi\r\n"
    b"Accept: */*\r\n"
)


def _names(fields: bytes) -> list[bytes]:
    return [line.split(b":", 1)[0].lower() for line in fields.split(b"\r\n") if line]


def test_transparent_adds_via_and_keeps_the_rest() -> None:
    out = rewrite_fields(FIELDS, "transparent", b"1.1")
    assert b"Via: 1.0 upstream-proxy, 1.1 ferryman\r\n" in out
    assert b"Forwarded: for=10.0.0.7\r\n" in out
    assert b"proxy-authorization" not in _names(out)


def test_anonymous_adds_via_and_drops_address_fields() -> None:
    out = rewrite_fields(FIELDS, "anonymous", b"1.1")
    names = _names(out)
    assert b"via" in names
    for gone in (b"forwarded", b"x-forwarded-port", b"x-real-ip", b"proxy-authorization"):
        assert gone not in names
    assert b"10.0.0.7" not in out


def test_elite_adds_nothing_and_drops_via_too() -> None:
    out = rewrite_fields(FIELDS, "elite", b"1.1", b"Mozilla/5.0")
    assert _names(out) == [b"accept", b"user-agent"]
    assert b"User-Agent: Mozilla/5.0\r\n" in out
