"""filters/access.py: the compiled rule set, without sockets or a clock.

Table-driven: each case is (rules, request facts, wall clock) -> (allowed, label). The
wall clock is a fixed instant passed in, so time windows and time zones are exact.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ferryman.app import check_config
from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
from ferryman.config.nginx import load_nginx
from ferryman.config.schema import AccessRule, Config
from ferryman.errors import ConfigError
from ferryman.filters.access import AccessFilter, compile_rules
from ferryman.filters.base import Deny

UTC = ZoneInfo("UTC")


def at(text: str, zone: str = "UTC") -> float:
    """The wall clock at local time `text` ("2026-11-27 23:30", a Friday) in `zone`."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(zone)).timestamp()


# 2026-11-23 is a Monday; 2026-11-27 a Friday; 2026-11-28 a Saturday.
MON_NOON = at("2026-11-23 12:00")
FRI_NOON = at("2026-11-27 12:00")
FRI_2330 = at("2026-11-27 23:30")
SAT_0130 = at("2026-11-28 01:30")
SAT_0700 = at("2026-11-28 07:00")
SUN_0130 = at("2026-11-29 01:30")


def deny(*addresses: str, **conditions: Any) -> AccessRule:
    return AccessRule("deny", addresses or ("all",), **conditions)


def allow(*addresses: str, **conditions: Any) -> AccessRule:
    return AccessRule("allow", addresses or ("all",), **conditions)


def decide(
    rules: tuple[AccessRule, ...],
    addr: str = "127.0.0.1",
    ua: str | None = None,
    method: str = "GET",
    path: str = "/",
    now: float = MON_NOON,
) -> tuple[bool, str]:
    rule_set = compile_rules(rules, "test.access")
    return rule_set.decide(
        addr.encode(), ua.encode() if ua is not None else None, method.encode(), path.encode(), now
    )


