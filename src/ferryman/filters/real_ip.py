"""The real client address (nginx's realip module): which address a request is from.

Owns the decision only. A connection from a `trusted` address (set_real_ip_from) may
name the client in a header (X-Forwarded-For, X-Real-IP, RFC 7239 Forwarded `for=`) or
in its PROXY protocol header; from anyone else, the socket peer is the client. With
`recursive` (real_ip_recursive), X-Forwarded-For and Forwarded are walked from the
right past trusted addresses, so a chain of our own proxies is skipped; without it the
rightmost entry is taken, trusted or not. Entries that are not IP addresses (RFC 7239
obfuscated identifiers, `unknown`, garbage) end the walk, keeping what was found so far,
as ngx_http_get_forwarded_addr_internal does.

Pure: no sockets, no clock. Knows nothing about the exchange beyond the values it is
handed; where the answer is used ($remote_addr, logs, ip_hash, X-Forwarded-For sent
upstream, access rules) is the exchange's business.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from ferryman.config.schema import RealIpSpec

__all__ = ["HEADERS", "RealIp", "parse_address", "parse_network"]

# real_ip_header values: a field name, or the PROXY protocol header's source address.
HEADERS: Final = ("X-Forwarded-For", "X-Real-IP", "Forwarded", "proxy_protocol")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# An X-Forwarded-For longer than this is walked only over its last part: nobody chains
# this many proxies, and the walk must not cost in proportion to what a client sends.
_MAX_ENTRIES: Final = 64


def parse_network(text: str) -> _Network:
    """A set_real_ip_from value: an address or a CIDR, v4 or v6. Host bits set below the
    prefix are ignored (nginx warns "low address bits ... are meaningless")."""
    if "%" in text or not text.isascii():
        raise ValueError(f"invalid address or CIDR {text!r}")
    return ipaddress.ip_network(text, strict=False)


def parse_address(value: bytes) -> _Address | None:
    """An address as a header writes it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
    `[2001:db8::1]:80`; None for anything else. ASCII only, no zone ids."""
    if not value or len(value) > 64 or not value.isascii() or b"%" in value:
        return None
    text = value.decode("ascii")
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not _is_port_suffix(text[end + 1 :]):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not _is_port_suffix(":" + port):
            return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_port_suffix(text: str) -> bool:
    return text == "" or (
        text[:1] == ":" and 1 < len(text) <= 6 and text[1:].isdecimal() and text[1:].isascii()
    )


class RealIp:
    """A RealIpSpec compiled for a worker: `client(...)` is the whole decision."""

    __slots__ = ("_networks", "header", "recursive")

    def __init__(self, spec: RealIpSpec) -> None:
        self._networks = tuple(parse_network(t) for t in spec.trusted)
        self.header = spec.header.lower()
        self.recursive = spec.recursive

    def is_trusted(self, address: _Address) -> bool:
        return any(address in net for net in self._networks)

    def client(
        self,
        peer: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        proxy_addr: bytes | None = None,
    ) -> bytes | None:
        """The client's address (normalised text) when it differs from `peer`, else None.
        `headers` are the request's fields as received; `proxy_addr` the PROXY header's
        source address, if the connection had one."""
        address = parse_address(peer)
        if address is None or not self.is_trusted(address):
            return None
        header = self.header
        if header == "proxy_protocol":
            found = parse_address(proxy_addr) if proxy_addr else None
            return found.compressed.encode() if found is not None else None
        if header == "x-real-ip":
            # nginx takes the whole value as one address (the last field if repeated).
            value = _last_value(headers, b"x-real-ip")
            found = parse_address(value) if value is not None else None
        elif header == "forwarded":
            found = self._walk(address, _forwarded_for(headers))
        else:
            found = self._walk(address, _list_values(headers, header.encode()))
        if found is None or found == address:
            return None
        return found.compressed.encode()

    def _walk(self, peer: _Address, entries: list[bytes]) -> _Address | None:
        """nginx's walk from the right: while the current hop is trusted, step to the
        entry before it; without `recursive`, one step only."""
        current = peer
        found = None
        for entry in reversed(entries[-_MAX_ENTRIES:]):
            if not self.is_trusted(current):
                break
            address = parse_address(entry)
            if address is None:
                break
            current = found = address
            if not self.recursive:
                break
        return found

    def __repr__(self) -> str:
        nets = ", ".join(str(n) for n in self._networks)
        return f"RealIp(header={self.header} recursive={self.recursive} trusted=[{nets}])"


def _last_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    value = None
    for n, v in headers:
        if n.lower() == name:
            value = v
    return _trim(value) if value is not None else None


def _list_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every element of every field `name`, in order (RFC 9110 5.3: repeated fields
    are one comma-separated list)."""
    out: list[bytes] = []
    for n, v in headers:
        if n.lower() == name:
            out.extend(e for e in (_trim(p) for p in v.split(b",")) if e)
    return out


def _forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """The `for=` value of each element of the Forwarded fields (RFC 7239 section 4),
    in order; an element without one counts as an unknown hop (b"")."""
    out: list[bytes] = []
    for n, v in headers:
        if n.lower() != b"forwarded":
            continue
        for element in _split_outside_quotes(v, 0x2C):  # ","
            value = b""
            for pair in _split_outside_quotes(element, 0x3B):  # ";"
                key, eq, raw = _trim(pair).partition(b"=")
                if eq and key.lower() == b"for":
                    value = _unquote(raw)
            out.append(value)
    return out


def _split_outside_quotes(value: bytes, sep: int) -> list[bytes]:
    parts: list[bytes] = []
    start = 0
    quoted = escaped = False
    for i, byte in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and byte == 0x5C:  # backslash: quoted-pair
            escaped = True
        elif byte == 0x22:
            quoted = not quoted
        elif byte == sep and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def _unquote(value: bytes) -> bytes:
    # RFC 7239 6: an IPv6 address (bracketed, with or without port) must be quoted; a
    # quoted-pair inside is not something an address contains, so it is not unescaped.
    if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
        return value[1:-1]
    return value


def _trim(value: bytes) -> bytes:
    # HTTP's optional whitespace is SP and HTAB only (never str.strip()).
    return value.strip(b" \t")
