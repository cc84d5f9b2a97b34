"""Re-serialisation of heads for the other side of the proxy: exact bytes.

Request heads come from the real RequestParser (they are only ever built there);
response heads are built directly so that each case states exactly what it depends on.
"""

from __future__ import annotations

import re

import pytest

from ferryman.http import Framing, RequestHead, RequestParser, RequestSink, ResponseHead
from ferryman.http.serialize import (
    CHUNKED_END,
    chunk,
    client_framing,
    error_response,
    serialize_request_head,
    serialize_response_head,
    status_line,
)


class _Heads(RequestSink):
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_request_body(self, data: bytes) -> None:
        pass

    def on_request_end(self) -> None:
        pass


def request_head(data: bytes) -> RequestHead:
    sink = _Heads()
    RequestParser(sink).feed(data)
    assert len(sink.heads) == 1
    return sink.heads[0]


def response_head(
    status: int = 200,
    fields: bytes = b"",
    framing: Framing = Framing.LENGTH,
    content_length: int = 0,
    length_field: bytes | None = None,
) -> ResponseHead:
    return ResponseHead(status, [], framing, content_length, frozenset(), fields, length_field)


NO_DROP: frozenset[bytes] = frozenset()


# ---------------------------------------------------------------- request heads


def test_get_request_head() -> None:
    head = request_head(
        b"GET /a?b=1 HTTP/1.1\r\nHost: client.example\r\nAccept: */*\r\n"
        b"Connection: keep-alive\r\nUser-Agent: t\r\n\r\n"
    )
    out = serialize_request_head(head, b"/a?b=1", b"backend:8080", b"", NO_DROP, None)
    assert out == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: backend:8080\r\nAccept: */*\r\nUser-Agent: t\r\n\r\n"
    )


def test_http10_request_goes_upstream_as_http11() -> None:
    head = request_head(b"GET / HTTP/1.0\r\nX-A: 1\r\n\r\n")
    out = serialize_request_head(head, b"/", b"h", b"", NO_DROP, None)
    assert out == b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n"


def test_content_length_is_written_fresh() -> None:
    head = request_head(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length:  3\r\nX-A: 1\r\n\r\nabc")
    out = serialize_request_head(head, b"/p", b"a", b"", NO_DROP, None)
    assert out == b"POST /p HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nContent-Length: 3\r\n\r\n"


def test_chunked_request_stays_chunked() -> None:
    head = request_head(
        b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nTE: trailers\r\n\r\n"
    )
    out = serialize_request_head(head, b"/", b"a", b"", NO_DROP, None)
    assert out == b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"PATCH"])
def test_bodyless_post_put_patch_get_content_length_zero(method: bytes) -> None:
    head = request_head(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
    out = serialize_request_head(head, b"/", b"a", b"", NO_DROP, None)
    assert out == method + b" / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"DELETE", b"OPTIONS"])
def test_bodyless_other_methods_get_no_length(method: bytes) -> None:
    head = request_head(method + b" / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    out = serialize_request_head(head, b"/", b"a", b"", NO_DROP, None)
    assert out == method + b" / HTTP/1.1\r\nHost: a\r\n\r\n"


def test_hop_by_hop_and_connection_named_fields_never_pass() -> None:
    head = request_head(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: s\r\n"
        b"Keep-Alive: 5\r\nProxy-Connection: x\r\nExpect: 100-continue\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nX-Kept: k\r\n\r\n"
    )
    out = serialize_request_head(head, b"/", b"a", b"", NO_DROP, None)
    assert out == b"GET / HTTP/1.1\r\nHost: a\r\nX-Kept: k\r\n\r\n"


def test_drop_and_extra_fields() -> None:
    head = request_head(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: spoofed\r\nAccept: */*\r\n"
        b"x-real-ip: again\r\n\r\n"
    )
    out = serialize_request_head(
        head, b"/", b"a", b"X-Real-IP: 127.0.0.1\r\n", frozenset({b"x-real-ip"}), None
    )
    assert out == b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Real-IP: 127.0.0.1\r\n\r\n"


def test_forwarded_for_appends_to_the_clients_chain() -> None:
    head = request_head(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"X-Forwarded-For: 10.0.0.2\r\n\r\n"
    )
    out = serialize_request_head(head, b"/", b"a", b"", NO_DROP, b"127.0.0.1")
    assert out == (
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\n\r\n"
    )


def test_forwarded_for_without_a_prior_chain() -> None:
    head = request_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    out = serialize_request_head(head, b"/", b"a", b"X-Extra: e\r\n", NO_DROP, b"127.0.0.1")
    assert out == b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 127.0.0.1\r\nX-Extra: e\r\n\r\n"


def test_every_request_head_is_one_unambiguous_message() -> None:
    # Whatever the client sent, exactly one framing field leaves, once.
    for raw in (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ):
        out = serialize_request_head(request_head(raw), b"/", b"a", b"", NO_DROP, None)
        lowered = out.lower()
        assert lowered.count(b"content-length") + lowered.count(b"transfer-encoding") == 1
        assert out.endswith(b"\r\n\r\n") and out.count(b"\r\n\r\n") == 1


# ---------------------------------------------------------------- client framing


