"""Where a forward proxy may connect: destination rules and the SSRF defaults.

Owns the pure decision, without sockets or a resolver: a host as the client wrote it
is normalised the way browsers and libc read it (`http://2130706433/`, `0177.0.0.1`,
`0x7f.1`, `127.1` are all 127.0.0.1: WHATWG URL "IPv4 parser", inet_aton(3)), and
every resolved address is decided on before anything connects to it, so a name that
resolves to a private address (DNS rebinding, a `hosts` override) is caught too.

Rules (ForwardSpec.destinations) are tried in order, first match wins:
  `example.com`      that name only
  `*.example.com`    its subdomains (not example.com itself)
  `.example.com`     the name and its subdomains (squid's dstdomain)
  `10.0.0.0/8`, `::1`  the resolved address
  `port:25`, `port:8000-8999`
  `all`
With no rule matching, or an `allow` that did not name the address (a domain, a
port, `all`), loopback, private, link-local, CGNAT, multicast, reserved and cloud
metadata addresses are refused unless `allow_private` is set: an allow for
`*.corp.example` must not open 127.0.0.1 to whoever controls that zone's DNS.

Must not know: asyncio, sockets, the exchange, the clock.
"""

from __future__ import annotations

import ipaddress
import string
from dataclasses import dataclass
from typing import Final

from ferryman.config.schema import DestinationRule

