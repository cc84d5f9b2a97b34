"""The PROXY protocol header (HAProxy's spec, versions 1 and 2), sans-I/O.

Owns the bytes a load balancer in front of us puts before the client's first byte:
feed what arrives, get the addresses it carries (and whatever followed the header),
or a `ProxyProtocolError`. Bounded: a v1 header is at most 107 bytes (spec 2.1), a v2
header at most `MAX_V2_LENGTH` bytes after its 16-byte preamble; anything else is an
error as soon as the first bytes show it cannot be a header.

Knows nothing about sockets, timeouts or what the addresses are used for: whether the
source address may become the client's is `filters/real_ip.py`'s decision, as in nginx
($proxy_protocol_addr becomes $remote_addr only through `real_ip_header proxy_protocol`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_V1_LENGTH",
    "MAX_V2_LENGTH",
    "ProxyHeader",
    "ProxyHeaderParser",
    "ProxyProtocolError",
]

# Spec 2.1: "a receiver may reject a line longer than 107 bytes" (the worst case
# TCP6 line with its CRLF).
MAX_V1_LENGTH: Final = 107
# Spec 2.2 allows 65535 bytes of addresses and TLVs; real senders (HAProxy, AWS NLB,
# GCP) send at most a few hundred. nginx reads the header into its 1 KiB client header
# buffer; 4 KiB leaves room for TLVs while bounding what a stranger can make us hold.
MAX_V2_LENGTH: Final = 4096

_V1_PREFIX: Final = b"PROXY "
_V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PREAMBLE: Final = 16
# v2 family byte (high nibble) -> the size of its address block (spec 2.2).
_V2_INET: Final = 0x1
_V2_INET6: Final = 0x2
_V2_ADDRESS_SIZE: Final = {_V2_INET: 12, _V2_INET6: 36}
_V2_LOCAL: Final = 0x0
_V2_PROXY: Final = 0x1


class ProxyProtocolError(Exception):
    """The connection did not start with a valid PROXY header: close it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a header said. `source`/`destination` are (address, port), or None when
    the sender had no addresses to give (v1 UNKNOWN, v2 LOCAL or a family other than
    TCP over IPv4/IPv6): the connection's own addresses then stand."""

    version: int
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


class ProxyHeaderParser:
    """Feed bytes until `feed` returns (header, rest); `rest` is the start of the
    client's own stream. Raises ProxyProtocolError as soon as the bytes cannot be a
    header; returns None while more bytes are needed."""

    __slots__ = ("_buffer", "done")

    def __init__(self) -> None:
        self._buffer = b""
        self.done = False

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        if self.done:
            raise ProxyProtocolError("the PROXY header was already read")
        buffer = self._buffer + data if self._buffer else data
        if not buffer:
            return None
        if buffer[0] == 0x50:  # "P"
            found = _v1(buffer)
        elif buffer[0] == 0x0D:  # "\r"
            found = _v2(buffer)
        else:
            raise ProxyProtocolError("no PROXY protocol header")
        if found is None:
            self._buffer = buffer
            return None
        self.done = True
        self._buffer = b""
        return found

    def __repr__(self) -> str:
        return f"ProxyHeaderParser(buffered={len(self._buffer)} done={self.done})"


# ---- version 1: one text line ----


def _v1(buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
    head = buffer[: len(_V1_PREFIX)]
    if head != _V1_PREFIX[: len(head)]:
        raise ProxyProtocolError("no PROXY protocol header")
    end = buffer.find(b"\r\n", 0, MAX_V1_LENGTH)
    if end < 0:
        if len(buffer) >= MAX_V1_LENGTH or b"\n" in buffer:
            raise ProxyProtocolError("PROXY v1 header too long or not ended by CRLF")
        return None
    return _v1_line(buffer[len(_V1_PREFIX) : end]), buffer[end + 2 :]


def _v1_line(line: bytes) -> ProxyHeader:
    # Spec 2.1: exactly one space between fields; UNKNOWN may carry anything after it.
    if line == b"UNKNOWN" or line.startswith(b"UNKNOWN "):
        return ProxyHeader(1)
    parts = line.split(b" ")
    if len(parts) != 5:
        raise ProxyProtocolError("PROXY v1 header needs 5 fields")
    family, src, dst, sport, dport = parts
    if family == b"TCP4":
        version = 4
    elif family == b"TCP6":
        version = 6
    else:
        raise ProxyProtocolError("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN")
    return ProxyHeader(
        1,
        (_v1_address(src, version), _v1_port(sport)),
        (_v1_address(dst, version), _v1_port(dport)),
    )


def _v1_address(text: bytes, version: int) -> str:
    try:
        if not text.isascii() or b"%" in text:
            raise ValueError
        value = text.decode("ascii")
        address = ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
    except ValueError:
        raise ProxyProtocolError(f"invalid TCP{version} address in PROXY header") from None
    return address.compressed


def _v1_port(text: bytes) -> int:
    # Spec 2.1: decimal, 0..65535, no leading zero; parsed by hand (no int() on the wire).
    if not 1 <= len(text) <= 5 or (len(text) > 1 and text[0] == 0x30):
        raise ProxyProtocolError("invalid port in PROXY header")
    port = 0
    for byte in text:
        if not 0x30 <= byte <= 0x39:
            raise ProxyProtocolError("invalid port in PROXY header")
        port = port * 10 + byte - 0x30
    if port > 65535:
        raise ProxyProtocolError("invalid port in PROXY header")
    return port


# ---- version 2: binary ----


def _v2(buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
    head = buffer[: len(_V2_SIGNATURE)]
    if head != _V2_SIGNATURE[: len(head)]:
        raise ProxyProtocolError("no PROXY protocol header")
    if len(buffer) < _V2_PREAMBLE:
        return None
    version, command = buffer[12] >> 4, buffer[12] & 0x0F
    if version != 2:
        raise ProxyProtocolError(f"unsupported PROXY protocol version {version}")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyProtocolError(f"unsupported PROXY v2 command {command}")
    length = int.from_bytes(buffer[14:16], "big")
    if length > MAX_V2_LENGTH:
        raise ProxyProtocolError(f"PROXY v2 header longer than {MAX_V2_LENGTH} bytes")
    end = _V2_PREAMBLE + length
    if len(buffer) < end:
        return None
    rest = buffer[end:]
    if command == _V2_LOCAL:
        # Spec 2.2: a health check or the like from the proxy itself; the address
        # block (if any) is ignored and the connection's own addresses stand.
        return ProxyHeader(2), rest
    family = buffer[13] >> 4
    size = _V2_ADDRESS_SIZE.get(family)
    if size is None:
        # AF_UNSPEC or AF_UNIX: nothing a client address can be taken from (spec: the
        # receiver must accept the connection and use its real addresses).
        return ProxyHeader(2), rest
    if length < size:
        raise ProxyProtocolError("PROXY v2 address block shorter than its family needs")
    # TLVs after the address block are skipped: nothing here uses them.
    return _v2_addresses(buffer[_V2_PREAMBLE : _V2_PREAMBLE + size], family), rest


def _v2_addresses(block: bytes, family: int) -> ProxyHeader:
    width = 4 if family == _V2_INET else 16
    src = ipaddress.ip_address(block[:width]).compressed
    dst = ipaddress.ip_address(block[width : 2 * width]).compressed
    sport = int.from_bytes(block[2 * width : 2 * width + 2], "big")
    dport = int.from_bytes(block[2 * width + 2 : 2 * width + 4], "big")
    return ProxyHeader(2, (src, sport), (dst, dport))