@pytest.mark.parametrize(
    ("upstream", "http11", "expected"),
    [
        (Framing.LENGTH, True, Framing.LENGTH),
        (Framing.LENGTH, False, Framing.LENGTH),
        (Framing.NONE, True, Framing.NONE),
        (Framing.NONE, False, Framing.NONE),
        (Framing.CHUNKED, True, Framing.CHUNKED),
        (Framing.UNTIL_CLOSE, True, Framing.CHUNKED),
        # HTTP/1.0 has no chunked coding: close-delimited is the only way.
        (Framing.CHUNKED, False, Framing.UNTIL_CLOSE),
        (Framing.UNTIL_CLOSE, False, Framing.UNTIL_CLOSE),
    ],
)
def test_client_framing(upstream: Framing, http11: bool, expected: Framing) -> None:
    assert client_framing(response_head(framing=upstream), http11) is expected


# ---------------------------------------------------------------- response heads


def test_length_response_to_a_keep_alive_http11_client() -> None:
    head = response_head(fields=b"Content-Type: text/plain\r\n", content_length=5)
    out = serialize_response_head(head, Framing.LENGTH, True, True)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"


def test_chunked_to_an_http11_client() -> None:
    head = response_head(fields=b"X-A: 1\r\n", framing=Framing.UNTIL_CLOSE)
    framing = client_framing(head, True)
    out = serialize_response_head(head, framing, True, True)
    assert out == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_until_close_to_an_http10_client_is_close_delimited() -> None:
    head = response_head(fields=b"X-A: 1\r\n", framing=Framing.CHUNKED)
    framing = client_framing(head, False)
    assert framing is Framing.UNTIL_CLOSE
    out = serialize_response_head(head, framing, False, False)
    # No length, no chunked coding: the close ends the body.
    assert out == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: close\r\n\r\n"


def test_connection_close_when_not_keep_alive() -> None:
    head = response_head(content_length=2)
    out = serialize_response_head(head, Framing.LENGTH, False, True)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"


def test_connection_keep_alive_for_http10_keep_alive_client() -> None:
    head = response_head(content_length=2)
    out = serialize_response_head(head, Framing.LENGTH, True, False)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"


def test_head_response_keeps_its_content_length() -> None:
    # The response to HEAD has no body but says how long the GET body would be.
    head = response_head(framing=Framing.NONE, length_field=b"1000", fields=b'ETag: "e"\r\n')
    out = serialize_response_head(head, Framing.NONE, True, True)
    assert out == b'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: 1000\r\n\r\n'


def test_304_keeps_its_content_length() -> None:
    head = response_head(304, framing=Framing.NONE, length_field=b"42")
    out = serialize_response_head(head, Framing.NONE, True, True)
    assert out == b"HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\n\r\n"


def test_204_never_has_content_length() -> None:
    # RFC 9110 8.6: a server MUST NOT send Content-Length in a 204.
    head = response_head(204, framing=Framing.NONE, length_field=b"5")
    out = serialize_response_head(head, Framing.NONE, True, True)
    assert out == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_unknown_status_has_an_empty_reason() -> None:
    head = response_head(599, content_length=0)
    out = serialize_response_head(head, Framing.LENGTH, True, True)
    assert out == b"HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n"
    assert status_line(599) == b"HTTP/1.1 599 \r\n"
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"


def test_extra_fields_come_after_the_upstream_ones() -> None:
    head = response_head(101, framing=Framing.NONE, fields=b"Sec-WebSocket-Accept: x\r\n")
    out = serialize_response_head(
        head, Framing.NONE, True, True, b"Upgrade: websocket\r\nConnection: upgrade\r\n"
    )
    assert out == (
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n"
        b"Upgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    )


# ---------------------------------------------------------------- chunks


def test_chunk_bytes() -> None:
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 4096) == b"1000\r\n" + b"x" * 4096 + b"\r\n"
    assert chunk(b"\r\n0\r\n\r\n") == b"7\r\n\r\n0\r\n\r\n\r\n"  # data is opaque
    assert CHUNKED_END == b"0\r\n\r\n"


def test_empty_chunk_is_not_the_last_chunk() -> None:
    # A zero-length piece of body must not turn into `0\r\n\r\n`, which would end the
    # chunked body early: the client would take a truncated body for a whole one.
    assert chunk(b"") == b""


# ---------------------------------------------------------------- local answers


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Bad Request"),
        (431, "Request Header Fields Too Large"),
        (502, "Bad Gateway"),
        (504, "Gateway Timeout"),
    ],
)
def test_error_response_bytes(status: int, message: str) -> None:
    body = b"%d %s\n" % (status, message.encode())
    assert error_response(status, message) == (
        status_line(status)
        + b"Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )


def test_error_response_exact_502() -> None:
    assert error_response(502, "Bad Gateway") == (
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n"
        b"Connection: close\r\n\r\n502 Bad Gateway\n"
    )


def test_error_response_keep_alive() -> None:
    out = error_response(404, "Not Found", keep_alive=True)
    assert out == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n"
        b"Connection: keep-alive\r\n\r\n404 Not Found\n"
    )


def test_error_response_is_ascii_and_names_no_address() -> None:
    out = error_response(502, "Bad Gateway \u2013 caf\u00e9")
    assert out.isascii()
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == b"502 Bad Gateway ? caf?\n"
    # Only the status line and the three fixed fields: nothing about any upstream.
    assert head.split(b"\r\n")[1:] == [
        b"Content-Type: text/plain",
        b"Content-Length: %d" % len(body),
        b"Connection: close",
    ]
    assert not re.search(rb"\d+\.\d+\.\d+\.\d+|:\d{2,5}\b", out)
