"""Field rules shared by requests and responses (RFC 9110 sections 5 and 7.6.1).

Strict, ASCII-only parsing: `int()` accepts '+5', '1_0', ' 5' and Unicode digits and
`str.strip()` removes characters HTTP does not call whitespace, so neither is used on
bytes that came from the network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from mypy_extensions import i64

from ferryman.errors import ProtocolError

__all__ = [
    "COMPILED",
    "HOP_BY_HOP",
    "equals_lower",
    "host_name",
    "is_token_name",
    "is_valid_host",
    "length_mask",
    "lower_name",
    "names_end_to_end",
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


def _probe() -> None:
    pass


# Whether this module runs compiled (mypyc makes its functions builtins). The byte loops
# below are cheaper than a method call only compiled; the interpreter runs each byte as
# bytecode, so the pure-Python sources keep the C methods. Each branch is what one of
# the two test runs (compiled, FERRYMAN_PURE=1) exercises.
COMPILED: Final = type(_probe).__name__ != "function"

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
    # Compiled, digit by digit: int() is a generic call that parses its arguments
    # (about half a request's worth of field work). 18 digits fit an i64. Interpreted,
    # bytes.isdigit() (ASCII only, unlike str.isdigit()) makes int() see plain digits,
    # never a sign, underscore or space.
    if not COMPILED:
        if not value.isdigit() or len(value) > 18:
            raise ProtocolError(f"invalid Content-Length {value[:40]!r}")
        return int(value)
    n = len(value)
    if n == 0 or n > 18:
        raise ProtocolError(f"invalid Content-Length {value[:40]!r}")
    result: i64 = 0
    for i in range(n):
        c = value[i]
        if c < 0x30 or c > 0x39:
            raise ProtocolError(f"invalid Content-Length {value[:40]!r}")
        result = result * 10 + (c - 0x30)
    return result


def length_mask(names: Iterable[bytes]) -> int:
    """A bit per length that one of `names` has: `mask >> len(name) & 1` is 0 for a
    name that cannot be among them, which spares it the lower-casing and the set lookup
    (a hash of a fresh bytes object) that the usual field needs no answer from."""
    mask = 0
    for name in names:
        mask |= 1 << len(name)
    return mask


def equals_lower(name: bytes, lower: bytes, usual: bytes) -> bool:
    """`name.lower() == lower` for a lower-case `lower`. `usual` is the spelling nearly
    every HTTP/1 sender uses (b"Content-Length"), and `lower` the one HTTP/2 requires:
    each is a memcmp away. Any other is lowered through a 256-byte table in one C loop
    (bytes.translate with a bytes table is a mypyc primitive; lower() would be a method
    call by name) and compared. The byte-by-byte loop this replaced cost about 30
    instructions a byte."""
    if name in (usual, lower):
        return True
    if len(name) != len(lower):
        return False
    return name.translate(_TO_LOWER) == lower


# bytes.lower() as a bytes.translate table.
_TO_LOWER: Final = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def is_token_name(name: bytes) -> bool:
    """Letters, digits and '-', at least one of them not '-': nginx's
    ignore_invalid_headers rule for a field passed on (`name.replace(b"-", b"")
    .isalnum()`, without the two method calls and the copy)."""
    if not COMPILED:
        return name.replace(b"-", b"").isalnum()
    seen = False
    for i in range(len(name)):
        c = name[i]
        if 0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A or 0x30 <= c <= 0x39:
            seen = True
        elif c != 0x2D:
            return False
    return seen


# The values seen on nearly every message, parsed once; both spellings of a value share
# one set, so that `names_end_to_end` knows the hop-by-hop ones by identity.
_KEEP_ALIVE: Final = frozenset({b"keep-alive"})
_UPGRADE: Final = frozenset({b"upgrade"})
_CLOSE: Final = frozenset({b"close"})
_COMMON_TOKENS: Final = {
    b"keep-alive": _KEEP_ALIVE,
    b"Keep-Alive": _KEEP_ALIVE,
    b"close": _CLOSE,
    b"Close": _CLOSE,
    b"upgrade": _UPGRADE,
    b"Upgrade": _UPGRADE,
}


def names_end_to_end(tokens: frozenset[bytes]) -> bool:
    """Whether the Connection options `tokens` name a field that is not hop-by-hop
    anyway: one the message's other fields must lose. The usual `keep-alive` and
    `upgrade` are answered by identity, without the subset test (a generic comparison,
    compiled)."""
    if not tokens or tokens is _KEEP_ALIVE or tokens is _UPGRADE:
        return False
    return not tokens <= HOP_BY_HOP


def parse_connection_tokens(value: bytes) -> frozenset[bytes]:
    if value == b"keep-alive":
        return _KEEP_ALIVE  # the usual value: a comparison, not a hash and lookup
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
