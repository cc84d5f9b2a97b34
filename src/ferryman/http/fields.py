"""Field rules shared by requests and responses (RFC 9110 sections 5 and 7.6.1).

Strict, ASCII-only parsing: `int()` accepts '+5', '1_0', ' 5' and Unicode digits and
`str.strip()` removes characters HTTP does not call whitespace, so neither is used on
bytes that came from the network.
"""

from __future__ import annotations

import re
from typing import Final

from ferryman.errors import ProtocolError

__all__ = [
    "HOP_BY_HOP",
    "host_name",
    "is_valid_host",
    "lower_name",
    "parse_connection_tokens",
    "parse_content_length",
    "trim_ows",
]

# RFC 9110 7.6.1 and the de-facto extras every proxy strips (Proxy-Connection, Keep-Alive).
# Content-Length is not hop-by-hop, but the proxy re-frames every body, so it is
# re-written rather than copied.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)

# RFC 3986 reg-name / IPv4 / IP-literal with an optional port; no userinfo, no path.
_HOST: Final = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]{0,5})?")
_OWS: Final = b" \t"


def trim_ows(value: bytes) -> bytes:
    """Remove optional whitespace (SP / HTAB only) from both ends."""
    # Most values have none: two byte reads (native in the compiled build) instead of a
    # method call by name.
    if value:
        first = value[0]
        last = value[-1]
        if first != 0x20 and first != 0x09 and last != 0x20 and last != 0x09:
            return value
    return value.strip(_OWS)


def parse_content_length(value: bytes) -> int:
    """RFC 9110 8.6: 1*DIGIT. A list ("5, 5") is refused outright: it means two
    Content-Length fields were merged somewhere, the start of a smuggling attempt."""
    # bytes.isdigit() is ASCII-only, unlike str.isdigit(); with it, int() sees only
    # plain digits, never a sign, underscore or space.
    if not value.isdigit() or len(value) > 18:
        raise ProtocolError(f"invalid Content-Length {value[:40]!r}")
    return int(value)


# The values seen on nearly every message, parsed once.
_COMMON_TOKENS: Final = {
    v: frozenset({v.lower()})
    for v in (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade")
}


def parse_connection_tokens(value: bytes) -> frozenset[bytes]:
    common = _COMMON_TOKENS.get(value)
    if common is not None:
        return common
    return frozenset(t for t in (trim_ows(p).lower() for p in value.split(b",")) if t)


# Field names as nearly every client and server spells them, with their lower-case
# form: one dict lookup instead of a lower() call (and hashing its new result) for each
# field of each message. Anything else is lowered as before.
_LOWER: Final = {
    n: n.lower()
    for name in (
        b"Accept",
        b"Accept-Encoding",
        b"Accept-Language",
        b"Accept-Ranges",
        b"Age",
        b"Authorization",
        b"Cache-Control",
        b"Connection",
        b"Content-Encoding",
        b"Content-Length",
        b"Content-Type",
        b"Cookie",
        b"Date",
        b"ETag",
        b"Expect",
        b"Expires",
        b"Host",
        b"If-Modified-Since",
        b"If-None-Match",
        b"Keep-Alive",
        b"Last-Modified",
        b"Location",
        b"Origin",
        b"Pragma",
        b"Referer",
        b"Server",
        b"Set-Cookie",
        b"Transfer-Encoding",
        b"Upgrade",
        b"User-Agent",
        b"Vary",
        b"X-Forwarded-For",
        b"X-Forwarded-Host",
        b"X-Forwarded-Proto",
        b"X-Real-IP",
        b"X-Request-ID",
    )
    for n in (name, name.lower())
}


def lower_name(name: bytes) -> bytes:
    """`name.lower()`, from a table for the common names."""
    found = _LOWER.get(name)
    return found if found is not None else name.lower()


def is_valid_host(value: bytes) -> bool:
    return _HOST.fullmatch(value) is not None


def host_name(host: bytes) -> bytes:
    """The name a Host value (or an absolute target's authority) gives: lower-cased,
    without the port, and without a trailing dot ("example.com." names the same host).
    nginx's `$host`, and what server_name is matched against."""
    if host.startswith(b"["):
        end = host.find(b"]")
        return (host[: end + 1] if end >= 0 else host).lower()
    return host.partition(b":")[0].rstrip(b".").lower()
