"""PROXY protocol v1/v2 header parsing: byte scripts against the sans-I/O parser."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from ferryman.server.proxy_protocol import (
    MAX_V2_LENGTH,
    ProxyHeader,
    ProxyHeaderParser,
    ProxyProtocolError,
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def parse(data: bytes) -> tuple[ProxyHeader, bytes]:
    found = ProxyHeaderParser().feed(data)
    assert found is not None, "the parser wanted more bytes"
    return found


def refused(data: bytes) -> str:
    with pytest.raises(ProxyProtocolError) as info:
        ProxyHeaderParser().feed(data)
    return info.value.reason


def v2(command: int, family: int, body: bytes) -> bytes:
    return SIG + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v2_inet(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if a.version == 4 else 0x21
    return v2(1, family, a.packed + b.packed + struct.pack("!HH", sport, dport) + tlvs)


# ---- version 1 ----


def test_v1_tcp4() -> None:
    header, rest = parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n")
    assert header == ProxyHeader(1, ("192.0.2.7", 56324), ("198.51.100.1", 443))
    assert rest == b"GET / HTTP/1.1\r\n"


def test_v1_tcp6_is_normalised() -> None:
    header, rest = parse(b"PROXY TCP6 2001:DB8:0:0::1 ::1 65535 0\r\n")
    assert header.source == ("2001:db8::1", 65535)
    assert header.destination == ("::1", 0)
    assert rest == b""


def test_v1_unknown_keeps_the_socket_addresses() -> None:
    assert parse(b"PROXY UNKNOWN\r\n") == (ProxyHeader(1), b"")
    header, rest = parse(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\nX")
    assert header.source is None and rest == b"X"


def test_v1_byte_by_byte() -> None:
    parser = ProxyHeaderParser()
    data = b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\nGET"
    results = [parser.feed(data[i : i + 1]) for i in range(len(data) - 3)]
    assert results[:-1] == [None] * (len(results) - 1)
    assert results[-1] == (ProxyHeader(1, ("10.0.0.1", 1), ("10.0.0.2", 2)), b"")
    with pytest.raises(ProxyProtocolError):
        parser.feed(b"GET")  # one header per connection


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",  # too many fields
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",  # too few
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",  # two spaces
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",  # family mismatch
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",  # leading zero octet
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1_0 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n",  # Arabic-Indic digit one
        b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",  # zone ids are not addresses here
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # bare LF
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    ],
)
def test_v1_malformed(line: bytes) -> None:
    refused(line)


def test_v1_too_long_without_crlf() -> None:
    assert "too long" in refused(b"PROXY UNKNOWN " + b"a" * 100)
    # 107 bytes with the CRLF is the longest allowed.
    ok = b"PROXY UNKNOWN " + b"a" * (107 - 16) + b"\r\n"
    assert len(ok) == 107 and parse(ok)[0] == ProxyHeader(1)
    refused(b"PROXY UNKNOWN " + b"a" * (108 - 16) + b"\r\n")


def test_plain_http_is_refused_at_the_first_byte() -> None:
    assert refused(b"G") == "no PROXY protocol header"
    refused(b"PROXX")
    refused(b"\r\n\r\n\x00\r\nQUIX")


def test_incomplete_prefixes_wait() -> None:
    for data in (b"", b"P", b"PROXY", b"PROXY TCP4 1.2.3.4", SIG[:5], SIG, SIG + b"\x21\x11\x00"):
        assert ProxyHeaderParser().feed(data) is None, data


# ---- version 2 ----


def test_v2_tcp4_with_tlvs_skipped() -> None:
    tlv = b"\x04\x00\x03abc" + b"\x01\x00\x02h2"
    header, rest = parse(v2_inet("203.0.113.9", "10.1.1.1", 40000, 80, tlv) + b"GET /")
    assert header == ProxyHeader(2, ("203.0.113.9", 40000), ("10.1.1.1", 80))
    assert rest == b"GET /"


def test_v2_tcp6() -> None:
    header, _ = parse(v2_inet("2001:db8::42", "::1", 1, 65535))
    assert header.source == ("2001:db8::42", 1)
    assert header.destination == ("::1", 65535)


def test_v2_local_and_unspec_keep_the_socket_addresses() -> None:
    assert parse(v2(0, 0x00, b"")) == (ProxyHeader(2), b"")
    # LOCAL with an address block: ignored.
    assert parse(v2(0, 0x11, bytes(12)) + b"x") == (ProxyHeader(2), b"x")
    assert parse(v2(1, 0x00, b""))[0] == ProxyHeader(2)
    assert parse(v2(1, 0x31, bytes(216)))[0] == ProxyHeader(2)  # AF_UNIX


def test_v2_in_small_pieces() -> None:
    data = v2_inet("192.0.2.1", "192.0.2.2", 5, 6, b"\x05\x00\x01z") + b"rest"
    parser = ProxyHeaderParser()
    outs = [parser.feed(data[i : i + 3]) for i in range(0, len(data) - 4, 3)]
    assert outs[:-1] == [None] * (len(outs) - 1)
    found = outs[-1]
    assert found is not None
    header, rest = found
    assert header.source == ("192.0.2.1", 5) and b"rest".startswith(rest)


def test_v2_errors() -> None:
    assert "version" in refused(SIG + b"\x11\x11\x00\x0c" + bytes(12))
    assert "command" in refused(SIG + b"\x22\x11\x00\x0c" + bytes(12))
    assert "shorter" in refused(v2(1, 0x11, bytes(8)))
    assert "shorter" in refused(v2(1, 0x21, bytes(12)))


def test_v2_length_is_bounded_before_any_body_arrives() -> None:
    too_long = SIG + b"\x21\x11" + struct.pack("!H", MAX_V2_LENGTH + 1)
    assert "longer" in refused(too_long)
    ok = v2(1, 0x11, bytes(12) + b"\x00" * (MAX_V2_LENGTH - 12))
    assert parse(ok)[0].source == ("0.0.0.0", 0)
