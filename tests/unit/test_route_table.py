"""Routing table: server selection by Host, then the longest path prefix."""

from __future__ import annotations

import pytest

from ferryman.routing.table import RouteTable, VirtualServer


def server(names: list[str], *prefixes: str) -> VirtualServer[str]:
    """A virtual server whose routes are named `<first name or 'default'>:<prefix>`."""
    label = names[0] if names else "default"
    return VirtualServer(names, [(p, f"{label}:{p}") for p in prefixes])


# ---- VirtualServer: path matching ----


def test_single_root_route_takes_the_fast_path() -> None:
    vs = server(["a"], "/")
    assert vs.single == "a:/"
    assert vs.match(b"/") == "a:/"
    assert vs.match(b"/anything/at/all?x=1") == "a:/"


def test_single_non_root_route_is_not_the_fast_path() -> None:
    vs = server(["a"], "/api")
    assert vs.single is None
    assert vs.match(b"/api/users") == "a:/api"
    assert vs.match(b"/other") is None


@pytest.mark.parametrize(
    "order",
    [
        ("/", "/api", "/api/v2"),
        ("/api/v2", "/api", "/"),
        ("/api", "/", "/api/v2"),
    ],
)
def test_longest_prefix_wins_regardless_of_declaration_order(order: tuple[str, ...]) -> None:
    vs = server(["a"], *order)
    assert vs.single is None
    assert vs.match(b"/api/v2/items") == "a:/api/v2"
    assert vs.match(b"/api/v1/items") == "a:/api"
    assert vs.match(b"/api") == "a:/api"
    assert vs.match(b"/static/x.css") == "a:/"
    assert vs.match(b"/") == "a:/"


def test_no_matching_prefix_gives_none() -> None:
    vs = server(["a"], "/api", "/static")
    assert vs.match(b"/") is None
    assert vs.match(b"/ap") is None
    assert vs.match(b"/other/api") is None


def test_prefix_match_is_plain_byte_prefix() -> None:
    # nginx prefix locations are not segment-aware: /api matches /apix too.
    vs = server(["a"], "/api", "/x")
    assert vs.match(b"/apix") == "a:/api"


def test_names_are_lower_cased() -> None:
    vs = server(["Example.COM", "*.Example.Org"], "/")
    assert vs.names == ("example.com", "*.example.org")


def test_virtual_server_repr() -> None:
    r = repr(server(["a", "b"], "/", "/x"))
    assert "'a'" in r and "'b'" in r and "2 routes" in r


# ---- RouteTable: server selection ----


def table() -> RouteTable[str]:
    return RouteTable(
        [
            server(["default.test"], "/"),
            server(["example.com", "www.example.com"], "/"),
            server(["*.example.com"], "/"),
            server(["*.api.example.com"], "/"),
            server(["[::1]"], "/"),
            server(["Mixed.Case.Test"], "/"),
        ]
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"example.com", "example.com:/"),
        (b"www.example.com", "example.com:/"),
        (b"EXAMPLE.com", "example.com:/"),
        (b"example.com:8080", "example.com:/"),
        (b"Www.Example.Com:443", "example.com:/"),
        (b"mixed.case.test", "Mixed.Case.Test:/"),
        (b"MIXED.CASE.TEST:1", "Mixed.Case.Test:/"),
        (b"default.test", "default.test:/"),
    ],
)
def test_exact_name_case_insensitive_port_stripped(host: bytes, expected: str) -> None:
    assert table().match(host, b"/") == expected


@pytest.mark.parametrize("host", [b"[::1]", b"[::1]:8080", b"[::1]:80"])
def test_ipv6_literal_host(host: bytes) -> None:
    assert table().match(host, b"/") == "[::1]:/"


def test_ipv6_literal_not_configured_falls_back_to_default() -> None:
    # The port split must not cut inside the brackets: "[::2]:8080" is not "[".
    assert table().match(b"[::2]:8080", b"/") == "default.test:/"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"foo.example.com", "*.example.com:/"),
        (b"a.b.example.com", "*.example.com:/"),
        (b"FOO.Example.COM:8443", "*.example.com:/"),
        # The longer suffix wins over the shorter one.
        (b"v1.api.example.com", "*.api.example.com:/"),
        (b"x.y.api.example.com:80", "*.api.example.com:/"),
    ],
)
def test_wildcard_longest_suffix_wins(host: bytes, expected: str) -> None:
    assert table().match(host, b"/") == expected


def test_wildcard_order_of_declaration_does_not_matter() -> None:
    t = RouteTable(
        [
            server(["default.test"], "/"),
            server(["*.api.example.com"], "/"),
            server(["*.example.com"], "/"),
        ]
    )
    assert t.match(b"v1.api.example.com", b"/") == "*.api.example.com:/"
    assert t.match(b"www.example.com", b"/") == "*.example.com:/"


def test_exact_name_beats_wildcard() -> None:
    t = RouteTable(
        [
            server(["default.test"], "/"),
            server(["*.example.com"], "/"),
            server(["www.example.com"], "/"),
        ]
    )
    assert t.match(b"www.example.com", b"/") == "www.example.com:/"
    assert t.match(b"ftp.example.com", b"/") == "*.example.com:/"


def test_wildcard_does_not_match_the_bare_domain() -> None:
    # nginx: "*.example.com" matches subdomains only, not "example.com" itself.
    t = RouteTable([server(["default.test"], "/"), server(["*.example.com"], "/")])
    assert t.match(b"example.com", b"/") == "default.test:/"
    assert t.match(b"notexample.com", b"/") == "default.test:/"


@pytest.mark.parametrize("host", [b"unknown.test", b"unknown.test:81", b"com", b""])
def test_unknown_host_goes_to_the_first_server(host: bytes) -> None:
    assert table().match(host, b"/") == "default.test:/"


def test_host_none_goes_to_the_default_server() -> None:
    t = table()
    assert t.server_for(None) is t.server_for(b"default.test")
    assert t.match(None, b"/x") == "default.test:/"


def test_first_server_is_default_even_without_names() -> None:
    t = RouteTable([server([], "/"), server(["a.test"], "/")])
    assert t.match(b"zzz", b"/") == "default:/"
    assert t.match(None, b"/") == "default:/"
    assert t.match(b"a.test", b"/") == "a.test:/"


def test_duplicate_exact_name_first_server_wins() -> None:
    t = RouteTable([server(["dflt"], "/"), server(["dup.test"], "/"), server(["dup.test"], "/z")])
    assert t.match(b"dup.test", b"/z") == "dup.test:/"


def test_single_server_serves_every_host() -> None:
    only = server(["only.test"], "/", "/api")
    t = RouteTable([only])
    for host in (None, b"only.test", b"other.test", b"[::1]:80"):
        assert t.server_for(host) is only
    assert t.match(b"other.test", b"/api/x") == "only.test:/api"


def test_match_combines_host_and_path() -> None:
    t = RouteTable(
        [
            server(["a.test"], "/", "/api"),
            server(["b.test"], "/static"),
        ]
    )
    assert t.match(b"a.test", b"/api/1") == "a.test:/api"
    assert t.match(b"b.test", b"/static/x") == "b.test:/static"
    assert t.match(b"b.test", b"/api") is None


def test_empty_table_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one server"):
        RouteTable([])
