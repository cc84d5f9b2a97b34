"""server/h2_stream.py's pure parts: an HTTP/2 header block checked against RFC 9113
8.2/8.3 and rendered as the HTTP/1.1 head the RequestParser reads; a response head
turned into HTTP/2 fields."""

from __future__ import annotations

import pytest

from ferryman.http.messages import Framing, RequestHead, ResponseHead
from ferryman.http.request_parser import RequestParser, RequestSink
from ferryman.server.h2_stream import Malformed, response_fields, to_http1_head

Headers = list[tuple[bytes, bytes]]

_BASE: Headers = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.com"),
    (b":path", b"/a?b=1"),
]


class _Sink(RequestSink):
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_request_body(self, data: bytes) -> None:
        raise AssertionError("no body is fed")

    def on_request_end(self) -> None:
        pass


def _parsed(headers: Headers, ended: bool = True) -> RequestHead:
    sink = _Sink()
    RequestParser(sink).feed(to_http1_head(headers, ended).head_bytes)
    (head,) = sink.heads
    return head


def test_pseudo_fields_become_request_line_and_host() -> None:
    request = to_http1_head([*_BASE, (b"accept", b"*/*")], True)
    assert request.method == b"GET"
    assert request.head_bytes == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\naccept: */*\r\n\r\n"
    )
    head = _parsed(_BASE)
    assert head.host == b"example.com" and head.path == b"/a" and head.query == b"b=1"
    assert head.framing is Framing.NONE


def test_host_field_serves_when_authority_is_absent() -> None:
    headers = [h for h in _BASE if h[0] != b":authority"] + [(b"host", b"h.test")]
    assert _parsed(headers).host == b"h.test"


def test_same_host_and_authority_is_accepted_once() -> None:
    request = to_http1_head([*_BASE, (b"host", b"example.com")], True)
    assert request.head_bytes.count(b"Host:") == 1


def test_body_framing() -> None:
    # A body of unknown length is chunked towards the parser and the upstream.
    assert _parsed(_BASE, ended=False).framing is Framing.CHUNKED
    sized = _parsed([*_BASE, (b"content-length", b"12")], ended=False)
    assert sized.framing is Framing.LENGTH and sized.content_length == 12
    assert to_http1_head([*_BASE, (b"content-length", b"12")], False).content_length == 12
    assert to_http1_head(_BASE, True).content_length == -1


def test_cookies_are_joined() -> None:
    request = to_http1_head([*_BASE, (b"cookie", b"a=1"), (b"cookie", b"b=2")], True)
    assert b"Cookie: a=1; b=2\r\n" in request.head_bytes


def test_te_trailers_is_dropped() -> None:
    assert b"te:" not in to_http1_head([*_BASE, (b"te", b"trailers")], True).head_bytes


def test_connect_needs_only_authority() -> None:
    request = to_http1_head([(b":method", b"CONNECT"), (b":authority", b"h:443")], True)
    assert request.method == b"CONNECT" and request.head_bytes == b""
    with pytest.raises(Malformed):
        to_http1_head([(b":method", b"CONNECT"), (b":path", b"/")], True)


_MALFORMED: dict[str, Headers] = {
    "uppercase name": [*_BASE, (b"X-Upper", b"1")],
    "space in name": [*_BASE, (b"x a", b"1")],
    "colon in name": [*_BASE, (b"x:a", b"1")],
    "empty name": [*_BASE, (b"", b"1")],
    "CR in value": [*_BASE, (b"x-a", b"1\r\nx-b: 2")],
    "LF in value": [*_BASE, (b"x-a", b"1\nx")],
    "NUL in value": [*_BASE, (b"x-a", b"1\x00")],
    "leading space in value": [*_BASE, (b"x-a", b" 1")],
    "trailing tab in value": [*_BASE, (b"x-a", b"1\t")],
    "connection": [*_BASE, (b"connection", b"close")],
    "keep-alive": [*_BASE, (b"keep-alive", b"5")],
    "proxy-connection": [*_BASE, (b"proxy-connection", b"x")],
    "transfer-encoding": [*_BASE, (b"transfer-encoding", b"chunked")],
    "upgrade": [*_BASE, (b"upgrade", b"h2c")],
    "te gzip": [*_BASE, (b"te", b"gzip")],
    "pseudo after regular": [(b"x-a", b"1"), *_BASE],
    "unknown pseudo": [*_BASE[:1], (b":protocol", b"websocket"), *_BASE[1:]],
    "response pseudo": [(b":status", b"200"), *_BASE],
    "repeated pseudo": [*_BASE, *_BASE[:1]],
    "no method": _BASE[1:],
    "no scheme": [h for h in _BASE if h[0] != b":scheme"],
    "no path": [h for h in _BASE if h[0] != b":path"],
    "empty path": [*[h for h in _BASE if h[0] != b":path"], (b":path", b"")],
    "space in path": [*[h for h in _BASE if h[0] != b":path"], (b":path", b"/a b")],
    "bad method": [(b":method", b"G T"), *_BASE[1:]],
    "host differs": [*_BASE, (b"host", b"other.test")],
    "bad content-length": [*_BASE, (b"content-length", b"+5")],
    "repeated content-length": [*_BASE, (b"content-length", b"1"), (b"content-length", b"1")],
    "space in authority": [*[h for h in _BASE if h[0] != b":authority"], (b":authority", b"a b")],
}


@pytest.mark.parametrize("case", sorted(_MALFORMED))
def test_malformed(case: str) -> None:
    with pytest.raises(Malformed):
        to_http1_head(_MALFORMED[case], False)


def test_content_length_without_data() -> None:
    with pytest.raises(Malformed):
        to_http1_head([*_BASE, (b"content-length", b"3")], True)
    assert to_http1_head([*_BASE, (b"content-length", b"0")], True).content_length == 0


def test_response_fields_drop_connection_specific() -> None:
    head = ResponseHead(
        204,
        [
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"close, X-Private"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Private", b"secret"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
        ],
        Framing.NONE,
        0,
        frozenset({b"close", b"x-private"}),
        b"",
        None,
    )
    assert response_fields(head) == [
        (b":status", b"204"),
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