__all__ = [
    "Address",
    "Decision",
    "DestinationPolicy",
    "compile_destinations",
    "parse_host",
    "special_kind",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata endpoints, named as such in the log (AWS/GCP/Azure/OpenStack
# 169.254.169.254, AWS IPv6 fd00:ec2::254, ECS task metadata 169.254.170.2, Alibaba
# 100.100.100.200, Oracle 192.0.0.192).
_METADATA: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
    )
)
_V4_SPECIAL: Final = tuple(
    (ipaddress.IPv4Network(net), kind)
    for net, kind in (
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("169.254.0.0/16", "link-local"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("192.0.0.0/24", "reserved"),
        ("198.18.0.0/15", "reserved"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)
_V6_SPECIAL: Final = tuple(
    (ipaddress.IPv6Network(net), kind)
    for net, kind in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),
        ("ff00::/8", "multicast"),
    )
)
# IPv6 forms that carry an IPv4 address a connect would reach: mapped (::ffff:a.b.c.d,
# RFC 4291 2.5.5.2), NAT64 (64:ff9b::/96, RFC 6052) and the deprecated compatible form.
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_COMPAT: Final = ipaddress.IPv6Network("::/96")
_HEX: Final = frozenset(string.hexdigits)
_OCTAL: Final = frozenset(string.octdigits)
_DECIMAL: Final = frozenset(string.digits)
# 2^32 in at most 32 hex digits or 40 decimal ones is plenty; longer is not a number
# anyone means and is refused before any conversion.
_MAX_PART: Final = 40


def parse_host(host: str) -> Address | str | None:
    """A URL or CONNECT host -> an address, a lower-case name (no trailing dot), or
    None when it is neither (a numeric-looking host that is not a valid IPv4 form,
    which browsers refuse too)."""
    text = host.lower()
    if text.startswith("["):
        if not text.endswith("]") or "%" in text:
            return None
        try:
            return _unwrap(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            return None
    if ":" in text:
        try:
            return _unwrap(ipaddress.IPv6Address(text))
        except ValueError:
            return None
    text = text.removesuffix(".")
    if not text:
        return None
    parts = text.split(".")
    if not _ends_in_number(parts[-1]):
        return text
    return _parse_ipv4(parts)


def _ends_in_number(last: str) -> bool:
    """WHATWG "ends in a number": the host is then IPv4 or invalid, never a name."""
    if last and all(c in _DECIMAL for c in last):
        return True
    return last.startswith("0x") and all(c in _HEX for c in last[2:])


def _parse_ipv4(parts: list[str]) -> Address | None:
    if len(parts) > 4:
        return None
    numbers = []
    for part in parts:
        n = _ipv4_number(part)
        if n is None:
            return None
        numbers.append(n)
    # inet_aton: a.b.c.d, a.b.c (c is 16 bits), a.b (b is 24 bits), a (32 bits).
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _ipv4_number(part: str) -> int | None:
    # Digits are checked against an ASCII set first: int() alone would take "+5",
    # "1_0", " 5" and non-ASCII digits.
    if not part or len(part) > _MAX_PART:
        return None
    if part.startswith("0x"):
        digits = part[2:]
        if not all(c in _HEX for c in digits):
            return None
        return int(digits, 16) if digits else 0
    if len(part) > 1 and part.startswith("0"):
        return int(part[1:], 8) if all(c in _OCTAL for c in part[1:]) else None
    return int(part) if all(c in _DECIMAL for c in part) else None


def _unwrap(addr: ipaddress.IPv6Address) -> Address:
    """The IPv4 address an IPv6 form reaches, if it embeds one; else itself."""
    mapped = addr.ipv4_mapped
    if mapped is not None:
        return mapped
    if addr in _NAT64 or (addr in _COMPAT and int(addr) > 1):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def special_kind(addr: Address) -> str | None:
    """Why `addr` is not a public destination ("loopback", "cloud metadata", ...), or
    None for a public address."""
    if isinstance(addr, ipaddress.IPv6Address):
        addr = _unwrap(addr)
    if addr in _METADATA:
        return "cloud metadata"
    table = _V4_SPECIAL if isinstance(addr, ipaddress.IPv4Address) else _V6_SPECIAL
    for net, kind in table:
        if addr in net:
            return kind
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    """`rule` names what decided, for the log and the client's 403 body: a rule as
    configured (`destinations[1] deny *.ads.example`) or the default's reason. It never
    contains a resolved address."""

    allowed: bool
    rule: str


class _Rule:
    __slots__ = ("action", "domain", "exact", "label", "network", "ports", "subdomains")

    def __init__(self, rule: DestinationRule, index: int) -> None:
        if rule.action not in ("allow", "deny"):
            raise ValueError(f"destinations[{index}]: action must be allow or deny")
        self.action = rule.action
        self.label = f"destinations[{index}] {rule.action} {rule.value}"
        self.network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
        self.ports: tuple[int, int] | None = None
        self.domain = ""
        self.exact = self.subdomains = False
        value = rule.value.lower()
        if value == "all":
            return
        if value.startswith("port:"):
            self.ports = _port_range(value[5:], index)
        elif value.startswith("*."):
            self.domain, self.subdomains = _domain(value[2:], index), True
        elif value.startswith("."):
            self.domain, self.exact, self.subdomains = _domain(value[1:], index), True, True
        else:
            self.network = _network(value)
            if self.network is None:
                self.domain, self.exact = _domain(value, index), True

    @property
    def names_address(self) -> bool:
        return self.network is not None

    def matches(self, name: str | None, addr: Address | None, port: int) -> bool | None:
        """True/False; None when it depends on an address not known yet."""
        if self.ports is not None:
            return self.ports[0] <= port <= self.ports[1]
        if self.network is not None:
            if addr is None:
                return None
            return addr.version == self.network.version and addr in self.network
        if self.domain:
            if name is None:
                return False
            if self.exact and name == self.domain:
                return True
            return self.subdomains and name.endswith("." + self.domain)
        return True  # all

    def __repr__(self) -> str:
        return f"_Rule({self.label})"


def _port_range(text: str, index: int) -> tuple[int, int]:
    low, dash, high = text.partition("-")
    bounds = (low, high if dash else low)
    if not all(b and len(b) <= 5 and all(c in _DECIMAL for c in b) for b in bounds):
        raise ValueError(f"destinations[{index}]: want port:N or port:N-M, not port:{text}")
    first, last = int(bounds[0]), int(bounds[1])
    if not 0 < first <= last < 65536:
        raise ValueError(f"destinations[{index}]: ports are 1-65535, low to high")
    return first, last


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        return None


_NAME_CHARS: Final = frozenset(string.ascii_lowercase + string.digits + "-.")


def _domain(text: str, index: int) -> str:
    name = text.removesuffix(".")
    if not name or not set(name) <= _NAME_CHARS or ".." in name or "*" in name:
        raise ValueError(
            f"destinations[{index}]: {text!r} is not a domain, *.domain, .domain, address,"
            " CIDR, port:N or all"
        )
    return name


def compile_destinations(rules: tuple[DestinationRule, ...]) -> tuple[_Rule, ...]:
    """Checked at load: ValueError names the rule (`destinations[2]: ...`)."""
    return tuple(_Rule(rule, i) for i, rule in enumerate(rules))


class DestinationPolicy:
    """The compiled rules plus the private-address default."""

    __slots__ = ("allow_private", "rules")

    def __init__(self, rules: tuple[DestinationRule, ...], allow_private: bool) -> None:
        self.rules = compile_destinations(rules)
        self.allow_private = allow_private

    def __repr__(self) -> str:
        return f"DestinationPolicy({len(self.rules)} rules, allow_private={self.allow_private})"

    def check_name(self, name: str, port: int) -> Decision | None:
        """Before resolving: a denial that needs no address (a domain or port rule that
        comes first), so a refused name is not even looked up. None: resolve, then
        `check_address` decides."""
        for rule in self.rules:
            hit = rule.matches(name, None, port)
            if hit is None:
                return None
            if hit:
                return Decision(False, rule.label) if rule.action == "deny" else None
        return None

    def check_address(self, name: str | None, addr: Address, port: int) -> Decision:
        """The decision for connecting to `addr` (resolved from `name`, or written as
        an address by the client when `name` is None)."""
        for rule in self.rules:
            if rule.matches(name, addr, port):
                if rule.action == "deny":
                    return Decision(False, rule.label)
                if rule.names_address:
                    return Decision(True, rule.label)
                return self._default(addr, rule.label)
        return self._default(addr, "default allow")

    def _default(self, addr: Address, allowed_by: str) -> Decision:
        kind = special_kind(addr)
        if kind is None:
            return Decision(True, allowed_by)
        if self.allow_private:
            return Decision(True, f"allow_private ({kind} address)")
        return Decision(False, f"default deny: {kind} address (allow_private is off)")
