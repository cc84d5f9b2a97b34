"""RequestParser byte scripts: bytes in, sink events (or a ProtocolError with the status
to answer) out. No sockets, no event loop.

Every accepted script is also fed one byte at a time: framing must not depend on how
the bytes were split into reads.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import pytest

from ferryman.errors import ProtocolError
from ferryman.http import Framing, RequestHead, RequestParser, RequestSink
from ferryman.http.fields import parse_content_length
from ferryman.http.request_parser import MAX_HEAD_BYTES, MAX_HEADERS, MAX_REQUEST_LINE

# ---------------------------------------------------------------- the recording sink


@dataclass
class Recorder(RequestSink):
    """A RequestSink that keeps every event, with consecutive body pieces merged (how
    llhttp splits a body depends on the reads, what the body is does not)."""

    events: list[tuple[str, object]] = field(default_factory=list)

    def on_request_head(self, head: RequestHead) -> None:
        self.events.append(("head", head))

    def on_request_body(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            prior = self.events[-1][1]
            assert isinstance(prior, bytes)
            self.events[-1] = ("body", prior + data)
        else:
            self.events.append(("body", data))

    def on_request_end(self) -> None:
        self.events.append(("end", None))

    @property
    def heads(self) -> list[RequestHead]:
        return [h for kind, h in self.events if kind == "head"]  # type: ignore[misc]


def summary(head: RequestHead) -> tuple[object, ...]:
    return (
        head.method,
        head.target,
        head.version,
        head.headers,
        head.host,
        head.host_name,
        head.keep_alive,
        head.framing,
        head.content_length,
        head.connection_tokens,
        head.upgrade,
        head.path,
        head.query,
        head.fields,
        head.forwarded_for,
    )


def comparable(events: list[tuple[str, object]]) -> list[tuple[str, object]]:
    return [(k, summary(v) if isinstance(v, RequestHead) else v) for k, v in events]


def feed_all(data: bytes, step: int | None = None) -> tuple[Recorder, bytes | None]:
    """Feed `data` in one piece, or in pieces of `step` bytes; returns the sink and the
    tail returned by the last feed (bytes after an Upgrade/CONNECT head)."""
    sink = Recorder()
    parser = RequestParser(sink)
    if step is None:
        return sink, parser.feed(data)
    tail = None
    for i in range(0, len(data), step):
        tail = parser.feed(data[i : i + step])
        if tail is not None:
            return sink, tail + data[i + step :]
    return sink, tail


def parse(data: bytes) -> Recorder:
    """Parse in one feed and in 1-byte feeds; both must give identical events."""
    whole, tail = feed_all(data)
    bytewise, tail_bytewise = feed_all(data, 1)
    assert comparable(whole.events) == comparable(bytewise.events)
    assert tail == tail_bytewise
    return whole


def one_head(data: bytes) -> RequestHead:
    sink = parse(data)
    assert [k for k, _ in sink.events if k != "body"] == ["head", "end"]
    return sink.heads[0]


def rejected(data: bytes, step: int | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        feed_all(data, step)
    return info.value


def request(*header_lines: bytes, start: bytes = b"GET / HTTP/1.1", body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(h + b"\r\n" for h in header_lines) + b"\r\n" + body


# ---------------------------------------------------------------- valid requests


def test_simple_get() -> None:
    head = one_head(request(b"Host: example.com", b"Accept: */*"))
    assert head.method == b"GET"
    assert head.target == b"/"
    assert head.version == b"1.1"
    assert head.host == b"example.com"
    assert head.keep_alive is True
    assert head.framing is Framing.NONE
    assert head.content_length == 0
    assert head.path == b"/" and head.query == b""
    assert head.headers == [(b"Host", b"example.com"), (b"Accept", b"*/*")]
    assert head.fields == b"Accept: */*\r\n"
    assert head.request_line == b"GET / HTTP/1.1"


def test_path_and_query_are_split() -> None:
    head = one_head(request(b"Host: a", start=b"GET /p/q;x?a=1&b=%20 HTTP/1.1"))
    assert head.path == b"/p/q;x"
    assert head.query == b"a=1&b=%20"
    assert head.target == b"/p/q;x?a=1&b=%20"


def test_post_with_content_length() -> None:
    sink = parse(
        request(b"Host: a", b"Content-Length: 11", start=b"POST /u HTTP/1.1", body=b"hello world")
    )
    head = sink.heads[0]
    assert head.framing is Framing.LENGTH
    assert head.content_length == 11
    assert [k for k, _ in sink.events] == ["head", "body", "end"]
    assert sink.events[1] == ("body", b"hello world")


def test_content_length_zero_means_no_body() -> None:
    head = one_head(request(b"Host: a", b"Content-Length: 0", start=b"POST / HTTP/1.1"))
    assert head.framing is Framing.NONE
    assert head.content_length == 0


def test_content_length_body_is_not_read_past() -> None:
    # The byte after the body is the start of the next request, not more body.
    data = request(b"Host: a", b"Content-Length: 3", start=b"POST / HTTP/1.1", body=b"abc")
    sink = parse(data + request(b"Host: a"))
    assert [k for k, _ in sink.events] == ["head", "body", "end", "head", "end"]
    assert sink.events[1] == ("body", b"abc")


def test_chunked_body() -> None:
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    sink = parse(
        request(b"Host: a", b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.1", body=body)
    )
    head = sink.heads[0]
    assert head.framing is Framing.CHUNKED
    assert ("body", b"hello world") in sink.events
    assert [k for k, _ in sink.events] == ["head", "body", "end"]


def test_chunked_body_with_extensions_and_trailers() -> None:
    # RFC 9112 7.1.1 chunk extensions (token and quoted-string values), 7.1.2 trailers.
    body = b'5;name=value\r\nhello\r\nA;q="a b";flag\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n'
    sink = parse(
        request(b"Host: a", b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.1", body=body)
    )
    assert [k for k, _ in sink.events] == ["head", "body", "end"]
    assert sink.events[1] == ("body", b"hello0123456789")


def test_chunked_coding_name_is_case_insensitive() -> None:
    head = one_head(
        request(
            b"Host: a", b"Transfer-Encoding: Chunked", start=b"POST / HTTP/1.1", body=b"0\r\n\r\n"
        )
    )
    assert head.framing is Framing.CHUNKED


def test_pipelined_requests_in_one_feed_and_bytewise() -> None:
    data = (
        request(b"Host: a", start=b"GET /1 HTTP/1.1")
        + request(b"Host: a", b"Content-Length: 4", start=b"POST /2 HTTP/1.1", body=b"abcd")
        + request(
            b"Host: a",
            b"Transfer-Encoding: chunked",
            start=b"PUT /3 HTTP/1.1",
            body=b"3\r\nxyz\r\n0\r\n\r\n",
        )
        + request(b"Host: b", b"Connection: close", start=b"DELETE /4?x=1 HTTP/1.1")
    )
    one = parse(data)  # parse() also checks the 1-byte feeding gives the same events
    assert [k for k, _ in one.events] == [
        "head",
        "end",
        "head",
        "body",
        "end",
        "head",
        "body",
        "end",
        "head",
        "end",
    ]
    assert [h.path for h in one.heads] == [b"/1", b"/2", b"/3", b"/4"]
    assert [h.method for h in one.heads] == [b"GET", b"POST", b"PUT", b"DELETE"]
    assert [h.keep_alive for h in one.heads] == [True, True, True, False]
    assert one.events[3] == ("body", b"abcd")
    assert one.events[6] == ("body", b"xyz")
    # Every split point gives the same events, not only 1-byte feeds.
    for step in (2, 3, 7, 64):
        sink, _ = feed_all(data, step)
        assert comparable(sink.events) == comparable(one.events), step


_KEEP: Final = b"Connection: keep-alive"  # HTTP/1.0 closes after one request without it


@pytest.mark.parametrize(
    ("data", "method", "version"),
    [
        (request(b"Host: a"), b"GET", b"1.1"),
        (request(b"Host: a", _KEEP, start=b"GET /x?y HTTP/1.0"), b"GET", b"1.0"),
        (request(b"Host: a", b"Content-Length: 0", start=b"POST /p HTTP/1.1"), b"POST", b"1.1"),
        (request(b"Host: a", start=b"OPTIONS * HTTP/1.1"), b"OPTIONS", b"1.1"),
        # A target that holds what the fast path looks for after it.
        (request(b"Host: a", _KEEP, start=b"GET /%20HTTP/1.1 HTTP/1.0"), b"GET", b"1.0"),
        (request(b"Host: a", start=b"DELETE /GET HTTP/1.1"), b"DELETE", b"1.1"),
        # An empty line before the request line (RFC 9112 2.2): llhttp is asked.
        (b"\r\n" + request(b"Host: a"), b"GET", b"1.1"),
        (b"\r\n" + request(b"Host: a", _KEEP, start=b"GET / HTTP/1.0"), b"GET", b"1.0"),
    ],
)
def test_method_and_version_whatever_the_reads(data: bytes, method: bytes, version: bytes) -> None:
    # The request line of a read's first request is read off that read; anything else
    # (later pipelined requests, lines split across reads, a leading empty line) asks
    # llhttp. Both must say the same, however the bytes arrive.
    pipelined = data + request(b"Host: b", start=b"PUT /2 HTTP/1.1") + data
    for step in (None, 1, 3, 10, len(data) - 1):
        sink, _ = feed_all(pipelined, step)
        heads = sink.heads
        assert [(h.method, h.version) for h in heads] == [
            (method, version),
            (b"PUT", b"1.1"),
            (method, version),
        ], step


def test_many_pipelined_requests_in_one_large_read() -> None:
    # Well over MAX_HEAD_BYTES in one read, yet every head is small: no 431.
    data = request(b"Host: a", start=b"GET /x HTTP/1.1") * 6000
    assert len(data) > 2 * MAX_HEAD_BYTES
    sink, _ = feed_all(data)
    assert len(sink.heads) == 6000


def test_small_head_with_a_large_body_in_one_read() -> None:
    body = b"x" * (3 * MAX_HEAD_BYTES)
    data = request(
        b"Host: a", b"Content-Length: %d" % len(body), start=b"POST / HTTP/1.1", body=body
    )
    sink, _ = feed_all(data)
    assert sink.events[1] == ("body", body)
    assert sink.events[-1] == ("end", None)


def test_http10_closes_by_default() -> None:
    head = one_head(b"GET / HTTP/1.0\r\n\r\n")
    assert head.version == b"1.0"
    assert head.keep_alive is False
    assert head.host is None  # Host is optional in HTTP/1.0


def test_http10_keep_alive_on_request() -> None:
    head = one_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: a\r\n\r\n")
    assert head.keep_alive is True
    assert head.host == b"a"
    assert head.connection_tokens == frozenset({b"keep-alive"})
    assert b"keep-alive" not in head.fields.lower()


def test_http11_connection_close() -> None:
    head = one_head(request(b"Host: a", b"Connection: close"))
    assert head.keep_alive is False
    assert head.connection_tokens == frozenset({b"close"})


def test_absolute_form_target_takes_host_from_authority() -> None:
    # RFC 9112 3.2.2: the authority of an absolute-form target overrides Host.
    head = one_head(
        request(b"Host: other.example", start=b"GET http://Example.com:8080/p/q?x=1&y HTTP/1.1")
    )
    assert head.host == b"Example.com:8080"
    assert head.path == b"/p/q"
    assert head.query == b"x=1&y"
    assert head.target == b"http://Example.com:8080/p/q?x=1&y"


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (request(b"Host: Example.COM:8080"), b"example.com"),
        (request(b"Host: example.com."), b"example.com"),
        (request(b"Host: [::1]:8080"), b"[::1]"),
        (request(b"Host:"), b""),
        (request(b"Host: other", start=b"GET http://Example.com:8080/ HTTP/1.1"), b"example.com"),
        (request(b"Host: a:1", start=b"CONNECT Tunnel.Example:443 HTTP/1.1"), b"tunnel.example"),
        (request(start=b"GET / HTTP/1.0"), None),
    ],
)
def test_the_head_carries_the_host_as_nginx_host(data: bytes, name: bytes | None) -> None:
    assert feed_all(data)[0].heads[0].host_name == name


def test_the_host_name_follows_each_request_of_a_connection() -> None:
    # The parser keeps the last Host's name: it must never outlive a change of Host,
    # nor stand in for an absolute-form target's own authority.
    data = (
        request(b"Host: A.example")
        + request(b"Host: A.example")
        + request(b"Host: B.example:81")
        + request(b"Host: B.example:81", start=b"GET http://C.example/ HTTP/1.1")
        + request(b"Host: B.example:81")
    )
    names = [h.host_name for h in parse(data).heads]
    assert names == [b"a.example", b"a.example", b"b.example", b"c.example", b"b.example"]


def test_a_trusted_host_passes_on_to_a_new_parser_and_nothing_else_does() -> None:
    """trust_host seeds what a parser made per request (an HTTP/2 stream's) remembers
    of its connection: the same Host keeps the name given, another is still checked."""
    first = Recorder()
    p1 = RequestParser(first)
    p1.feed(request(b"Host: A.example:8080"))
    assert p1.trusted_host == (b"A.example:8080", b"a.example")
    second = Recorder()
    p2 = RequestParser(second)
    p2.trust_host(*p1.trusted_host)
    p2.feed(request(b"Host: A.example:8080") + request(b"Host: B.example"))
    assert [h.host_name for h in second.heads] == [b"a.example", b"b.example"]
    assert p2.trusted_host == (b"B.example", b"b.example")
    third = RequestParser(Recorder())
    third.trust_host(*p1.trusted_host)
    with pytest.raises(ProtocolError, match="invalid Host"):
        third.feed(request(b"Host: a b"))


def test_absolute_form_without_path_is_root() -> None:
    head = one_head(request(b"Host: a", start=b"GET https://example.com HTTP/1.1"))
    assert head.host == b"example.com"
    assert head.path == b"/"
    assert head.query == b""


@pytest.mark.parametrize(
    "target",
    [
        b"http://user@example.com/",  # userinfo is not allowed in an http(s) target
        b"http:///path",  # empty authority
        b"http://exa mple.com/",
        b"ftp://example.com/",  # not a scheme a proxy serves
        b"example.com/path",  # no scheme, no leading slash
    ],
)
def test_invalid_absolute_form_targets(target: bytes) -> None:
    assert rejected(request(b"Host: a", start=b"GET " + target + b" HTTP/1.1")).status == 400


def test_asterisk_form_with_options() -> None:
    head = one_head(request(b"Host: a", start=b"OPTIONS * HTTP/1.1"))
    assert head.method == b"OPTIONS"
    assert head.target == b"*"
    assert head.host == b"a"


@pytest.mark.parametrize("method", [b"GET", b"POST", b"HEAD", b"DELETE"])
def test_asterisk_form_only_with_options(method: bytes) -> None:
    err = rejected(request(b"Host: a", b"Content-Length: 0", start=method + b" * HTTP/1.1"))
    assert err.status == 400


def test_connect_authority_form() -> None:
    data = request(b"Host: example.com:443", start=b"CONNECT example.com:443 HTTP/1.1")
    sink, tail = feed_all(data + b"\x16\x03\x01tls-bytes")
    head = sink.heads[0]
    assert head.method == b"CONNECT"
    assert head.host == b"example.com:443"
    assert head.path == b"" and head.query == b""
    # llhttp stops after a CONNECT head; what follows is tunnel data, handed back as is.
    assert tail == b"\x16\x03\x01tls-bytes"
    sink1, tail1 = feed_all(data + b"\x16\x03\x01tls-bytes", 1)
    assert comparable(sink1.events) == comparable(sink.events)
    assert tail1 == tail


@pytest.mark.parametrize("target", [b"example.com", b"/path", b"user@example.com:443"])
def test_connect_needs_host_and_port(target: bytes) -> None:
    err = rejected(request(b"Host: example.com", start=b"CONNECT " + target + b" HTTP/1.1"))
    assert err.status == 400


def test_upgrade_request_returns_the_bytes_after_the_head() -> None:
    data = request(
        b"Host: a", b"Connection: Upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Version: 13"
    )
    sink, tail = feed_all(data + b"\x81\x05hello")
    head = sink.heads[0]
    assert head.upgrade == b"websocket"
    assert head.connection_tokens == frozenset({b"upgrade"})
    assert tail == b"\x81\x05hello"
    assert b"Upgrade" not in head.fields and b"Connection" not in head.fields
    assert head.fields == b"Sec-WebSocket-Version: 13\r\n"


def test_upgrade_without_connection_upgrade_is_not_an_upgrade() -> None:
    head = one_head(request(b"Host: a", b"Upgrade: websocket"))
    assert head.upgrade is None


def test_expect_100_continue_is_accepted_and_remembered() -> None:
    sink = Recorder()
    parser = RequestParser(sink)
    parser.feed(
        request(b"Host: a", b"Expect: 100-Continue", b"Content-Length: 2", start=b"PUT / HTTP/1.1")
    )
    assert parser.expect_continue is True
    assert b"Expect" not in sink.heads[0].fields
    parser.feed(b"ok")
    assert sink.events[-1] == ("end", None)
    parser.feed(request(b"Host: a"))
    assert parser.expect_continue is False


@pytest.mark.parametrize("value", [b"5", b"  5", b"5 ", b"\t5\t", b" 5  "])
def test_content_length_optional_whitespace_is_not_part_of_the_value(value: bytes) -> None:
    # RFC 9110 5.5: leading and trailing SP/HTAB are not part of a field value; a parser
    # MUST exclude them before evaluating it. Nothing else counts as whitespace.
    data = request(b"Host: a", b"Content-Length: " + value, start=b"POST / HTTP/1.1", body=b"hello")
    sink = parse(data)
    assert sink.heads[0].content_length == 5
    assert sink.events[1:] == [("body", b"hello"), ("end", None)]


def test_host_optional_whitespace_is_not_part_of_the_value() -> None:
    assert one_head(request(b"Host:  example.com \t")).host == b"example.com"


@pytest.mark.parametrize(
    "value",
    [b" 5", b"5 ", b"+5", b"-5", b"1_0", b"0x5", b"5.0", b"", "\u0665".encode(), b"\xd9\xa5"],
)
def test_parse_content_length_is_plain_ascii_digits_only(value: bytes) -> None:
    # The function itself takes no whitespace: int() would accept b" 5", b"+5", b"1_0".
    with pytest.raises(ProtocolError) as info:
        parse_content_length(value)
    assert info.value.status == 400


def test_parse_content_length_digits() -> None:
    assert parse_content_length(b"0") == 0
    assert parse_content_length(b"00012") == 12
    assert parse_content_length(b"123456789012345678") == 123456789012345678
    assert parse_content_length(b"999999999999999999") == 999999999999999999
    for n in (1, 9, 10, 36, 1048576, 2**31, 2**53 + 1):
        assert parse_content_length(b"%d" % n) == n


@pytest.mark.parametrize("value", [b"1234567890123456789", b"0" * 19, b"5,5", b"5 5", b"/", b":"])
def test_parse_content_length_refuses_long_lists_and_neighbours_of_digits(value: bytes) -> None:
    # "/" and ":" sit either side of "0"-"9" in ASCII.
    with pytest.raises(ProtocolError):
        parse_content_length(value)


def test_empty_host_is_allowed() -> None:
    # RFC 9112 3.2: a client with no authority to name sends an empty Host.
    assert one_head(request(b"Host:")).host == b""


@pytest.mark.parametrize(
    "host", [b"example.com", b"example.com:8080", b"127.0.0.1:80", b"[::1]:8080", b"a-b.c_d"]
)
def test_valid_hosts(host: bytes) -> None:
    assert one_head(request(b"Host: " + host)).host == host


# ---------------------------------------------------------------- end-to-end fields


def test_fields_exclude_hop_by_hop_and_proxy_managed() -> None:
    head = one_head(
        request(
            b"Host: a",
            b"Connection: keep-alive",
            b"Keep-Alive: timeout=5",
            b"Proxy-Connection: keep-alive",
            b"TE: trailers",
            b"Trailer: X-T",
            b"Upgrade: h2c",
            b"Expect: 100-continue",
            b"X-Forwarded-For: 10.0.0.1",
            b"X-Forwarded-Proto: https",
            b"X-Forwarded-Host: evil.example",
            b"Content-Length: 2",
            b"Accept: text/html",
            b"X-Custom: one",
            b"Cookie: a=b",
            start=b"POST / HTTP/1.1",
            body=b"ok",
        )
    )
    assert head.fields == b"Accept: text/html\r\nX-Custom: one\r\nCookie: a=b\r\n"
    # Everything as received stays available in `headers`.
    assert len(head.headers) == 15


def test_fields_named_in_connection_are_dropped() -> None:
    head = one_head(
        request(
            b"Host: a",
            b"Connection: close, X-Secret",
            b"X-Secret: s3cr3t",
            b"x-secret: again",
            b"X-Kept: yes",
        )
    )
    assert head.keep_alive is False
    assert head.connection_tokens == frozenset({b"close", b"x-secret"})
    assert head.fields == b"X-Kept: yes\r\n"


def test_connection_tokens_from_several_fields_and_odd_spacing() -> None:
    head = one_head(
        request(
            b"Host: a",
            b"Connection: X-One ,\tX-Two",
            b"Connection: ,X-Three,",
            b"X-One: 1",
            b"X-Two: 2",
            b"X-Three: 3",
            b"X-Four: 4",
        )
    )
    assert head.connection_tokens == frozenset({b"x-one", b"x-two", b"x-three"})
    assert head.fields == b"X-Four: 4\r\n"


def test_field_case_and_order_are_preserved() -> None:
    head = one_head(request(b"Host: a", b"x-lower: 1", b"X-UPPER: 2", b"X-Mixed: 3", b"x-lower: 4"))
    assert head.fields == b"x-lower: 1\r\nX-UPPER: 2\r\nX-Mixed: 3\r\nx-lower: 4\r\n"


def test_forwarded_for_joins_every_x_forwarded_for() -> None:
    head = one_head(
        request(
            b"Host: a",
            b"X-Forwarded-For: 10.0.0.1",
            b"X-Other: o",
            b"x-forwarded-for: 10.0.0.2, 10.0.0.3",
        )
    )
    assert head.forwarded_for == b"10.0.0.1, 10.0.0.2, 10.0.0.3"
    assert head.fields == b"X-Other: o\r\n"


def test_no_x_forwarded_for_gives_none() -> None:
    assert one_head(request(b"Host: a")).forwarded_for is None


# ---------------------------------------------------------------- rejections

BAD_REQUESTS: dict[str, tuple[bytes, int]] = {
    # Host (RFC 9112 3.2)
    "missing Host on 1.1": (request(), 400),
    "two Host": (request(b"Host: a", b"Host: b"), 400),
    "two identical Host": (request(b"Host: a", b"Host: a"), 400),
    "Host with a space": (request(b"Host: a b"), 400),
    "Host with a slash": (request(b"Host: a/b"), 400),
    "Host with userinfo": (request(b"Host: user@a"), 400),
    "Host with a bad port": (request(b"Host: a:8x"), 400),
    "Host with a NUL": (request(b"Host: a\x00b"), 400),
    "Host non-ASCII": (request(b"Host: \xc3\xa9.example"), 400),
    # message framing (RFC 9112 6.3): the classic smuggling vectors
    "CL and TE": (
        request(
            b"Host: a",
            b"Content-Length: 5",
            b"Transfer-Encoding: chunked",
            start=b"POST / HTTP/1.1",
            body=b"0\r\n\r\n",
        ),
        400,
    ),
    "TE and CL": (
        request(
            b"Host: a",
            b"Transfer-Encoding: chunked",
            b"Content-Length: 0",
            start=b"POST / HTTP/1.1",
            body=b"0\r\n\r\n",
        ),
        400,
    ),
    "duplicate CL": (
        request(
            b"Host: a",
            b"Content-Length: 5",
            b"Content-Length: 5",
            start=b"POST / HTTP/1.1",
            body=b"hello",
        ),
        400,
    ),
    "conflicting CL": (
        request(
            b"Host: a",
            b"Content-Length: 5",
            b"Content-Length: 6",
            start=b"POST / HTTP/1.1",
            body=b"hello!",
        ),
        400,
    ),
    "CL list": (request(b"Host: a", b"Content-Length: 5, 5", start=b"POST / HTTP/1.1"), 400),
    "CL +5": (request(b"Host: a", b"Content-Length: +5", start=b"POST / HTTP/1.1"), 400),
    "CL -1": (request(b"Host: a", b"Content-Length: -1", start=b"POST / HTTP/1.1"), 400),
    "CL 1_0": (request(b"Host: a", b"Content-Length: 1_0", start=b"POST / HTTP/1.1"), 400),
    "CL 0x5": (request(b"Host: a", b"Content-Length: 0x5", start=b"POST / HTTP/1.1"), 400),
    "CL empty": (request(b"Host: a", b"Content-Length:", start=b"POST / HTTP/1.1"), 400),
    "CL 5 5": (request(b"Host: a", b"Content-Length: 5 5", start=b"POST / HTTP/1.1"), 400),
    "CL vertical tab": (
        request(b"Host: a", b"Content-Length: \x0b5", start=b"POST / HTTP/1.1"),
        400,
    ),
    "CL form feed": (request(b"Host: a", b"Content-Length: 5\x0c", start=b"POST / HTTP/1.1"), 400),
    "CL arabic-indic 5": (
        request(b"Host: a", "Content-Length: \u0665".encode(), start=b"POST / HTTP/1.1"),
        400,
    ),
    "CL fullwidth 5": (
        request(b"Host: a", "Content-Length: \uff15".encode(), start=b"POST / HTTP/1.1"),
        400,
    ),
    "CL superscript 2": (
        request(b"Host: a", "Content-Length: \u00b2".encode(), start=b"POST / HTTP/1.1"),
        400,
    ),
    "CL huge": (
        request(b"Host: a", b"Content-Length: 99999999999999999999999", start=b"POST / HTTP/1.1"),
        400,
    ),
    # transfer codings (RFC 9112 6.1): only chunked is implemented
    "TE gzip, chunked": (
        request(b"Host: a", b"Transfer-Encoding: gzip, chunked", start=b"POST / HTTP/1.1"),
        501,
    ),
    "TE identity": (
        request(b"Host: a", b"Transfer-Encoding: identity", start=b"POST / HTTP/1.1"),
        400,
    ),
    "TE gzip": (request(b"Host: a", b"Transfer-Encoding: gzip", start=b"POST / HTTP/1.1"), 400),
    "TE chunked, gzip": (
        request(b"Host: a", b"Transfer-Encoding: chunked, gzip", start=b"POST / HTTP/1.1"),
        400,
    ),
    "TE twice": (
        request(
            b"Host: a",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: chunked",
            start=b"POST / HTTP/1.1",
            body=b"0\r\n\r\n",
        ),
        400,
    ),
    "TE chunked, chunked": (
        request(b"Host: a", b"Transfer-Encoding: chunked, chunked", start=b"POST / HTTP/1.1"),
        400,
    ),
    # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
    "TE in HTTP/1.0": (
        request(b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.0", body=b"0\r\n\r\n"),
        400,
    ),
    "TE and CL in HTTP/1.0": (
        request(
            b"Content-Length: 5",
            b"Transfer-Encoding: chunked",
            start=b"POST / HTTP/1.0",
            body=b"0\r\n\r\n",
        ),
        400,
    ),
    "TE xchunked": (
        request(b"Host: a", b"Transfer-Encoding: xchunked", start=b"POST / HTTP/1.1"),
        400,
    ),
    # chunked body syntax
    "chunk size not hex": (
        request(
            b"Host: a",
            b"Transfer-Encoding: chunked",
            start=b"POST / HTTP/1.1",
            body=b"5\r\nhello\r\nzz\r\n",
        ),
        400,
    ),
    "chunk size with space": (
        request(
            b"Host: a",
            b"Transfer-Encoding: chunked",
            start=b"POST / HTTP/1.1",
            body=b"5 \r\nhello\r\n0\r\n\r\n",
        ),
        400,
    ),
    "chunk data overruns its size": (
        request(
            b"Host: a",
            b"Transfer-Encoding: chunked",
            start=b"POST / HTTP/1.1",
            body=b"5\r\nhelloXX\r\n0\r\n\r\n",
        ),
        400,
    ),
    "chunk size with bare LF": (
        request(
            b"Host: a",
            b"Transfer-Encoding: chunked",
            start=b"POST / HTTP/1.1",
            body=b"5\nhello\r\n0\r\n\r\n",
        ),
        400,
    ),
    # field syntax (RFC 9112 5, 2.2)
    "obs-fold": (request(b"Host: a", b"X-A: b", b" c"), 400),
    "obs-fold with tab": (request(b"Host: a", b"X-A: b", b"\tc"), 400),
    "bare CR in value": (request(b"Host: a", b"X-A: b\rc"), 400),
    "bare LF in value": (request(b"Host: a", b"X-A: b\nc"), 400),
    "bare LF ends a field line": (b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400),
    "bare LF ends the request line": (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    "bare LF ends the head": (b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    "bare LF everywhere": (b"GET / HTTP/1.1\nHost: a\n\n", 400),
    "bare CR ends the head": (b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 400),
    "space before colon": (request(b"Host: a", b"X-A : b"), 400),
    "tab before colon": (request(b"Host: a", b"X-A\t: b"), 400),
    "space before colon on Content-Length": (
        request(b"Host: a", b"Content-Length : 5", start=b"POST / HTTP/1.1", body=b"hello"),
        400,
    ),
    "space before colon on Transfer-Encoding": (
        request(
            b"Host: a", b"Transfer-Encoding : chunked", start=b"POST / HTTP/1.1", body=b"0\r\n\r\n"
        ),
        400,
    ),
    "space in field name": (request(b"Host: a", b"X A: b"), 400),
    "empty field name": (request(b"Host: a", b": b"), 400),
    "no colon": (request(b"Host: a", b"X-A"), 400),
    "NUL in value": (request(b"Host: a", b"X-A: b\x00c"), 400),
    "SOH in value": (request(b"Host: a", b"X-A: b\x01c"), 400),
    "ESC in value": (request(b"Host: a", b"X-A: b\x1bc"), 400),
    "DEL in value": (request(b"Host: a", b"X-A: b\x7fc"), 400),
    "NUL in name": (request(b"Host: a", b"X\x00A: b"), 400),
    "whitespace before the first field": (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    # request line (RFC 9112 3)
    "method with a separator": (request(b"Host: a", start=b"G(T / HTTP/1.1"), 400),
    "method with a slash": (request(b"Host: a", start=b"GE/T / HTTP/1.1"), 400),
    "method lower case": (request(b"Host: a", start=b"get / HTTP/1.1"), 400),
    "unknown method": (request(b"Host: a", start=b"FROB / HTTP/1.1"), 400),
    "empty method": (request(b"Host: a", start=b" / HTTP/1.1"), 400),
    "target with a space": (request(b"Host: a", start=b"GET /a b HTTP/1.1"), 400),
    "target with a control": (request(b"Host: a", start=b"GET /a\x01b HTTP/1.1"), 400),
    "fragment in origin-form": (request(b"Host: a", start=b"GET /a#frag HTTP/1.1"), 400),
    "fragment after query": (request(b"Host: a", start=b"GET /a?b=1#frag HTTP/1.1"), 400),
    "fragment in absolute-form": (
        request(b"Host: a", start=b"GET http://a/b#frag HTTP/1.1"),
        400,
    ),
    "lower-case http version": (request(b"Host: a", start=b"GET / http/1.1"), 400),
    "version with no minor": (request(b"Host: a", start=b"GET / HTTP/1"), 400),
}

VERSION_REQUESTS = {
    "HTTP/2.0": request(b"Host: a", start=b"GET / HTTP/2.0"),
    "HTTP/0.9": request(b"Host: a", start=b"GET / HTTP/0.9"),
    "HTTP/1.2": request(b"Host: a", start=b"GET / HTTP/1.2"),
    "HTTP/3.0": request(b"Host: a", start=b"GET / HTTP/3.0"),
    "HTTP/0.9 simple request": b"GET /\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_rejected_with_status(name: str) -> None:
    data, status = BAD_REQUESTS[name]
    assert rejected(data).status == status
    # However the bytes arrive.
    assert rejected(data, 1).status == status


@pytest.mark.parametrize("name", list(VERSION_REQUESTS))
def test_unsupported_versions(name: str) -> None:
    data = VERSION_REQUESTS[name]
    assert rejected(data).status in (400, 505)
    assert rejected(data, 1).status in (400, 505)


def test_http2_preface_is_refused() -> None:
    # h2c prior knowledge on an HTTP/1.1 port: "PRI * HTTP/2.0".
    err = rejected(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert err.status in (400, 505)


def test_nothing_reaches_the_sink_for_a_bad_head() -> None:
    sink = Recorder()
    parser = RequestParser(sink)
    with pytest.raises(ProtocolError):
        parser.feed(
            request(
                b"Host: a",
                b"Content-Length: 1",
                b"Transfer-Encoding: chunked",
                start=b"POST / HTTP/1.1",
                body=b"0\r\n\r\n",
            )
        )
    assert sink.events == []


def test_smuggled_request_in_a_bad_chunk_is_never_parsed() -> None:
    # A request hidden behind an invalid chunk size: parsing stops at the bad chunk, and
    # the smuggled request never becomes a head event.
    smuggled = request(b"Host: a", start=b"GET /admin HTTP/1.1")
    body = b"5\r\nhello\r\nZZZ\r\n" + smuggled
    data = request(b"Host: a", b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.1", body=body)
    for step in (None, 1):
        sink = Recorder()
        parser = RequestParser(sink)
        with pytest.raises(ProtocolError) as info:
            for i in range(0, len(data), step or len(data)):
                parser.feed(data[i : i + (step or len(data))])
        assert info.value.status == 400
        assert [h.path for h in sink.heads] == [b"/"]
        assert ("end", None) not in sink.events


def test_expect_other_than_100_continue() -> None:
    data = request(
        b"Host: a",
        b"Expect: something-else",
        b"Content-Length: 1",
        start=b"POST / HTTP/1.1",
        body=b"x",
    )
    assert rejected(data).status == 417
    assert rejected(data, 1).status == 417


# ---------------------------------------------------------------- limits


def test_head_at_the_limit_is_accepted() -> None:
    start = request(b"Host: a")[:-2]
    pad = MAX_HEAD_BYTES - len(start) - len(b"X-Pad: \r\n\r\n")
    data = start + b"X-Pad: " + b"p" * pad + b"\r\n\r\n"
    assert len(data) == MAX_HEAD_BYTES
    assert one_head(data).header(b"x-pad") == b"p" * pad


def big_head(size: int) -> bytes:
    start = request(b"Host: a")[:-2]
    return start + b"X-Big: " + b"b" * (size - len(start) - 11) + b"\r\n\r\n"


@pytest.mark.parametrize("step", [1, 1000, 4096, 65536])
def test_head_over_64k_is_431_in_pieces(step: int) -> None:
    data = big_head(MAX_HEAD_BYTES + 4096)
    assert rejected(data, step).status == 431


def test_head_over_64k_is_431_in_one_read() -> None:
    # A whole oversized head can arrive in one read (uvloop reads up to 256 KiB); the
    # limit must hold however the bytes were split.
    data = big_head(MAX_HEAD_BYTES + 4096)
    assert rejected(data).status == 431


def test_head_of_many_small_fields_over_64k_is_431_in_one_read() -> None:
    lines = [b"Host: a"] + [b"X-F%d: %s" % (i, b"v" * 1000) for i in range(80)]
    data = request(*lines)
    assert len(data) > MAX_HEAD_BYTES
    assert rejected(data).status == 431


def test_second_pipelined_head_over_64k_is_431() -> None:
    data = request(b"Host: a") + big_head(MAX_HEAD_BYTES + 4096)
    assert rejected(data).status == 431
    assert rejected(data, 1000).status == 431


def test_endless_head_is_431_without_a_line_end() -> None:
    sink = Recorder()
    parser = RequestParser(sink)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ")
    with pytest.raises(ProtocolError) as info:
        for _ in range(MAX_HEAD_BYTES // 1024 + 2):
            parser.feed(b"e" * 1024)
    assert info.value.status == 431
    assert sink.events == []


def test_max_headers_is_accepted() -> None:
    lines = [b"Host: a"] + [b"X-%d: v" % i for i in range(MAX_HEADERS - 1)]
    head = one_head(request(*lines))
    assert len(head.headers) == MAX_HEADERS


def test_more_than_max_headers_is_431() -> None:
    lines = [b"Host: a"] + [b"X-%d: v" % i for i in range(MAX_HEADERS)]
    data = request(*lines)
    assert rejected(data).status == 431
    assert rejected(data, 1).status == 431


def test_state_is_fresh_for_each_pipelined_request() -> None:
    # Fields, Connection tokens and X-Forwarded-For of one request must not leak into
    # the next one on the same connection.
    first = request(
        b"Host: a",
        b"Connection: X-Secret",
        b"X-Forwarded-For: 1.1.1.1",
        b"X-Secret: 1",
        b"Expect: 100-continue",
        b"Content-Length: 1",
        start=b"POST / HTTP/1.1",
        body=b"x",
    )
    second = request(b"Host: b", b"X-Secret: 2")
    sink = parse(first + second)
    a, b = sink.heads
    assert a.fields == b"" and a.forwarded_for == b"1.1.1.1"
    assert b.host == b"b"
    assert b.connection_tokens == frozenset()
    assert b.forwarded_for is None
    assert b.fields == b"X-Secret: 2\r\n"
    assert b.headers == [(b"Host", b"b"), (b"X-Secret", b"2")]


# ---------------------------------------------------------------- strict framing additions


def test_trailer_fields_never_reach_the_next_head() -> None:
    # A trailer is read and dropped; kept, it became a field of the next request.
    first = request(
        b"Host: a",
        b"Transfer-Encoding: chunked",
        start=b"POST / HTTP/1.1",
        body=b"5\r\nhello\r\n0\r\nX-Evil: 1\r\nHost: evil\r\n\r\n",
    )
    sink = parse(first + request(b"Host: b", start=b"GET /next HTTP/1.1"))
    a, b = sink.heads
    assert b.headers == [(b"Host", b"b")]
    assert b.host == b"b"
    assert b"X-Evil" not in a.fields + b.fields


def test_endless_trailer_is_refused() -> None:
    sink = Recorder()
    parser = RequestParser(sink)
    parser.feed(
        request(b"Host: a", b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.1")
        + b"0\r\nX-Endless: "
    )
    with pytest.raises(ProtocolError):
        for _ in range(MAX_HEAD_BYTES // 1024 + 2):
            parser.feed(b"e" * 1024)


def test_endless_chunk_extension_is_refused() -> None:
    sink = Recorder()
    parser = RequestParser(sink)
    parser.feed(request(b"Host: a", b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.1"))
    parser.feed(b"5;ext=")
    with pytest.raises(ProtocolError):
        for _ in range(MAX_HEAD_BYTES // 1024 + 2):
            parser.feed(b"e" * 1024)


def test_a_large_chunked_body_is_not_chunk_metadata() -> None:
    data = request(b"Host: a", b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.1")
    body = b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(200)) + b"0\r\n\r\n"
    sink, _ = feed_all(data + body, 4096)
    assert [k for k, _ in sink.events if k != "body"] == ["head", "end"]


STRICT_REQUESTS: dict[str, tuple[bytes, int]] = {
    "absolute-form with only a port": (request(b"Host: a", start=b"GET http://:80/ HTTP/1.1"), 400),
    "Upgrade with a Content-Length body": (
        request(
            b"Host: a",
            b"Connection: upgrade",
            b"Upgrade: websocket",
            b"Content-Length: 5",
            start=b"POST / HTTP/1.1",
            body=b"hello",
        ),
        400,
    ),
    "Upgrade with a chunked body": (
        request(
            b"Host: a",
            b"Connection: upgrade",
            b"Upgrade: websocket",
            b"Transfer-Encoding: chunked",
            start=b"POST / HTTP/1.1",
            body=b"0\r\n\r\n",
        ),
        400,
    ),
    "TE chunked and TE identity": (
        request(
            b"Host: a",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: identity",
            start=b"POST / HTTP/1.1",
        ),
        400,
    ),
}


@pytest.mark.parametrize("name", list(STRICT_REQUESTS))
def test_strict_rejections(name: str) -> None:
    data, status = STRICT_REQUESTS[name]
    assert rejected(data).status == status
    assert rejected(data, 1).status == status


@pytest.mark.parametrize(
    "value", [b"h2c", b"H2C", b"h2c, websocket", b"websocket, h2c", b" h2c/1 "]
)
def test_h2c_is_normalised(value: bytes) -> None:
    # Whatever else is offered with it, h2c is never honoured: the value no route
    # passes on.
    sink, tail = feed_all(
        request(b"Host: a", b"Connection: Upgrade", b"Upgrade: " + value) + b"next"
    )
    (head,) = sink.heads
    assert head.upgrade == b"h2c"
    assert tail == b"next"


def test_connect_heads_are_not_kept_alive() -> None:
    # llhttp parses nothing after CONNECT and no tunnel is made for it: the connection
    # ends with the answer.
    sink, _ = feed_all(request(b"Host: a", start=b"CONNECT a:443 HTTP/1.1"))
    assert sink.heads[0].keep_alive is False
    assert one_head(request(b"Host: a")).keep_alive is True


def test_fields_with_invalid_names_are_not_forwarded() -> None:
    # nginx ignore_invalid_headers: `Transfer_Encoding` must not reach a CGI-style
    # origin, which would read it as Transfer-Encoding.
    head = one_head(request(b"Host: a", b"Transfer_Encoding: chunked", b"X.Dot: 1", b"X-Ok: 2"))
    assert head.fields == b"X-Ok: 2\r\n"
    assert (b"Transfer_Encoding", b"chunked") in head.headers


def test_connection_named_forwarded_fields_are_dropped() -> None:
    head = one_head(
        request(
            b"Host: a",
            b"Connection: X-Forwarded-For, X-Forwarded-Host",
            b"X-Forwarded-For: 1.2.3.4",
            b"X-Forwarded-Host: evil",
            b"X-Forwarded-Proto: https",
        )
    )
    assert head.forwarded_for is None
    assert head.forwarded_other == b"X-Forwarded-Proto: https\r\n"


def test_busy_while_a_request_is_partial() -> None:
    sink = Recorder()
    parser = RequestParser(sink)
    assert not parser.busy
    parser.feed(b"GE")
    assert parser.busy
    parser.feed(b"T / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert not parser.busy
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nab")
    assert parser.busy
    parser.feed(b"c")
    assert not parser.busy


# ---------------------------------------------------------------- configurable limits


def limited(**kw: int) -> RequestParser:
    from ferryman.config.schema import ClientLimits

    return RequestParser(Recorder(), ClientLimits(**kw))


def test_request_line_limit_is_414() -> None:
    ok = request(b"Host: a", start=b"GET /" + b"a" * 90 + b" HTTP/1.1")
    limited(request_line=100).feed(ok)
    long = request(b"Host: a", start=b"GET /" + b"a" * 120 + b" HTTP/1.1")
    with pytest.raises(ProtocolError) as info:
        limited(request_line=100).feed(long)
    assert info.value.status == 414
    parser = limited(request_line=100)
    with pytest.raises(ProtocolError) as info:
        for i in range(0, len(long), 7):
            parser.feed(long[i : i + 7])
    assert info.value.status == 414


def test_default_request_line_limit_is_8k() -> None:
    assert MAX_REQUEST_LINE == 8 * 1024
    assert rejected(request(b"Host: a", start=b"GET /" + b"a" * 8200 + b" HTTP/1.1")).status == 414
    one_head(request(b"Host: a", start=b"GET /" + b"a" * 8000 + b" HTTP/1.1"))


def test_header_bytes_limit_is_431() -> None:
    data = request(b"Host: a", b"X-Big: " + b"b" * 2000)
    limited(header_bytes=4096).feed(data)
    with pytest.raises(ProtocolError) as info:
        limited(header_bytes=1024).feed(data)
    assert info.value.status == 431


def test_field_count_limit_is_431() -> None:
    data = request(b"Host: a", *(b"X-%d: v" % i for i in range(9)))
    limited(headers=10).feed(data)
    with pytest.raises(ProtocolError) as info:
        limited(headers=9).feed(data)
    assert info.value.status == 431


@pytest.mark.parametrize("chunked", [False, True])
def test_body_reads_larger_than_the_head_limit(chunked: bool) -> None:
    # uvloop reads up to 256 KiB at once: body bytes never count as chunk metadata.
    size = 4 * MAX_HEAD_BYTES
    if chunked:
        data = request(b"Host: a", b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.1")
        body = b"%x\r\n%s\r\n" % (size, b"x" * size)
        pieces = [data, body[:10], body[10:], b"0\r\n\r\n"]
    else:
        data = request(b"Host: a", b"Content-Length: %d" % (2 * size), start=b"POST / HTTP/1.1")
        pieces = [data, b"x" * size, b"x" * size]
    sink = Recorder()
    parser = RequestParser(sink)
    for piece in pieces:
        parser.feed(piece)
    assert [k for k, _ in sink.events if k != "body"] == ["head", "end"]


# ------------------------------------------- the version read off the request line

_KEEP: Final = b"Connection: keep-alive\r\n"  # an HTTP/1.0 request may be followed only so
VERSION_SCRIPTS = [
    # One read, mixed versions: only the read's first request line may be read off
    # the bytes; the others come from llhttp.
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.0\r\n" + _KEEP + b"\r\n"
    b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a HTTP/1.0\r\n" + _KEEP + b"\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
    # A leading empty line (llhttp skips it).
    b"\r\nGET /a HTTP/1.0\r\n" + _KEEP + b"\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a%20HTTP/1.1 HTTP/1.0\r\n\r\n",
]


@pytest.mark.parametrize("script", VERSION_SCRIPTS)
def test_versions_whatever_the_reads(script: bytes) -> None:
    expected = [line.rsplit(b"/", 1)[1] for line in script.split(b"\r\n") if b" HTTP/" in line]
    for step in (None, 1, 7, 20):
        rec, _ = feed_all(script, step)
        assert [h.version for h in rec.heads] == expected, step


def test_a_read_that_continues_a_request_is_not_read_off() -> None:
    # The second read begins mid-head of a request whose line said HTTP/1.0: its own
    # bytes end a line in " HTTP/1.1" only by coincidence of a field value.
    rec = Recorder()
    parser = RequestParser(rec)
    parser.feed(b"GET /a HTTP/1.0\r\nX-A: b")
    parser.feed(b"bc HTTP/1.1\r\n\r\n")
    assert [h.version for h in rec.heads] == [b"1.0"]
    assert rec.heads[0].keep_alive is False


# ---------------------------------------------------------------- closing


def _unreachable_after(build: Callable[[], object]) -> int:
    """Objects the cyclic collector finds after `build()`'s objects were dropped: with
    automatic collection off, only what reference counting could not free."""
    gc.collect()
    gc.disable()
    try:
        build()
        return gc.collect()
    finally:
        gc.enable()


def test_close_lets_parser_and_sink_be_freed_without_the_collector() -> None:
    @dataclass
    class Connection(Recorder):
        """A sink that holds its parser, as ClientConnection does."""

        parser: RequestParser | None = None

    def served(close: bool) -> None:
        conn = Connection()
        parser = conn.parser = RequestParser(conn)
        assert parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") is None
        assert [kind for kind, _ in conn.events] == ["head", "end"]
        if close:
            parser.close()

    assert _unreachable_after(lambda: served(close=False)) > 0  # the cycle this is about
    assert _unreachable_after(lambda: served(close=True)) == 0
