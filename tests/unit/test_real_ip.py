"""The real client address decision (nginx realip), without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
from ferryman.config.nginx import load_nginx
from ferryman.config.schema import Config, RealIpSpec
from ferryman.errors import ConfigError
from ferryman.filters.real_ip import RealIp, parse_address, parse_network

TRUSTED = ("127.0.0.2", "10.0.0.0/8", "2001:db8::/32")


def real(header: str = "X-Forwarded-For", recursive: bool = False) -> RealIp:
    return RealIp(RealIpSpec(trusted=TRUSTED, header=header, recursive=recursive))


def xff(*values: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"X-Forwarded-For", v) for v in values]


def test_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    r = real()
    assert r.client(b"127.0.0.1", xff(b"6.6.6.6")) is None
    assert r.client(b"192.0.2.1", [(b"X-Real-IP", b"6.6.6.6")]) is None
    assert real("proxy_protocol").client(b"127.0.0.1", [], b"6.6.6.6") is None


def test_trusted_peer_names_the_client_rightmost_entry() -> None:
    r = real()
    assert r.client(b"127.0.0.2", xff(b"203.0.113.5")) == b"203.0.113.5"
    # Not recursive: the rightmost entry, even though it is itself trusted.
    assert r.client(b"127.0.0.2", xff(b"203.0.113.5, 10.1.2.3")) == b"10.1.2.3"
    # Repeated fields are one list, in order.
    assert r.client(b"10.9.9.9", xff(b"1.1.1.1", b"2.2.2.2 ,  ")) == b"2.2.2.2"


def test_recursive_skips_trusted_hops_from_the_right() -> None:
    r = real(recursive=True)
    assert r.client(b"127.0.0.2", xff(b"6.6.6.6, 203.0.113.5, 10.1.2.3")) == b"203.0.113.5"
    # Every hop trusted: the leftmost one (nginx's behaviour).
    assert r.client(b"127.0.0.2", xff(b"10.0.0.1, 10.0.0.2")) == b"10.0.0.1"
    # A spoofed left part does not matter: the walk stops at the first untrusted hop.
    assert r.client(b"127.0.0.2", xff(b"10.0.0.1, 198.51.100.7")) == b"198.51.100.7"


def test_garbage_ends_the_walk_keeping_what_was_found() -> None:
    r = real(recursive=True)
    assert r.client(b"127.0.0.2", xff(b"junk")) is None
    assert r.client(b"127.0.0.2", xff(b"1.2.3.4, junk, 10.0.0.3")) == b"10.0.0.3"
    assert r.client(b"127.0.0.2", xff(b"1.2.3.4, unknown, 10.0.0.3, 10.0.0.4")) == b"10.0.0.3"
    assert r.client(b"127.0.0.2", xff(b"1.2.3.4, 10.0.0.3")) == b"1.2.3.4"


def test_no_header_keeps_the_peer() -> None:
    assert real().client(b"127.0.0.2", []) is None
    assert real().client(b"127.0.0.2", [(b"X-Real-IP", b"1.2.3.4")]) is None


def test_x_real_ip() -> None:
    r = real("X-Real-IP")
    assert r.client(b"127.0.0.2", [(b"x-real-ip", b" 203.0.113.9 ")]) == b"203.0.113.9"
    assert r.client(b"127.0.0.2", [(b"X-Real-IP", b"1.2.3.4, 5.6.7.8")]) is None
    assert r.client(b"127.0.0.2", [(b"X-Real-IP", b"[2001:DB8::1]:443")]) == b"2001:db8::1"


def test_forwarded_rfc7239() -> None:
    r = real("Forwarded", recursive=True)
    fields = [
        (b"Forwarded", b'for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8::17]:4711"'),
        (b"Forwarded", b"for=10.0.0.5"),
    ]
    assert r.client(b"127.0.0.2", fields) == b"192.0.2.60"
    assert real("Forwarded").client(b"127.0.0.2", fields) == b"10.0.0.5"
    # Quoted commas do not split elements; obfuscated identifiers end the walk,
    # keeping the last address found.
    odd = [(b"Forwarded", b'for=198.51.100.1, for="_hidden,x";by=a, for=10.0.0.9')]
    assert r.client(b"127.0.0.2", odd) == b"10.0.0.9"
    assert r.client(b"127.0.0.2", [*odd[:1], (b"Forwarded", b"for=unknown")]) is None
    assert r.client(b"127.0.0.2", [(b"Forwarded", b"proto=https")]) is None
    assert r.client(b"127.0.0.2", [(b"Forwarded", b"FOR=192.0.2.1:80")]) == b"192.0.2.1"


def test_proxy_protocol_source() -> None:
    r = real("proxy_protocol")
    assert r.client(b"10.1.1.1", [], b"203.0.113.1") == b"203.0.113.1"
    assert r.client(b"10.1.1.1", xff(b"6.6.6.6"), None) is None
    assert r.client(b"2001:db8::5", [], b"2001:db8:0::9") == b"2001:db8::9"


def test_ipv6_peer_and_cidrs() -> None:
    r = real()
    assert r.client(b"2001:db8::1", xff(b"198.51.100.2")) == b"198.51.100.2"
    assert r.client(b"2001:db9::1", xff(b"198.51.100.2")) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"1.2.3.4", "1.2.3.4"),
        (b"1.2.3.4:8080", "1.2.3.4"),
        (b"::1", "::1"),
        (b"[::1]", "::1"),
        (b"[::1]:80", "::1"),
        (b"1.2.3.4:", None),
        (b"1.2.3.4:+80", None),
        (b"1.2.3.4:1234567", None),
        (b"01.2.3.4", None),
        (b"fe80::1%eth0", None),
        (b"\xd9\xa1.2.3.4", None),
        (b"[::1", None),
        (b"example.com", None),
        (b"", None),
    ],
)
def test_parse_address(text: bytes, expected: str | None) -> None:
    found = parse_address(text)
    assert (found.compressed if found is not None else None) == expected


def test_parse_network() -> None:
    assert str(parse_network("10.1.2.3/8")) == "10.0.0.0/8"
    assert str(parse_network("::1")) == "::1/128"
    for bad in ("10.0.0.0/33", "all", "fe80::1%1/64", "\uff11.2.3.4"):
        with pytest.raises(ValueError):
            parse_network(bad)


# ---- configuration: native keys, nginx directives, the dump round trip ----

NATIVE = """
max_connections: 100
upstreams: {app: {servers: ["127.0.0.1:9"]}}
servers:
  - listen: [{address: "127.0.0.1:8080", proxy_protocol: true}, "127.0.0.1:8081"]
    real_ip: {trusted: ["127.0.0.2", "10.0.0.0/8", "::1"], header: proxy_protocol}
    routes: [{path: /, upstream: app}]
  - listen: "127.0.0.1:8082"
    real_ip: {trusted: "192.168.0.0/16", recursive: true}
    routes: [{path: /, upstream: app}]
