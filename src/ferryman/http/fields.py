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
    "is_valid_host",
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


def is_valid_host(value: bytes) -> bool:
    return _HOST.fullmatch(value) is not None
