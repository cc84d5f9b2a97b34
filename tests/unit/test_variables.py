"""Header templates: `$variables` compiled once at load, rendered per request."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ferryman.errors import ConfigError
from ferryman.http.messages import RequestHead
from ferryman.http.request_parser import RequestParser, RequestSink
from ferryman.proxy.variables import (
    compile_template,
    is_request_host,
    known_variable,
    request_host,
)


class Recorder(RequestSink):
    """A RequestSink that keeps what the parser produced."""

    def __init__(self) -> None:
        self.heads: list[RequestHead] = []
        self.body: list[bytes] = []
        self.ended = 0

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_request_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_request_end(self) -> None:
        self.ended += 1


def parse_head(raw: bytes) -> RequestHead:
    sink = Recorder()
    RequestParser(sink).feed(raw)
    assert len(sink.heads) == 1
    return sink.heads[0]


@dataclass
class Ctx:
    head: RequestHead
    remote_addr: bytes = b"192.0.2.7"
    remote_port: bytes = b"54321"
    scheme: bytes = b"http"
    server_port: bytes = b"8080"
    server_name: bytes = b"proxy.local"
    # $uri and $args: the normalised path and the query, which a rewrite may change;
    # the exchange keeps them apart from the head for that reason.
    uri: bytes = b""
    args: bytes = b""

    def __post_init__(self) -> None:
        self.uri = self.uri or self.head.path
        self.args = self.args or self.head.query


def ctx(
    target: bytes = b"/path/to?x=1&sid=abc",
    host: bytes | None = b"Example.COM:8080",
    extra: bytes = b"",
    version: bytes = b"1.1",
) -> Ctx:
    lines = b"GET %s HTTP/%s\r\n" % (target, version)
    if host is not None:
        lines += b"Host: %s\r\n" % host
    return Ctx(parse_head(lines + extra + b"\r\n"))


def render(text: str, c: Ctx) -> bytes:
    tpl = compile_template(text, "test")
    return tpl if isinstance(tpl, bytes) else tpl(c)


# ---- constants ----


@pytest.mark.parametrize("text", ["", "plain", "no dollars here", "a-b_c d"])
def test_constant_text_compiles_to_bytes(text: str) -> None:
    assert compile_template(text, "x") == text.encode()


def test_lone_dollar_is_literal() -> None:
    assert compile_template("cost $ 5", "x") == b"cost $ 5"


# ---- $host ----


def test_host_strips_port_and_lowercases() -> None:
    assert render("$host", ctx(host=b"Example.COM:8080")) == b"example.com"
    assert render("$host", ctx(host=b"WWW.example.org")) == b"www.example.org"


def test_host_ipv6_literal_keeps_brackets() -> None:
    assert render("$host", ctx(host=b"[::1]:8080")) == b"[::1]"


def test_host_falls_back_to_server_name_without_host() -> None:
    c = ctx(host=None, version=b"1.0")
    assert c.head.host is None
    assert render("$host", c) == b"proxy.local"


def test_host_from_absolute_form_target() -> None:
    c = ctx(target=b"http://Other.Example:81/x", host=b"ignored.example")
    assert render("$host", c) == b"other.example"


def test_http_host_is_verbatim() -> None:
    assert render("$http_host", ctx(host=b"Example.COM:8080")) == b"Example.COM:8080"


def test_single_variable_compiles_to_a_function() -> None:
    tpl = compile_template("$host", "x")
    assert callable(tpl)


@pytest.mark.parametrize(
    ("text", "is_host"),
    [
        ("$host", True),
        ("${host}", True),
        ("$http_host", False),
        ("x$host", False),
        ("$host:1", False),
    ],
)
def test_only_a_bare_host_template_is_the_request_host(text: str, is_host: bool) -> None:
    # The exchange computes such a template natively (request_host) instead of calling it.
    assert is_request_host(compile_template(text, "x")) is is_host


@pytest.mark.parametrize(
    "c",
    [
        ctx(host=b"Example.COM:8080"),
        ctx(host=b"[::1]:8080"),
        ctx(target=b"http://Other.Example:81/x", host=b"ignored.example"),
        ctx(host=None, version=b"1.0"),
    ],
)
def test_request_host_is_host_but_for_the_server_name(c: Ctx) -> None:
    host = request_host(c.head)
    rendered = render("$host", c)
    assert host == rendered if host is not None else rendered == b"proxy.local"


# ---- request variables ----


def test_http_header_variable_is_case_insensitive_with_dashes() -> None:
    c = ctx(extra=b"User-Agent: curl/8.0\r\nX-Custom-Thing: yes\r\n")
    assert render("$http_user_agent", c) == b"curl/8.0"
    assert render("$http_x_custom_thing", c) == b"yes"
    assert render("$http_X_Custom_Thing", c) == b"yes"
    assert render("$http_missing", c) == b""


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/?x=1", b"1"),
        (b"/?a=2&x=hello&b=3", b"hello"),
        (b"/?xx=1&x=", b""),
        (b"/?y=1", b""),
        (b"/", b""),
        (b"/?x=first&x=second", b"first"),
    ],
)
def test_arg_variable(target: bytes, expected: bytes) -> None:
    assert render("$arg_x", ctx(target=target)) == expected


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (b"sid=abc123", b"abc123"),
        (b"a=1; sid=xyz; b=2", b"xyz"),
        (b"a=1;sid=tight", b"tight"),
        (b"sidx=no; sid=yes", b"yes"),
        (b"other=1", b""),
    ],
)
def test_cookie_variable(cookie: bytes, expected: bytes) -> None:
    assert render("$cookie_sid", ctx(extra=b"Cookie: %s\r\n" % cookie)) == expected


def test_cookie_variable_without_cookie_header() -> None:
    assert render("$cookie_sid", ctx()) == b""


def test_connection_variables() -> None:
    c = ctx()
    assert render("$remote_addr", c) == b"192.0.2.7"
    assert render("$remote_port", c) == b"54321"
    assert render("$scheme", c) == b"http"
    assert render("$server_port", c) == b"8080"
    assert render("$server_name", c) == b"proxy.local"


def test_request_line_variables() -> None:
    c = ctx(target=b"/path/to?x=1&sid=abc")
    assert render("$request_uri", c) == b"/path/to?x=1&sid=abc"
    assert render("$uri", c) == b"/path/to"
    assert render("$args", c) == b"x=1&sid=abc"
    assert render("$query_string", c) == b"x=1&sid=abc"
    assert render("$request_method", c) == b"GET"


def test_proxy_add_x_forwarded_for() -> None:
    assert render("$proxy_add_x_forwarded_for", ctx()) == b"192.0.2.7"
    c = ctx(extra=b"X-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\n")
    assert render("$proxy_add_x_forwarded_for", c) == b"10.0.0.1, 10.0.0.2, 192.0.2.7"


# ---- syntax ----


def test_braces_form() -> None:
    c = ctx(host=b"example.com")
    assert render("${host}", c) == b"example.com"
    # Braces let a name run into text that would otherwise extend it.
    assert render("${host}_suffix", c) == b"example.com_suffix"
    assert render("${arg_x}1", ctx(target=b"/?x=9")) == b"91"


def test_mixed_literal_and_variables() -> None:
    c = ctx(target=b"/p?x=42", host=b"Example.com:80", extra=b"User-Agent: ua/1\r\n")
    text = 'for=$remote_addr;host=$host;ua="$http_user_agent";x=${arg_x}!'
    assert render(text, c) == b'for=192.0.2.7;host=example.com;ua="ua/1";x=42!'


def test_adjacent_variables() -> None:
    assert render("$scheme://$host$request_uri", ctx(target=b"/a?b", host=b"H.test:1")) == (
        b"http://h.test/a?b"
    )


def test_template_is_reusable_across_requests() -> None:
    tpl = compile_template("<$host>", "x")
    assert callable(tpl)
    assert tpl(ctx(host=b"a.test")) == b"<a.test>"
    assert tpl(ctx(host=b"b.test")) == b"<b.test>"


# ---- errors ----


@pytest.mark.parametrize(
    "name", ["nope", "http_", "arg_", "cookie_", "upstream_nope", "sent_http_"]
)
def test_unknown_variable_is_a_config_error_naming_it_and_where(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_template(f"x $host ${name} y", "servers[0].routes[1].set_headers.X-Foo")
    err = info.value
    assert err.where == "servers[0].routes[1].set_headers.X-Foo"
    assert f"${name}" in err.reason
    assert "servers[0].routes[1].set_headers.X-Foo" in str(err)
    assert f"${name}" in str(err)


def test_unknown_variable_in_braces() -> None:
    with pytest.raises(ConfigError, match=r"\$bogus"):
        compile_template("${bogus}", "here")


@pytest.mark.parametrize(
    ("name", "known"),
    [
        ("host", True),
        ("http_user_agent", True),
        ("arg_page", True),
        ("cookie_sid", True),
        ("remote_addr", True),
        ("http_", False),
        ("nope", False),
    ],
)
def test_known_variable(name: str, known: bool) -> None:
    assert known_variable(name) is known


@pytest.mark.parametrize(
    ("raw", "want"),
    [(b"Example.COM:8080", b"example.com"), (b"[::1]:80", b"[::1]"), (b"a.example.", b"a.example")],
)
def test_host_is_the_parsers_name_or_derived_from_the_host(raw: bytes, want: bytes) -> None:
    c = ctx(host=raw)
    assert c.head.host_name == want  # what the request parser carries
    assert render("$host", c) == want
    c.head.host_name = None  # a head built elsewhere (no parser) has none
    assert render("$host", c) == want