# (id, rules, request keyword arguments, expected (allowed, label))
CASES: list[tuple[str, tuple[AccessRule, ...], dict[str, Any], tuple[bool, str]]] = [
    # --- no rules / no match: allowed (nginx)
    ("no rules", (), {}, (True, "no rule matched")),
    ("no match", (deny("10.0.0.1"),), {}, (True, "no rule matched")),
    # --- IPv4 addresses and CIDRs
    ("v4 exact", (deny("127.0.0.1"),), {}, (False, "access[0]")),
    ("v4 other", (deny("127.0.0.1"),), {"addr": "127.0.0.2"}, (True, "no rule matched")),
    ("v4 cidr in", (deny("10.0.0.0/8"),), {"addr": "10.200.3.4"}, (False, "access[0]")),
    ("v4 cidr out", (deny("10.0.0.0/8"),), {"addr": "11.0.0.1"}, (True, "no rule matched")),
    ("v4 /32", (deny("127.0.0.2/32"),), {"addr": "127.0.0.2"}, (False, "access[0]")),
    ("v4 /0", (deny("0.0.0.0/0"),), {"addr": "203.0.113.9"}, (False, "access[0]")),
    # nginx masks the low bits of 127.0.0.9/24 (with a warning).
    ("v4 low bits", (deny("127.0.0.9/24"),), {"addr": "127.0.0.200"}, (False, "access[0]")),
    ("v4 list", (deny("10.0.0.1", "127.0.0.2"),), {"addr": "127.0.0.2"}, (False, "access[0]")),
    ("v4 rule misses v6", (deny("0.0.0.0/0"),), {"addr": "::1"}, (True, "no rule matched")),
    # --- IPv6
    ("v6 exact", (deny("::1"),), {"addr": "::1"}, (False, "access[0]")),
    ("v6 cidr in", (deny("2001:db8::/32"),), {"addr": "2001:db8:1::5"}, (False, "access[0]")),
    ("v6 cidr out", (deny("2001:db8::/32"),), {"addr": "2001:db9::5"}, (True, "no rule matched")),
    ("v6 zone id", (deny("fe80::/10"),), {"addr": "fe80::1%eth0"}, (False, "access[0]")),
    ("v6 rule misses v4", (deny("::/0"),), {"addr": "127.0.0.1"}, (True, "no rule matched")),
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; nginx matches them as IPv4.
    ("v4-mapped", (deny("10.0.0.0/8"),), {"addr": "::ffff:10.1.2.3"}, (False, "access[0]")),
    # --- all, and non-IP clients
    ("all v4", (deny("all"),), {}, (False, "access[0]")),
    ("all v6", (deny("all"),), {"addr": "::1"}, (False, "access[0]")),
    ("all unix", (deny("all"),), {"addr": "-"}, (False, "access[0]")),
    ("unix not in cidr", (deny("0.0.0.0/0"),), {"addr": "-"}, (True, "no rule matched")),
    # --- order: the first match wins
    (
        "allow before deny",
        (allow("127.0.0.1"), deny("all")),
        {},
        (True, "access[0]"),
    ),
    (
        "deny falls through to allow",
        (deny("10.0.0.0/8"), allow("127.0.0.0/8"), deny("all")),
        {"addr": "127.0.0.2"},
        (True, "access[1]"),
    ),
    (
        "catch-all deny",
        (allow("127.0.0.1"), deny("all")),
        {"addr": "127.0.0.2"},
        (False, "access[1]"),
    ),
    ("named rule", (deny("all", name="lockdown"),), {}, (False, "lockdown")),
    # --- User-Agent: =exact, substring, ~regex, ~*regex
    ("ua exact", (deny(user_agents=("=curl/8.0",)),), {"ua": "curl/8.0"}, (False, "access[0]")),
    (
        "ua exact only",
        (deny(user_agents=("=curl",)),),
        {"ua": "curl/8.0"},
        (True, "no rule matched"),
    ),
    ("ua substring", (deny(user_agents=("Bot",)),), {"ua": "AhrefsBot/7"}, (False, "access[0]")),
    (
        "ua substring case",
        (deny(user_agents=("bot",)),),
        {"ua": "AhrefsBot"},
        (True, "no rule matched"),
    ),
    ("ua regex", (deny(user_agents=("~^sqlmap/",)),), {"ua": "sqlmap/1.7"}, (False, "access[0]")),
    (
        "ua regex miss",
        (deny(user_agents=("~^sqlmap/",)),),
        {"ua": "x sqlmap/1"},
        (True, "no rule matched"),
    ),
    ("ua regex icase", (deny(user_agents=("~*bot",)),), {"ua": "GoogleBOT"}, (False, "access[0]")),
    (
        "ua regex case",
        (deny(user_agents=("~bot",)),),
        {"ua": "GoogleBOT"},
        (True, "no rule matched"),
    ),
    ("ua any of", (deny(user_agents=("=a", "zgrab")),), {"ua": "zgrab/0.x"}, (False, "access[0]")),
    # A missing User-Agent is "" ($http_user_agent): `=` alone or ~^$ catch it.
    ("ua missing exact empty", (deny(user_agents=("=",)),), {"ua": None}, (False, "access[0]")),
    ("ua missing regex", (deny(user_agents=("~^$",)),), {"ua": None}, (False, "access[0]")),
    (
        "ua missing substring",
        (deny(user_agents=("curl",)),),
        {"ua": None},
        (True, "no rule matched"),
    ),
    # --- methods: exact, case-sensitive
    ("method in", (deny(methods=("POST", "PUT")),), {"method": "PUT"}, (False, "access[0]")),
    ("method out", (deny(methods=("POST",)),), {"method": "GET"}, (True, "no rule matched")),
    ("method case", (deny(methods=("POST",)),), {"method": "post"}, (True, "no rule matched")),
    (
        "HEAD is not GET",
        (allow(methods=("GET",)), deny()),
        {"method": "HEAD"},
        (False, "access[1]"),
    ),
    # --- paths: prefix or ~regex on $uri
    ("path prefix", (deny(paths=("/admin",)),), {"path": "/admin/users"}, (False, "access[0]")),
    ("path prefix out", (deny(paths=("/admin",)),), {"path": "/public"}, (True, "no rule matched")),
    ("path regex", (deny(paths=(r"~\.php$",)),), {"path": "/x/index.php"}, (False, "access[0]")),
    (
        "path regex out",
        (deny(paths=(r"~\.php$",)),),
        {"path": "/x.php/y"},
        (True, "no rule matched"),
    ),
    ("path regex icase", (deny(paths=(r"~*\.PHP$",)),), {"path": "/a.php"}, (False, "access[0]")),
    ("path any of", (deny(paths=("/a", "/b")),), {"path": "/b/c"}, (False, "access[0]")),
    ("path utf-8", (deny(paths=("/café",)),), {"path": "/café/x"}, (False, "access[0]")),
    # --- days (in UTC unless said)
    ("day in", (deny(days=("mon",)),), {"now": MON_NOON}, (False, "access[0]")),
    ("day out", (deny(days=("tue",)),), {"now": MON_NOON}, (True, "no rule matched")),
    ("day range", (deny(days=("mon-fri",)),), {"now": FRI_NOON}, (False, "access[0]")),
    ("day range out", (deny(days=("mon-fri",)),), {"now": SAT_0700}, (True, "no rule matched")),
    ("day wrapping range", (deny(days=("fri-mon",)),), {"now": SAT_0700}, (False, "access[0]")),
    ("day case", (deny(days=("SAT",)),), {"now": SAT_0700}, (False, "access[0]")),
    # --- time windows
    ("window in", (deny(times=("09:00-17:00",)),), {"now": MON_NOON}, (False, "access[0]")),
    ("window out", (deny(times=("13:00-17:00",)),), {"now": MON_NOON}, (True, "no rule matched")),
    (
        "window start included",
        (deny(times=("12:00-13:00",)),),
        {"now": MON_NOON},
        (False, "access[0]"),
    ),
    (
        "window end excluded",
        (deny(times=("11:00-12:00",)),),
        {"now": MON_NOON},
        (True, "no rule matched"),
    ),
    ("window to 24:00", (deny(times=("23:00-24:00",)),), {"now": FRI_2330}, (False, "access[0]")),
    (
        "second window",
        (deny(times=("01:00-02:00", "11:00-13:00")),),
        {"now": MON_NOON},
        (False, "access[0]"),
    ),
    # Crossing midnight: 22:00-06:00 holds late evening and early morning...
    ("midnight before", (deny(times=("22:00-06:00",)),), {"now": FRI_2330}, (False, "access[0]")),
    ("midnight after", (deny(times=("22:00-06:00",)),), {"now": SAT_0130}, (False, "access[0]")),
    (
        "midnight outside",
        (deny(times=("22:00-06:00",)),),
        {"now": SAT_0700},
        (True, "no rule matched"),
    ),
    (
        "midnight noon",
        (deny(times=("22:00-06:00",)),),
        {"now": MON_NOON},
        (True, "no rule matched"),
    ),
    # ...and belongs to the day it starts on: fri 22:00-06:00 is Friday night.
    (
        "midnight day of start",
        (deny(days=("fri",), times=("22:00-06:00",)),),
        {"now": FRI_2330},
        (False, "access[0]"),
    ),
    (
        "midnight tail is the start day's",
        (deny(days=("fri",), times=("22:00-06:00",)),),
        {"now": SAT_0130},
        (False, "access[0]"),
    ),
    (
        "midnight tail of a day not listed",
        (deny(days=("fri",), times=("22:00-06:00",)),),
        {"now": SUN_0130},
        (True, "no rule matched"),
    ),
    (
        "midnight head on a day not listed",
        (deny(days=("sat",), times=("22:00-06:00",)),),
        {"now": SAT_0130},
        (True, "no rule matched"),
    ),
    # --- time zones: the same instant, local time where the rule says
    (
        "zone east",  # Fri 23:30 UTC is Sat 00:30 in Paris (CET, UTC+1 in November)
        (deny(days=("sat",), timezone="Europe/Paris"),),
        {"now": FRI_2330},
        (False, "access[0]"),
    ),
    (
        "zone east window",
        (deny(times=("00:00-01:00",), timezone="Europe/Paris"),),
        {"now": FRI_2330},
        (False, "access[0]"),
    ),
    (
        "zone west",  # Mon 12:00 UTC is Mon 07:00 in New York (EST, UTC-5)
        (deny(times=("09:00-17:00",), timezone="America/New_York"),),
        {"now": MON_NOON},
        (True, "no rule matched"),
    ),
    (
        "zone summer time",  # 2026-07-01 12:00 UTC is 14:00 in Paris (CEST)
        (deny(times=("14:00-15:00",), timezone="Europe/Paris"),),
        {"now": at("2026-07-01 12:00")},
        (False, "access[0]"),
    ),
    (
        "zone local instant",
        (deny(times=("09:00-09:30",), timezone="Asia/Tokyo"),),
        {"now": at("2026-11-23 09:10", "Asia/Tokyo")},
        (False, "access[0]"),
    ),
    # --- combined: every condition must hold
    (
        "combined all hold",
        (
            deny(
                "10.0.0.0/8",
                user_agents=("~*curl",),
                methods=("POST",),
                paths=("/api",),
                days=("mon-fri",),
                times=("09:00-17:00",),
            ),
        ),
        {"addr": "10.0.0.5", "ua": "curl/8", "method": "POST", "path": "/api/x"},
        (False, "access[0]"),
    ),
    *(
        (
            f"combined fails on {what}",
            (
                deny(
                    "10.0.0.0/8",
                    user_agents=("~*curl",),
                    methods=("POST",),
                    paths=("/api",),
                    days=("mon-fri",),
                    times=("09:00-17:00",),
                ),
            ),
            {"addr": "10.0.0.5", "ua": "curl/8", "method": "POST", "path": "/api/x", **change},
            (True, "no rule matched"),
        )
        for what, change in (
            ("address", {"addr": "11.0.0.5"}),
            ("user agent", {"ua": "wget"}),
            ("method", {"method": "GET"}),
            ("path", {"path": "/web"}),
            ("day", {"now": at("2026-11-28 12:00")}),
            ("time", {"now": at("2026-11-23 18:00")}),
        )
    ),
    (
        "office hours only",
        (allow("127.0.0.0/8", days=("mon-fri",), times=("08:00-18:00",)), deny()),
        {"now": SAT_0700},
        (False, "access[1]"),
    ),
]


