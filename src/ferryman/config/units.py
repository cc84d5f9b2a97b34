"""Units in configuration values: durations ("1m30s"), sizes ("64k"), addresses
("host:port"), host names and IP literals.

Every parser here is strict and ASCII-only: numbers are matched by explicit `[0-9]`
regexes before they reach `int()`, because `int()` alone accepts '+5', '1_0', ' 5 ' and
non-ASCII digits, none of which nginx accepts. Each parser raises `ValueError` with a
reason a person can act on; the loaders add the key path. Nothing here knows about
files, YAML or the schema.
"""

from __future__ import annotations

import ipaddress
import math
import re

__all__ = [
    "parse_address",
    "parse_duration",
    "parse_host_name",
    "parse_ip",
    "parse_size",
]

# nginx's time units (ngx_parse_time), minus `M` (month) and `y` (year): `1M` next to
# `1m` is a trap, and no timeout here needs months.
_DURATION_UNITS: dict[str, float] = {
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "ms": 0.001,
    "s": 1.0,
    "w": 7 * 86400.0,
}
# Largest first, as nginx requires: "1m30s" is fine, "30s1m" and "1s1s" are not.
_DURATION_ORDER = ("w", "d", "h", "m", "s", "ms")
# At most 15 digits per number: enough for any real timeout, and far below the point
# where int() refuses long digit strings (sys.int_info.default_max_str_digits).
_DURATION_PART = re.compile(r"([0-9]{1,15})(ms|s|m|h|d|w)")
_BARE_NUMBER = re.compile(r"[0-9]{1,15}")

# nginx's size suffixes (ngx_parse_offset), either case.
_SIZE_UNITS: dict[str, int] = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"([0-9]{1,15})([kKmMgG]?)")

_PORT = re.compile(r"[0-9]{1,5}")
# RFC 1123 labels; `_` is allowed because container and service names use it.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_DOTTED_DIGITS = re.compile(r"[0-9.]+")
_DURATION_HINT = "use e.g. 30s, 500ms, 1m30s, 2h, 1d; a bare number means seconds"


def parse_duration(value: object) -> float:
    """Seconds in `value`: "30s", "500ms", "1m30s", "2d", a bare "30" (seconds, as in
    nginx), or a YAML int/float (seconds)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, not {value!r} ({_DURATION_HINT})")
    if isinstance(value, int | float):
        return _seconds_from_number(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration, not {type(value).__name__} ({_DURATION_HINT})")
    if _BARE_NUMBER.fullmatch(value):
        return float(int(value))
    return _seconds_from_units(value)


def _seconds_from_number(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a duration must be a finite number >= 0, not {value!r}")
    return float(value)


def _seconds_from_units(text: str) -> float:
    total = 0.0
    position = 0
    previous_rank = -1
    for part in _DURATION_PART.finditer(text):
        rank = _DURATION_ORDER.index(part.group(2))
        if part.start() != position or rank <= previous_rank:
            break
        total += int(part.group(1)) * _DURATION_UNITS[part.group(2)]
        position, previous_rank = part.end(), rank
    if position == 0 or position != len(text):
        raise ValueError(f"invalid duration {text!r} ({_DURATION_HINT}; largest unit first)")
    return total


def parse_size(value: object) -> int:
    """Bytes in `value`: "512", "64k", "1m", "1g" (suffix in either case, as in nginx),
    or a YAML int."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a size must be >= 0, not {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 512, 64k, 1m or 1g, not {value!r}")
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid size {value!r} (use e.g. 512, 64k, 1m, 1g)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_address(text: str) -> tuple[str | None, int]:
    """(host, port) from "host:port", "[::1]:80" or a bare "80" (host None: the caller
    picks the default, e.g. 0.0.0.0 for a listener). IPv6 hosts come back unbracketed."""
    if not isinstance(text, str):
        raise ValueError(f"expected an address string such as host:port, not {text!r}")
    if _PORT.fullmatch(text):
        return None, _port(text)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid address {text!r} (write IPv6 as [addr]:port)")
        return _ipv6(host, text), _port(port)
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"address {text!r} has no port (write host:port)")
    if ":" in host:
        raise ValueError(f"invalid address {text!r} (write IPv6 as [addr]:port)")
    return parse_host_name(host), _port(port)


def parse_host_name(text: str) -> str:
    """`text` if it is a DNS name or an IPv4 literal (all-numeric names must be valid IPv4,
    so "999.1.1.1" is caught here rather than at resolve time)."""
    if not _HOST_NAME.fullmatch(text) or len(text) > 253:
        raise ValueError(f"invalid host name {text!r}")
    if _DOTTED_DIGITS.fullmatch(text):
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise ValueError(f"invalid IPv4 address {text!r}") from None
    return text


def parse_ip(text: str) -> str:
    """The canonical form of an IPv4 or IPv6 literal (`ipaddress` checks ASCII digits)."""
    if not isinstance(text, str):
        raise ValueError(f"expected an IP address, not {text!r}")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _ipv6(host: str, text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(host))
    except ValueError:
        raise ValueError(f"invalid IPv6 address in {text!r}") from None


def _port(text: str) -> int:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, not {text!r}")
    return int(text)