"""


def test_native_keys_and_dump_round_trip() -> None:
    config = load_native(NATIVE, "t.yaml")
    assert config.max_connections == 100
    first, second = config.servers
    assert [spec.proxy_protocol for spec in first.listen] == [True, False]
    assert first.real_ip == RealIpSpec(
        trusted=("127.0.0.2", "10.0.0.0/8", "::1"), header="proxy_protocol"
    )
    assert second.real_ip == RealIpSpec(trusted=("192.168.0.0/16",), recursive=True)
    assert load_native(dump_native(config), "t.yaml") == config


@pytest.mark.parametrize(
    ("snippet", "where", "reason"),
    [
        ("real_ip: {trusted: [10.0.0.0/33]}", "servers[0].real_ip.trusted[0]", "CIDR"),
        ("real_ip: {trusted: [all]}", "servers[0].real_ip.trusted[0]", "CIDR"),
        ("real_ip: {trusted: [1.2.3.4], header: X-Client}", "real_ip.header", "one of"),
        ("real_ip: {header: X-Real-IP}", "servers[0].real_ip", "trusted"),
        ("real_ip: {trusted: [1.2.3.4], recursive: yes}", "real_ip.recursive", "true or"),
    ],
)
def test_native_errors(snippet: str, where: str, reason: str) -> None:
    text = (
        'upstreams: {app: {servers: ["127.0.0.1:9"]}}\nservers:\n'
        f'  - listen: "127.0.0.1:8080"\n    {snippet}\n    routes: [{{path: /, upstream: app}}]\n'
    )
    with pytest.raises(ConfigError) as info:
        load_native(text, "t.yaml")
    assert where in info.value.where and reason in info.value.reason, info.value


def test_native_max_connections_bounds() -> None:
    base = 'upstreams: {app: {servers: ["127.0.0.1:9"]}}\nservers: [{listen: 80}]\n'
    assert load_native(base + "max_connections: 0", "t.yaml").max_connections == 0
    with pytest.raises(ConfigError, match="max_connections"):
        load_native(base + "max_connections: -1", "t.yaml")


def _nginx(tmp_path: Path, body: str, http: str = "") -> Config:
    path = tmp_path / "nginx.conf"
    path.write_text(
        f"events {{}}\nhttp {{\n{http}\n  server {{\n    listen 8080;\n{body}\n"
        "    location / { return 204; }\n  }\n}\n"
    )
    return load_nginx(str(path))


def test_nginx_real_ip_in_a_location_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _nginx(tmp_path, "    location /x { set_real_ip_from 10.0.0.0/8; return 204; }")
    assert "nginx.conf:6" in info.value.where
    assert "in a location is not supported" in info.value.reason


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("set_real_ip_from 10.0.0.0/40;", 'invalid value "10.0.0.0/40"'),
        ("set_real_ip_from unix:;", "unix:"),
        ("real_ip_header X-Client-IP;", "is not supported"),
        ("real_ip_recursive maybe;", 'must be "on" or "off"'),
    ],
)
def test_nginx_errors(tmp_path: Path, line: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        _nginx(tmp_path, "    " + line)
    assert reason in info.value.reason, info.value


def test_nginx_server_level_replaces_the_http_list(tmp_path: Path) -> None:
    config = _nginx(tmp_path, "    set_real_ip_from ::1;", http="  set_real_ip_from 10.0.0.0/8;")
    assert config.servers[0].real_ip == RealIpSpec(trusted=("::1",), header="X-Real-IP")