@pytest.mark.parametrize(
    ("rules", "request_facts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide(
    rules: tuple[AccessRule, ...], request_facts: dict[str, Any], expected: tuple[bool, str]
) -> None:
    assert decide(rules, **request_facts) == expected


def test_case_ids_are_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


# ---- compile errors: a ConfigError naming the rule and field ----

BAD: list[tuple[AccessRule, str, str]] = [
    (deny("10.0.0.300"), "test.access[0].deny[0]", "is not an IP address"),
    (allow("10.0.0.0/33"), "test.access[0].allow[0]", "is not an IP address"),
    (allow("localhost"), "test.access[0].allow[0]", "is not an IP address"),
    (deny(user_agents=("~(",)), "test.access[0].user_agent[0]", "compilation failed"),
    (deny(user_agents=("",)), "test.access[0].user_agent[0]", "empty substring"),
    (deny(methods=("GE T",)), "test.access[0].methods[0]", "not a method"),
    (deny(paths=("admin",)), "test.access[0].paths[0]", "neither a /prefix"),
    (deny(paths=("~[",)), "test.access[0].paths[0]", "compilation failed"),
    (deny(days=("monday",)), "test.access[0].days[0]", "is not a day"),
    (deny(days=("mon-xyz",)), "test.access[0].days[0]", "is not a day"),
    (deny(times=("9:00-17:00",)), "test.access[0].times[0]", "HH:MM-HH:MM"),
    (deny(times=("09:00-25:00",)), "test.access[0].times[0]", "not a time of day"),
    (deny(times=("09:60-10:00",)), "test.access[0].times[0]", "not a time of day"),
    (deny(times=("24:00-01:00",)), "test.access[0].times[0]", "not a time of day"),
    (deny(times=("10:00-10:00",)), "test.access[0].times[0]", "empty window"),
    (deny(times=("09:00-10:00",), timezone="Mars/Olympus"), "test.access[0].timezone", "time zone"),
    (AccessRule("reject", ("all",)), "test.access[0].action", "neither allow nor deny"),
]


@pytest.mark.parametrize(("rule", "where", "reason"), BAD, ids=[b[1] + " " + b[2] for b in BAD])
def test_bad_values_name_their_key_path(rule: AccessRule, where: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_rules((rule,), "test.access")
    assert info.value.where == where
    assert reason in info.value.reason


def test_bad_value_in_a_later_rule_names_its_position() -> None:
    with pytest.raises(ConfigError) as info:
        compile_rules((allow("127.0.0.1"), deny("nope")), "x.access")
    assert info.value.where == "x.access[1].deny[0]"


def test_time_zone_is_only_loaded_for_time_conditions() -> None:
    # The zone of a rule without days or times is never used, so it is not checked.
    rules = compile_rules((deny("10.0.0.0/8", timezone="Mars/Olympus"),), "x")
    assert rules.decide(b"10.0.0.1", None, b"GET", b"/", 0.0) == (False, "access[0]")


# ---- the filter around it: facts from the exchange, the wall clock passed in ----


class _Head:
    def __init__(self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.path = path
        self.headers = headers

    def header(self, lname: bytes) -> bytes | None:
        # RequestHead.header: the first value of the field, by lower-case name.
        return next((v for n, v in self.headers if n.lower() == lname), None)


class _Exchange:
    def __init__(
        self,
        addr: bytes = b"127.0.0.1",
        method: bytes = b"GET",
        path: bytes = b"/",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.remote_addr = addr
        self.head = _Head(method, path, headers or [])
        self.uri = self.head.path


def _filter(*rules: AccessRule, now: float = MON_NOON, **kwargs: Any) -> AccessFilter:
    return AccessFilter(compile_rules(rules, "t"), wall=lambda: now, **kwargs)


def test_filter_allows_with_none_and_denies_with_the_rule_named() -> None:
    f = _filter(allow("127.0.0.1"), deny(name="everyone-else"))
    assert f.check(_Exchange(b"127.0.0.1"), 0.0) is None
    verdict = f.check(_Exchange(b"127.0.0.2"), 0.0)
    assert verdict == Deny(403, "access forbidden by rule everyone-else", b"")
    assert not f.holds


def test_filter_status_and_body() -> None:
    f = _filter(deny(), status=451, body=b"go away\n")
    assert f.check(_Exchange(), 0.0) == Deny(
        451, "access forbidden by rule access[0]", b"go away\n"
    )


def test_filter_reads_user_agent_case_insensitively() -> None:
    f = _filter(deny(user_agents=("~*bot",)))
    assert f.check(_Exchange(headers=[(b"uSeR-AgEnT", b"SomeBot")]), 0.0) is not None
    assert f.check(_Exchange(headers=[(b"User-Agent", b"Firefox")]), 0.0) is None


def test_filter_matches_paths_on_the_normalised_uri() -> None:
    f = _filter(deny(paths=("/admin",)))
    for raw in (b"/admin", b"/%61dmin/x", b"//admin", b"/x/../admin", b"/./admin/"):
        assert f.check(_Exchange(path=raw), 0.0) is not None, raw
    assert f.check(_Exchange(path=b"/public/%2e%2e"), 0.0) is None


def test_filter_does_not_decode_an_already_normalised_uri_twice() -> None:
    # The exchange normalised /%2561dmin to /%61dmin (a literal percent sign): that is
    # not /admin, and decoding it again would make it so.
    ex = _Exchange(path=b"/%2561dmin")
    ex.uri = b"/%61dmin"
    assert _filter(deny(paths=("/admin",))).check(ex, 0.0) is None


def test_filter_refuses_a_path_that_does_not_normalise() -> None:
    verdict = _filter(deny(paths=("/admin",))).check(_Exchange(path=b"/a/%zz"), 0.0)
    assert isinstance(verdict, Deny) and verdict.status == 400


def test_filter_passes_its_wall_clock() -> None:
    rules = (deny(times=("22:00-06:00",)),)
    assert _filter(*rules, now=SAT_0130).check(_Exchange(), 0.0) is not None
    assert _filter(*rules, now=MON_NOON).check(_Exchange(), 0.0) is None


# ---- configuration: native YAML keys, inheritance, errors with key paths ----

NATIVE = """\
upstreams:
  app: {servers: ["127.0.0.1:9"]}
servers:
  - listen: "127.0.0.1:8080"
    access:
      - deny: 10.0.0.0/8
      - allow: [127.0.0.0/8, "::1"]
        name: loopback
      - deny: all
    deny_status: 404
    routes:
      - path: /
        upstream: app
      - path: /open/
        upstream: app
        access: []
      - path: /api/
        upstream: app
        deny_body: "no\\n"
        access:
          - deny: all
            user_agent: "~*bot"
            methods: [POST, PUT]
            paths: [/api/admin, "~\\\\.php$"]
            days: mon-fri
            times: ["22:00-06:00"]
            timezone: Europe/Paris
        routes:
          - {path: /api/inner/, upstream: app}
"""


def _native(text: str) -> Config:
    return load_native(text, "demo.yaml")


def _native_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _native(text)
    return info.value


def test_native_access_keys_and_inheritance() -> None:
    root, open_, api = _native(NATIVE).servers[0].routes
    server_rules = (
        AccessRule("deny", ("10.0.0.0/8",)),
        AccessRule("allow", ("127.0.0.0/8", "::1"), name="loopback"),
        AccessRule("deny", ("all",)),
    )
    # A route with no rules of its own takes the server's (nginx's inheritance) ...
    assert root.access == server_rules and root.deny_status == 404
    # ... `access: []` says "none here" ...
    assert open_.access == () and open_.deny_status == 404
    # ... a route's own list replaces the server's whole, and nested routes inherit it.
    bots = AccessRule(
        "deny",
        ("all",),
        user_agents=("~*bot",),
        methods=("POST", "PUT"),
        paths=("/api/admin", r"~\.php$"),
        days=("mon-fri",),
        times=("22:00-06:00",),
        timezone="Europe/Paris",
    )
    assert api.access == (bots,) and api.deny_body == "no\n"
    (inner,) = api.routes
    assert inner.access == (bots,) and inner.deny_body == "no\n" and inner.deny_status == 404


def test_native_access_round_trips_through_dump() -> None:
    config = _native(NATIVE)
    assert load_native(dump_native(config), "demo.yaml") == config


@pytest.mark.parametrize(
    ("rule", "where", "reason"),
    [
        ("{deny: all, allow: all}", "access[0]", "one of allow or deny"),
        ("{user_agent: x}", "access[0]", "one of allow or deny"),
        ("{deny: all, colour: red}", "access[0].colour", "unknown key"),
        ("{deny: 5}", "access[0].deny", "must be a string"),
        ("{deny: []}", "access[0].deny", "must not be empty"),
        ("{deny: all, methods: [GET, 1]}", "access[0].methods[1]", "must be a string"),
        ("{deny: all, name: 'two words'}", "access[0].name", "invalid value"),
        ("deny", "access[0]", "must be a mapping"),
    ],
)
def test_native_access_shape_errors(rule: str, where: str, reason: str) -> None:
    text = f"servers:\n  - listen: 8080\n    routes:\n      - path: /\n        access: [{rule}]\n"
    error = _native_error(text)
    assert error.where == f"demo.yaml: servers[0].routes[0].{where}"
    assert reason in error.reason


def test_native_deny_status_range() -> None:
    text = "servers:\n  - listen: 8080\n    routes:\n      - {path: /, deny_status: 200}\n"
    assert _native_error(text).where == "demo.yaml: servers[0].routes[0].deny_status"


@pytest.mark.parametrize(
    ("rule", "where"),
    [
        ("{deny: 10.0.0.300}", "access[0].deny[0]"),
        ("{allow: [127.0.0.1, nope]}", "access[0].allow[1]"),
        ("{deny: all, times: '9-17'}", "access[0].times[0]"),
        ("{deny: all, days: [mon, funday]}", "access[0].days[1]"),
        ("{deny: all, days: mon, timezone: Nowhere/City}", "access[0].timezone"),
        ("{deny: all, user_agent: '~('}", "access[0].user_agent[0]"),
        ("{deny: all, paths: [relative]}", "access[0].paths[0]"),
    ],
)
def test_values_are_checked_when_the_route_is_built(rule: str, where: str) -> None:
    # `ferryman check` and `run` build the routes: the error names the same key path.
    text = f"servers:\n  - listen: 8080\n    routes:\n      - path: /\n        access: [{rule}]\n"
    config = _native(text)
    with pytest.raises(ConfigError) as info:
        check_config(config, resolve=False)
    assert info.value.where == f"demo.yaml: servers[0].routes[0].{where}"


# ---- nginx allow / deny ----

NGINX = """\
events {{}}
http {{
    server {{
        listen 8080;
{body}
        location / {{ proxy_pass http://127.0.0.1:9000; }}
    }}
}}
"""


def _nginx(tmp_path: Path, body: str) -> Config:
    path = tmp_path / "nginx.conf"
    path.write_text(NGINX.format(body=body))
    return load_nginx(str(path))


def test_nginx_allow_deny_in_order(tmp_path: Path) -> None:
    config = _nginx(tmp_path, "allow 127.0.0.1;\ndeny 127.0.0.0/8;\nallow ::1;\ndeny all;")
    assert config.servers[0].routes[0].access == (
        AccessRule("allow", ("127.0.0.1",)),
        AccessRule("deny", ("127.0.0.0/8",)),
        AccessRule("allow", ("::1",)),
        AccessRule("deny", ("all",)),
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("deny 10.0.0.300;", 'invalid parameter "10.0.0.300"'),
        ("allow localhost;", 'invalid parameter "localhost"'),
        ("deny 10.0.0.0/40;", 'invalid parameter "10.0.0.0/40"'),
        ("deny unix:;", "not supported"),
        ("deny;", "invalid number of arguments"),
    ],
)
def test_nginx_bad_addresses_name_file_and_line(tmp_path: Path, body: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        _nginx(tmp_path, body)
    assert info.value.where == f"{tmp_path / 'nginx.conf'}:5"
    assert reason in info.value.reason


def test_nginx_low_bits_warning(tmp_path: Path) -> None:
    config = _nginx(tmp_path, "deny 10.1.2.3/8;")
    assert config.warnings == (
        f"{tmp_path / 'nginx.conf'}:5: low address bits of 10.1.2.3/8 are meaningless",
    )
    assert _nginx(tmp_path, "deny 10.0.0.0/8;\ndeny 2001:DB8::/32;").warnings == ()
