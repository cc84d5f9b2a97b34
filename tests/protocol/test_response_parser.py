"""ResponseParser byte scripts: upstream bytes in, sink events (or UpstreamProtocolError,
which the proxy turns into a 502) out. No sockets, no event loop."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

import pytest

from ferryman.errors import UpstreamError, UpstreamProtocolError
from ferryman.http import Framing, ResponseHead, ResponseParser, ResponseSink
from ferryman.http.response_parser import MAX_HEAD_BYTES, MAX_HEADERS


@dataclass
class Recorder(ResponseSink):
    """A ResponseSink keeping every event; consecutive body pieces are merged."""

    events: list[tuple[str, object]] = field(default_factory=list)

    def on_response_head(self, head: ResponseHead) -> None:
        self.events.append(("head", head))

    def on_response_body(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            prior = self.events[-1][1]
            assert isinstance(prior, bytes)
            self.events[-1] = ("body", prior + data)
        else:
            self.events.append(("body", data))

    def on_response_end(self, keep_alive: bool) -> None:
        self.events.append(("end", keep_alive))

    @property
    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]

    @property
    def heads(self) -> list[ResponseHead]:
        return [h for k, h in self.events if k == "head"]  # type: ignore[misc]


def summary(head: ResponseHead) -> tuple[object, ...]:
    return (
        head.status,
        head.headers,
        head.framing,
        head.content_length,
        head.connection_tokens,
        head.fields,
        head.length_field,
    )


def comparable(events: list[tuple[str, object]]) -> list[tuple[str, object]]:
    return [(k, summary(v) if isinstance(v, ResponseHead) else v) for k, v in events]


def feed_all(
    data: bytes, step: int | None = None, *, no_body: bool = False
) -> tuple[Recorder, bytes | None]:
    sink = Recorder()
    parser = ResponseParser(sink)
    parser.expect(no_body)
    if step is None:
        return sink, parser.feed(data)
    tail = None
    for i in range(0, len(data), step):
        tail = parser.feed(data[i : i + step])
        if tail is not None:
            return sink, tail + data[i + step :]
    return sink, tail


def parse(data: bytes, *, no_body: bool = False) -> Recorder:
    """One feed and 1-byte feeds must give identical events."""
    whole, tail = feed_all(data, no_body=no_body)
    bytewise, tail_bytewise = feed_all(data, 1, no_body=no_body)
    assert comparable(whole.events) == comparable(bytewise.events)
    assert tail == tail_bytewise
    return whole


def invalid(data: bytes, step: int | None = None) -> UpstreamProtocolError:
    with pytest.raises(UpstreamProtocolError) as info:
        feed_all(data, step)
    return info.value


def response(*header_lines: bytes, start: bytes = b"HTTP/1.1 200 OK", body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(h + b"\r\n" for h in header_lines) + b"\r\n" + body


# ---------------------------------------------------------------- framing


def test_content_length_body() -> None:
    sink = parse(response(b"Content-Length: 5", b"Content-Type: text/plain", body=b"hello"))
    assert sink.kinds == ["head", "body", "end"]
    head = sink.heads[0]
    assert head.status == 200
    assert head.framing is Framing.LENGTH
    assert head.content_length == 5
    assert head.length_field == b"5"
    assert head.fields == b"Content-Type: text/plain\r\n"
    assert sink.events[1:] == [("body", b"hello"), ("end", True)]


@pytest.mark.parametrize("value", [b"5 ", b"\t5", b" 5\t "])
def test_content_length_optional_whitespace(value: bytes) -> None:
    # RFC 9110 5.5: SP/HTAB around a field value are not part of it.
    sink = parse(response(b"Content-Length: " + value, body=b"hello"))
    assert sink.heads[0].framing is Framing.LENGTH
    assert sink.heads[0].content_length == 5
    assert sink.events[1:] == [("body", b"hello"), ("end", True)]


def test_chunked_coding_name_is_case_insensitive() -> None:
    sink = parse(response(b"Transfer-Encoding: Chunked ", body=b"2\r\nok\r\n0\r\n\r\n"))
    assert sink.heads[0].framing is Framing.CHUNKED
    assert sink.events[1:] == [("body", b"ok"), ("end", True)]


def test_content_length_zero() -> None:
    sink = parse(response(b"Content-Length: 0"))
    assert sink.kinds == ["head", "end"]
    assert sink.heads[0].framing is Framing.LENGTH
    assert sink.heads[0].content_length == 0


def test_chunked_body() -> None:
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    sink = parse(response(b"Transfer-Encoding: chunked", body=body))
    assert sink.kinds == ["head", "body", "end"]
    head = sink.heads[0]
    assert head.framing is Framing.CHUNKED
    assert head.fields == b""  # Transfer-Encoding is re-decided by the proxy
    assert sink.events[1:] == [("body", b"hello world"), ("end", True)]


def test_until_close_body() -> None:
    # RFC 9112 6.3 rule 8: no Content-Length, no chunked: the body runs to the close.
    sink = Recorder()
    parser = ResponseParser(sink)
    parser.expect(False)
    parser.feed(response(b"Content-Type: text/plain", body=b"first "))
    parser.feed(b"second ")
    parser.feed(b"HTTP/1.1 200 OK\r\n\r\n")  # just more body, not a response
    head = sink.heads[0]
    assert head.framing is Framing.UNTIL_CLOSE
    assert sink.kinds == ["head", "body"]  # the end comes from the connection closing
    assert sink.events[1] == ("body", b"first second HTTP/1.1 200 OK\r\n\r\n")


def test_until_close_from_http10() -> None:
    sink = parse(response(start=b"HTTP/1.0 200 OK", body=b"abc"))
    assert sink.heads[0].framing is Framing.UNTIL_CLOSE
    assert sink.kinds == ["head", "body"]


def feed_each(*messages: bytes) -> Recorder:
    """One parser, one `expect` per message (a request sent before each response), each
    response fed whole: how an upstream connection is reused."""
    sink = Recorder()
    parser = ResponseParser(sink)
    for data in messages:
        parser.expect(False)
        assert parser.feed(data) is None
    return sink


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    # A 304 may describe the length of the body it does not carry; the next bytes are
    # the next response (to the next request), not a body.
    first = response(b"Content-Length: 5", b'ETag: "x"', start=b"HTTP/1.1 %d X" % status)
    second = response(b"Content-Length: 2", body=b"ok")
    sink = feed_each(first, second)
    assert sink.kinds == ["head", "end", "head", "body", "end"]
    head = sink.heads[0]
    assert head.status == status
    assert head.framing is Framing.NONE
    assert head.length_field == b"5"
    assert sink.events[3] == ("body", b"ok")


@pytest.mark.parametrize("status", [204, 304])
def test_body_after_a_no_body_status_is_refused(status: int) -> None:
    # The bytes a 204/304 must not carry are not a body and not a response anyone asked
    # for: the connection is desynchronised.
    data = response(b"Content-Length: 5", start=b"HTTP/1.1 %d X" % status) + b"hello"
    for step in (None, 1):
        with pytest.raises(UpstreamProtocolError):
            feed_all(data, step)


def test_204_without_length() -> None:
    sink = parse(response(start=b"HTTP/1.1 204 No Content"))
    assert sink.kinds == ["head", "end"]
    assert sink.events[1] == ("end", True)
    assert sink.heads[0].length_field is None


def test_head_response_stops_after_the_head() -> None:
    # The body a HEAD response describes is never sent; llhttp cannot be told so, so the
    # parser ends the message after the head and the connection is not reused.
    sink = parse(response(b"Content-Length: 1000", b"X-A: 1"), no_body=True)
    assert sink.kinds == ["head", "end"]
    head = sink.heads[0]
    assert head.framing is Framing.NONE
    assert head.length_field == b"1000"
    assert head.fields == b"X-A: 1\r\n"
    assert sink.events[1] == ("end", False)


def test_head_response_chunked_stops_after_the_head() -> None:
    sink = parse(response(b"Transfer-Encoding: chunked"), no_body=True)
    assert sink.kinds == ["head", "end"]
    assert sink.heads[0].framing is Framing.NONE
    assert sink.events[1] == ("end", False)


def test_pipelined_responses_are_separate_messages() -> None:
    data = (
        response(b"Content-Length: 1", body=b"a")
        + response(b"Transfer-Encoding: chunked", body=b"1\r\nb\r\n0\r\n\r\n")
        + response(b"Content-Length: 1", b"Connection: close", body=b"c")
    )
    first = response(b"Content-Length: 1", body=b"a")
    second = response(b"Transfer-Encoding: chunked", body=b"1\r\nb\r\n0\r\n\r\n")
    third = response(b"Content-Length: 1", b"Connection: close", body=b"c")
    sink = feed_each(first, second, third)
    assert sink.kinds == ["head", "body", "end"] * 3
    assert [e for k, e in sink.events if k != "head"] == [b"a", True, b"b", True, b"c", False]
    # Without a request in between, a second response is one nobody asked for.
    for step in (None, 1):
        with pytest.raises(UpstreamProtocolError):
            feed_all(data, step)


# ---------------------------------------------------------------- interim responses


def test_100_continue_is_swallowed() -> None:
    data = response(start=b"HTTP/1.1 100 Continue") + response(
        b"Content-Length: 2", b"X-Final: 1", body=b"ok"
    )
    sink = parse(data)
    assert sink.kinds == ["head", "body", "end"]
    head = sink.heads[0]
    assert head.status == 200
    assert head.headers == [(b"Content-Length", b"2"), (b"X-Final", b"1")]
    assert sink.events[1:] == [("body", b"ok"), ("end", True)]


def test_several_interim_responses_with_fields_are_swallowed() -> None:
    data = (
        response(start=b"HTTP/1.1 100 Continue")
        + response(b"Link: </style.css>; rel=preload", start=b"HTTP/1.1 103 Early Hints")
        + response(b"Content-Length: 0", start=b"HTTP/1.1 201 Created")
    )
    sink = parse(data)
    assert sink.kinds == ["head", "end"]
    head = sink.heads[0]
    assert head.status == 201
    # The interim fields do not leak into the final head.
    assert head.headers == [(b"Content-Length", b"0")]


def test_101_returns_the_bytes_after_the_head() -> None:
    head_bytes = response(
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: abc",
        start=b"HTTP/1.1 101 Switching Protocols",
    )
    for step in (None, 1, 7):
        sink, tail = feed_all(head_bytes + b"\x81\x05hello", step)
        assert sink.heads[0].status == 101
        assert sink.heads[0].framing is Framing.NONE
        assert sink.heads[0].fields == b"Sec-WebSocket-Accept: abc\r\n"
        assert tail == b"\x81\x05hello", step


def test_101_with_nothing_after_the_head() -> None:
    sink, tail = feed_all(
        response(
            b"Upgrade: websocket", b"Connection: upgrade", start=b"HTTP/1.1 101 Switching Protocols"
        )
    )
    assert tail == b""
    assert sink.heads[0].status == 101


# ---------------------------------------------------------------- keep-alive


@pytest.mark.parametrize(
    ("data", "keep_alive"),
    [
        (response(b"Content-Length: 2", body=b"ok"), True),
        (response(b"Content-Length: 2", b"Connection: close", body=b"ok"), False),
        (response(b"Content-Length: 2", b"Connection: Close", body=b"ok"), False),
        (response(b"Content-Length: 2", b"Connection: x-a, close", body=b"ok"), False),
        (response(b"Content-Length: 2", start=b"HTTP/1.0 200 OK", body=b"ok"), False),
        (
            response(
                b"Transfer-Encoding: chunked", b"Connection: close", body=b"2\r\nok\r\n0\r\n\r\n"
            ),
            False,
        ),
        (
            response(
                b"Content-Length: 2",
                b"Connection: keep-alive",
                start=b"HTTP/1.0 200 OK",
                body=b"ok",
            ),
            True,
        ),
    ],
)
def test_keep_alive_is_reported_at_the_end(data: bytes, keep_alive: bool) -> None:
    sink = parse(data)
    assert sink.events[-1] == ("end", keep_alive)


def test_parser_is_reused_across_responses() -> None:
    sink = Recorder()
    parser = ResponseParser(sink)
    parser.expect(False)
    parser.feed(response(b"Content-Length: 1", b"X-A: 1", body=b"a"))
    parser.expect(False)
    parser.feed(response(b"Content-Length: 1", b"X-B: 2", body=b"b"))
    a, b = sink.heads
    assert a.fields == b"X-A: 1\r\n"
    assert b.fields == b"X-B: 2\r\n"
    assert b.headers == [(b"Content-Length", b"1"), (b"X-B", b"2")]


def test_fields_drop_hop_by_hop_and_connection_named() -> None:
    sink = parse(
        response(
            b"Content-Length: 2",
            b"Connection: X-Secret",
            b"Keep-Alive: timeout=5",
            b"Proxy-Connection: keep-alive",
            b"Trailer: X-T",
            b"Upgrade: h2c",
            b"X-Secret: s",
            b"Set-Cookie: a=1",
            b"Set-Cookie: b=2",
            b"X-Kept: k",
            body=b"ok",
        )
    )
    head = sink.heads[0]
    assert head.connection_tokens == frozenset({b"x-secret"})
    assert head.fields == b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Kept: k\r\n"


# ---------------------------------------------------------------- invalid responses

INVALID = {
    "status not a number": b"HTTP/1.1 2x0 OK\r\n\r\n",
    "status too short": b"HTTP/1.1 20 OK\r\n\r\n",
    "status too long": b"HTTP/1.1 2000 OK\r\n\r\n",
    "no HTTP name": b"HTTX/1.1 200 OK\r\n\r\n",
    "garbage": b"garbage\r\n\r\n",
    "HTML instead of a head": b"<html><body>oops</body></html>\r\n\r\n",
    "bare LF line ends": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "CL and TE": response(b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "TE and CL": response(b"Transfer-Encoding: chunked", b"Content-Length: 5", body=b"0\r\n\r\n"),
    "invalid CL": response(b"Content-Length: 5x", body=b"hello"),
    "CL +5": response(b"Content-Length: +5", body=b"hello"),
    "CL -1": response(b"Content-Length: -1"),
    "CL list": response(b"Content-Length: 5, 5", body=b"hello"),
    "CL unicode digit": response("Content-Length: \u0665".encode(), body=b"hello"),
    "duplicate CL": response(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"),
    "conflicting CL": response(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"),
    "CL huge": response(b"Content-Length: 99999999999999999999999"),
    # Only chunked is decoded; a coding the proxy would silently drop (the client would
    # get gzip bytes with nothing saying so) is refused, as nginx does.
    "TE gzip, chunked": response(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
    "TE gzip": response(b"Transfer-Encoding: gzip", body=b"abc"),
    "TE identity": response(b"Transfer-Encoding: identity", body=b"abc"),
    "bad chunk size": response(b"Transfer-Encoding: chunked", body=b"zz\r\nhello\r\n0\r\n\r\n"),
    "chunk overrun": response(b"Transfer-Encoding: chunked", body=b"2\r\nhello\r\n0\r\n\r\n"),
    "obs-fold": response(b"Content-Length: 0", b"X-A: b", b" c"),
    "space before colon": response(b"Content-Length : 0"),
    "NUL in value": response(b"Content-Length: 0", b"X-A: b\x00c"),
    "bare CR in value": response(b"Content-Length: 0", b"X-A: b\rc"),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_responses(name: str) -> None:
    data = INVALID[name]
    invalid(data)
    invalid(data, 1)


def test_invalid_response_is_a_502_upstream_error() -> None:
    err = invalid(b"HTTP/1.1 2x0 OK\r\n\r\n")
    assert isinstance(err, UpstreamError)
    assert err.status == 502
    assert err.kind == "invalid_header"


def test_too_many_header_fields() -> None:
    ok = [b"X-%d: v" % i for i in range(MAX_HEADERS)]
    assert parse(response(*ok)).heads[0].status == 200
    data = response(*ok, b"X-One-More: v")
    invalid(data)
    invalid(data, 1)


def big_head(size: int) -> bytes:
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Big: "
    return start + b"b" * (size - len(start) - 4) + b"\r\n\r\n"


@pytest.mark.parametrize("step", [1, 1000, 4096, 65536])
def test_head_too_large_in_pieces(step: int) -> None:
    invalid(big_head(MAX_HEAD_BYTES + 4096), step)


def test_head_too_large_in_one_read() -> None:
    invalid(big_head(MAX_HEAD_BYTES + 4096))


def test_large_body_in_one_read_is_not_a_large_head() -> None:
    body = b"x" * (3 * MAX_HEAD_BYTES)
    sink, _ = feed_all(response(b"Content-Length: %d" % len(body), body=body))
    assert sink.events[1:] == [("body", body), ("end", True)]


def test_head_at_the_limit_is_accepted() -> None:
    data = big_head(MAX_HEAD_BYTES)
    assert len(data) == MAX_HEAD_BYTES
    assert parse(data).kinds == ["head", "end"]


# ---------------------------------------------------------------- strict framing additions

STRICT_RESPONSES: dict[str, bytes] = {
    "HTTP/2.0": response(b"Content-Length: 2", start=b"HTTP/2.0 200 OK", body=b"ok"),
    "HTTP/0.9": response(b"Content-Length: 2", start=b"HTTP/0.9 200 OK", body=b"ok"),
    "status 099": response(b"Content-Length: 2", start=b"HTTP/1.1 099 X", body=b"ok"),
    "status 600": response(b"Content-Length: 2", start=b"HTTP/1.1 600 X", body=b"ok"),
    "TE twice": response(
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: chunked",
        body=b"2\r\nok\r\n0\r\n\r\n",
    ),
    "TE in HTTP/1.0": response(
        b"Transfer-Encoding: chunked", start=b"HTTP/1.0 200 OK", body=b"2\r\nok\r\n0\r\n\r\n"
    ),
    "body longer than Content-Length": response(b"Content-Length: 2", body=b"okEXTRA"),
    "a second response": response(b"Content-Length: 2", body=b"ok")
    + response(b"Content-Length: 2", body=b"no"),
}


@pytest.mark.parametrize("name", list(STRICT_RESPONSES))
def test_strict_response_rejections(name: str) -> None:
    for step in (None, 1):
        with pytest.raises(UpstreamProtocolError):
            feed_all(STRICT_RESPONSES[name], step)


def test_trailers_never_reach_the_next_response() -> None:
    first = response(b"Transfer-Encoding: chunked", body=b"2\r\nok\r\n0\r\nX-Evil: 1\r\n\r\n")
    sink = feed_each(first, response(b"Content-Length: 2", body=b"ok"))
    assert sink.heads[1].headers == [(b"Content-Length", b"2")]
    assert b"X-Evil" not in sink.heads[0].fields + sink.heads[1].fields


def test_endless_trailer_is_refused() -> None:
    parser = ResponseParser(Recorder())
    parser.expect(False)
    parser.feed(response(b"Transfer-Encoding: chunked") + b"0\r\nX-Endless: ")
    with pytest.raises(UpstreamProtocolError):
        for _ in range(MAX_HEAD_BYTES // 1024 + 2):
            parser.feed(b"e" * 1024)


def test_crlf_after_a_response_is_not_a_message() -> None:
    # llhttp skips empty lines between messages: harmless, no event, no error.
    sink = feed_each(response(b"Content-Length: 2", body=b"ok\r\n"))
    assert sink.kinds == ["head", "body", "end"]


@pytest.mark.parametrize("chunked", [False, True])
def test_body_reads_larger_than_the_head_limit(chunked: bool) -> None:
    size = 4 * MAX_HEAD_BYTES
    if chunked:
        body = b"%x\r\n%s\r\n" % (size, b"x" * size)
        pieces = [response(b"Transfer-Encoding: chunked"), body[:10], body[10:], b"0\r\n\r\n"]
    else:
        pieces = [response(b"Content-Length: %d" % (2 * size)), b"x" * size, b"x" * size]
    sink = Recorder()
    parser = ResponseParser(sink)
    parser.expect(False)
    for piece in pieces:
        parser.feed(piece)
    assert sink.kinds == ["head", "body", "end"]


# ------------------------------------- the version read off the response's first bytes


def test_final_head_after_an_interim_one_has_its_own_version() -> None:
    # The first head's "HTTP/1.1" must not stand for the final one's HTTP/1.0, which
    # may not be chunked (RFC 9112 6.1).
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    for step in (None, 1, 30):
        with pytest.raises(UpstreamProtocolError, match=r"HTTP/1\.0"):
            feed_all(data, step)


def test_each_response_on_a_connection_has_its_own_version() -> None:
    sink = Recorder()
    parser = ResponseParser(sink)
    parser.expect(False)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    parser.expect(False)
    with pytest.raises(UpstreamProtocolError, match=r"HTTP/1\.0"):
        parser.feed(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")


def test_unsupported_version_refused_whatever_the_reads() -> None:
    for step in (None, 1, 5):
        with pytest.raises(UpstreamProtocolError, match="version"):
            feed_all(b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", step)


# ---------------------------------------------------------------- closing


def test_close_lets_the_parser_be_freed_without_the_collector() -> None:
    def served(close: bool) -> None:
        sink = Recorder()
        parser = ResponseParser(sink)
        parser.expect(False)
        assert parser.feed(response(b"Content-Length: 2", body=b"ok")) is None
        assert sink.kinds == ["head", "body", "end"]
        if close:
            parser.close()

    def unreachable_after(close: bool) -> int:
        gc.collect()
        gc.disable()
        try:
            served(close)
            return gc.collect()
        finally:
            gc.enable()

    # httptools holds the parser's callbacks: without close, a cycle for the collector.
    assert unreachable_after(close=False) > 0
    assert unreachable_after(close=True) == 0
