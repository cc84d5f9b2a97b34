"""Access rules (nginx allow/deny, extended): an ordered list of rules, each with
conditions on the client address, User-Agent, method, path and wall-clock time; the
first rule whose conditions all hold decides, and when none does the request is
allowed (ngx_http_access_module: "if no rule matched, access is allowed").

`RuleSet` is the compiled, pure part: `decide(addr, user_agent, method, path,
now_wall)` reads no clock and no socket, so every condition type is tested with plain
values (tests/unit/test_access_rules.py). `AccessFilter` is the thin `RequestFilter`
around it: it reads the exchange's variables and the wall clock, and turns a deny into
a `Deny` naming the rule that decided.

Conditions, within one rule all must hold; within one condition any listed value may:

    addresses    IPs and CIDRs, v4 or v6, "all". An IPv4-mapped IPv6 client
                 (::ffff:10.0.0.1, a dual-stack listener) is matched as IPv4, as nginx
                 does; a client with no IP address (unix socket) matches only "all".
    user_agents  "=exact", "~regex", "~*regex" (case-insensitive), else a case-sensitive
                 substring; a missing User-Agent is the empty string (nginx's
                 $http_user_agent)
    methods      exact, case-sensitive (RFC 9110 9.1): HEAD is not GET
    paths        "~regex" / "~*regex", else a prefix of nginx's $uri (decoded and
                 normalised, so /%61dmin and //admin/./ are /admin)
    days, times  in `timezone` (IANA, via zoneinfo): days are mon..sun or ranges
                 ("mon-fri", "fri-mon"); times are "HH:MM-HH:MM" windows, end excluded
                 ("24:00" may end one). A window whose end is before its start crosses
                 midnight and belongs to the day it starts on: days [fri] with
                 22:00-06:00 holds from Friday 22:00 to Saturday 06:00.

Knows nothing about sockets, the event loop or configuration files; the error log line
is the exchange's (`respond_deny`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any, Final

from ferryman.config.schema import AccessRule
from ferryman.errors import ConfigError, ProtocolError
from ferryman.filters.base import Deny, RequestFilter, Verdict
from ferryman.http.uri import normalize_path
from ferryman.routing.locations import compile_regex

__all__ = ["AccessFilter", "CompiledRule", "RuleSet", "compile_rules"]

# date.weekday() order.
DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW: Final = re.compile(r"([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})")
# RFC 9110 5.6.2: a method is a token.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NO_MATCH: Final = "no rule matched"
_KNOWN_ADDRESSES: Final = 1024  # parsed client addresses a rule set remembers
# ::ffff:a.b.c.d (RFC 4291 2.5.5.2)
_V4_MAPPED: Final = bytes(10) + b"\xff\xff"

# (version, network as int, mask as int); version 0 is "all".
_Network = tuple[int, int, int]


class CompiledRule:
    """One AccessRule ready to match; a condition left empty always holds."""

    __slots__ = (
        "allow",
        "days",
        "label",
        "methods",
        "networks",
        "path_prefixes",
        "path_regexes",
        "ua_exact",
        "ua_regexes",
        "ua_substrings",
        "windows",
        "zone",
    )

    def __init__(self, rule: AccessRule, label: str) -> None:
        if rule.action not in ("allow", "deny"):
            raise _BadValue("action", f"{rule.action!r} is neither allow nor deny")
        self.allow = rule.action == "allow"
        self.label = label
        self.networks = _networks(rule.addresses, rule.action)
        self.ua_exact, self.ua_substrings, self.ua_regexes = _user_agents(rule.user_agents)
        self.methods = _methods(rule.methods)
        self.path_prefixes, self.path_regexes = _paths(rule.paths)
        self.days = parse_days(rule.days)
        self.windows = _windows(rule.times)
        self.zone = _zone(rule.timezone) if self.days or self.windows else None

    def __repr__(self) -> str:
        return f"CompiledRule({self.label} {'allow' if self.allow else 'deny'})"

    @property
    def has_user_agent(self) -> bool:
        return bool(self.ua_exact or self.ua_substrings or self.ua_regexes)

    @property
    def has_path(self) -> bool:
        return bool(self.path_prefixes or self.path_regexes)

    def matches(
        self,
        ip: tuple[int, int] | None,
        user_agent: str,
        method: bytes,
        path: bytes,
        clock: _Clock,
    ) -> bool:
        # Cheapest first; every condition must hold.
        if self.methods and method not in self.methods:
            return False
        if self.networks is not None and not _in_networks(ip, self.networks):
            return False
        if self.has_path and not self._path_matches(path):
            return False
        if self.has_user_agent and not self._user_agent_matches(user_agent):
            return False
        return self.zone is None or self._time_matches(*clock.local(self.zone))

    def _path_matches(self, path: bytes) -> bool:
        if any(path.startswith(prefix) for prefix in self.path_prefixes):
            return True
        # As location regexes: $uri as latin-1, one character per byte.
        text = path.decode("latin-1")
        return any(rx.search(text) for rx in self.path_regexes)

    def _user_agent_matches(self, user_agent: str) -> bool:
        return (
            user_agent in self.ua_exact
            or any(part in user_agent for part in self.ua_substrings)
            or any(rx.search(user_agent) for rx in self.ua_regexes)
        )

    def _time_matches(self, weekday: int, minute: int) -> bool:
        days = self.days
        if not self.windows:
            return weekday in days
        yesterday = (weekday - 1) % 7
        for start, end in self.windows:
            if start < end:
                if start <= minute < end and (not days or weekday in days):
                    return True
            elif minute >= start:
                if not days or weekday in days:
                    return True
            elif minute < end and (not days or yesterday in days):
                # The after-midnight part of a window that started yesterday.
                return True
        return False


class _Clock:
    """The local (weekday, minute of day) of one instant, per zone, computed on first
    use: most rule sets have no time condition and never pay for it."""

    __slots__ = ("_seen", "now")

    def __init__(self, now: float) -> None:
        self.now = now
        self._seen: dict[tzinfo, tuple[int, int]] = {}

    def local(self, zone: tzinfo) -> tuple[int, int]:
        seen = self._seen.get(zone)
        if seen is None:
            t = datetime.fromtimestamp(self.now, zone)
            seen = self._seen[zone] = (t.weekday(), t.hour * 60 + t.minute)
        return seen


class RuleSet:
    """Compiled rules, in order. Pure: the caller passes every fact, time included."""

    __slots__ = ("_addresses", "needs_path", "needs_user_agent", "rules")

    def __init__(self, rules: tuple[CompiledRule, ...]) -> None:
        self.rules = rules
        self.needs_user_agent = any(r.has_user_agent for r in rules)
        self.needs_path = any(r.has_path for r in rules)
        # Client addresses parsed before: a keep-alive connection's requests, and a
        # client's connections, ask again and again. Forgotten all at once when full,
        # so a flood of distinct addresses bounds it.
        self._addresses: dict[bytes, tuple[int, int] | None] = {}

    def __repr__(self) -> str:
        return f"RuleSet({', '.join(repr(r) for r in self.rules)})"

    def decide(
        self,
        addr: bytes,
        user_agent: bytes | None,
        method: bytes,
        path: bytes,
        now_wall: float,
    ) -> tuple[bool, str]:
        """(allowed, the label of the rule that decided); allowed when none matched."""
        addresses = self._addresses
        if addr in addresses:
            ip = addresses[addr]
        else:
            ip = _parse_address(addr)
            if len(addresses) >= _KNOWN_ADDRESSES:
                addresses.clear()
            addresses[addr] = ip
        ua = user_agent.decode("latin-1") if user_agent is not None else ""
        clock = _Clock(now_wall)
        for rule in self.rules:
            if rule.matches(ip, ua, method, path, clock):
                return rule.allow, rule.label
        return True, _NO_MATCH


def compile_rules(rules: tuple[AccessRule, ...], where: str) -> RuleSet:
    """AccessRules -> a RuleSet; a bad value is a ConfigError naming its key path
    (`...routes[0].access[2].times[1]`)."""
    compiled = []
    for i, rule in enumerate(rules):
        at = f"{where}[{i}]"
        try:
            compiled.append(CompiledRule(rule, rule.name or f"access[{i}]"))
        except _BadValue as exc:
            raise ConfigError(f"{at}.{exc.field}", exc.reason) from None
    return RuleSet(tuple(compiled))


class AccessFilter(RequestFilter):
    """The access phase's rule check (nginx's access handler): a deny answers
    `status` with `body` (empty: the standard page)."""

    def __init__(
        self,
        rules: RuleSet,
        status: int = 403,
        body: bytes = b"",
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.status = status
        self.body = body
        self._wall = wall

    def __repr__(self) -> str:
        return f"AccessFilter({len(self.rules.rules)} rules, status={self.status})"

    def check(self, exchange: Any, now: float) -> Verdict:
        head = exchange.head
        rules = self.rules
        user_agent = head.header(b"user-agent") if rules.needs_user_agent else None
        path = b""
        if rules.needs_path:
            try:
                path = _uri(exchange)
            except ProtocolError as exc:
                return Deny(400, f"bad request path: {exc.reason}")
        allowed, label = rules.decide(
            exchange.remote_addr, user_agent, head.method, path, self._wall()
        )
        if allowed:
            return None
        return Deny(self.status, f"access forbidden by rule {label}", self.body)


# ---- run-time helpers ----


def _uri(exchange: Any) -> bytes:
    """nginx's $uri. The exchange normalises the path only when it searches locations
    (a server with one `/` route skips that), and normalising twice would decode `%25`
    twice; a uri still identical to the request's path is either not normalised yet or
    needed no change, and normalising it is right in both cases."""
    uri: bytes = exchange.uri
    head = exchange.head
    return normalize_path(head.path) if uri is head.path else uri


def _parse_address(addr: bytes) -> tuple[int, int] | None:
    """(4 or 6, the address as an int), IPv4-mapped IPv6 as IPv4; None if not an IP.
    inet_pton, not ipaddress.ip_address: the same answers (leading zeros and spaces
    refused alike) for a tenth of the time, on every request of a route with rules."""
    text = addr.decode("latin-1").partition("%")[0]  # a link-local zone id is no part
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        return None
    if packed[:12] == _V4_MAPPED:
        return 4, int.from_bytes(packed[12:], "big")
    return 6, int.from_bytes(packed, "big")


def _in_networks(ip: tuple[int, int] | None, networks: tuple[_Network, ...]) -> bool:
    for version, network, mask in networks:
        if version == 0:
            return True  # "all"
        if ip is not None and ip[0] == version and ip[1] & mask == network:
            return True
    return False


# ---- compiling: each raises _BadValue naming the field ----


class _BadValue(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _networks(addresses: tuple[str, ...], action: str) -> tuple[_Network, ...] | None:
    """None: no address condition. nginx masks the low bits of `10.0.0.1/8` (with a
    warning); so does this (strict=False). Errors are named by the native key that
    holds the addresses (`allow` / `deny`)."""
    if not addresses:
        return None
    out: list[_Network] = []
    for i, text in enumerate(addresses):
        if text == "all":
            out.append((0, 0, 0))
            continue
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise _BadValue(
                f"{action}[{i}]", f"{text!r} is not an IP address, a CIDR or all"
            ) from None
        version = net.version
        out.append((version, int(net.network_address), int(net.netmask)))
    return tuple(out)


def _user_agents(
    patterns: tuple[str, ...],
) -> tuple[frozenset[str], tuple[str, ...], tuple[re.Pattern[str], ...]]:
    exact: set[str] = set()
    substrings: list[str] = []
    regexes: list[re.Pattern[str]] = []
    for i, text in enumerate(patterns):
        if text.startswith("="):
            exact.add(text[1:])
        elif text.startswith("~"):
            caseless = text.startswith("~*")
            regexes.append(_regex(text[2:] if caseless else text[1:], caseless, f"user_agent[{i}]"))
        elif text:
            substrings.append(text)
        else:
            raise _BadValue(f"user_agent[{i}]", "an empty substring matches everything")
    return frozenset(exact), tuple(substrings), tuple(regexes)


def _methods(methods: tuple[str, ...]) -> frozenset[bytes]:
    for i, method in enumerate(methods):
        if not _TOKEN.fullmatch(method):
            raise _BadValue(f"methods[{i}]", f"{method!r} is not a method name")
    return frozenset(m.encode("ascii") for m in methods)


def _paths(paths: tuple[str, ...]) -> tuple[tuple[bytes, ...], tuple[re.Pattern[str], ...]]:
    prefixes: list[bytes] = []
    regexes: list[re.Pattern[str]] = []
    for i, text in enumerate(paths):
        if text.startswith("~"):
            caseless = text.startswith("~*")
            regexes.append(_regex(text[2:] if caseless else text[1:], caseless, f"paths[{i}]"))
        elif text.startswith("/"):
            # $uri is bytes (UTF-8 as the client sent it, percent-decoded).
            prefixes.append(text.encode("utf-8"))
        else:
            raise _BadValue(f"paths[{i}]", f"{text!r} is neither a /prefix nor a ~regex")
    return tuple(prefixes), tuple(regexes)


def _regex(pattern: str, caseless: bool, field: str) -> re.Pattern[str]:
    try:
        return compile_regex(pattern, caseless=caseless)
    except ValueError as exc:
        raise _BadValue(field, str(exc)) from None


def parse_days(days: tuple[str, ...]) -> frozenset[int]:
    """mon..sun (any case) and ranges `mon-fri`, `fri-mon` (wrapping) -> weekdays."""
    out: set[int] = set()
    for i, text in enumerate(days):
        first, dash, last = text.lower().partition("-")
        if first not in DAY_NAMES or (dash and last not in DAY_NAMES):
            raise _BadValue(
                f"days[{i}]", f"{text!r} is not a day ({', '.join(DAY_NAMES)}) or a range of them"
            )
        start = DAY_NAMES.index(first)
        end = DAY_NAMES.index(last) if dash else start
        out.update((start + k) % 7 for k in range((end - start) % 7 + 1))
    return frozenset(out)


def _windows(times: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    out = []
    for i, text in enumerate(times):
        m = _WINDOW.fullmatch(text)
        if m is None:
            raise _BadValue(f"times[{i}]", f"{text!r} is not HH:MM-HH:MM")
        # Two ASCII digits each, checked by the pattern: int() sees nothing else.
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
            raise _BadValue(f"times[{i}]", f"{text!r} is not a time of day (00:00 to 24:00)")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end:
            raise _BadValue(f"times[{i}]", f"{text!r} is an empty window")
        out.append((start, end))
    return tuple(out)


def _zone(name: str) -> tzinfo:
    # Imported here: only rules with days or hours need zones, and the zoneinfo package
    # costs every worker almost 1 MiB whether used or not.
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _BadValue("timezone", f"{name!r} is not a known time zone") from None
