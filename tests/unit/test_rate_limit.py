"""limit_req: the pure bucket arithmetic with a manual clock (nginx's integers), then
LimitReqFilter over process-local zones (several limits, dry run, 429 + Retry-After,
logging), then the config front ends (native keys, nginx directives, their errors)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from ferryman.config.native import load_native
from ferryman.config.nginx import load_nginx
from ferryman.config.schema import LimitReqSpec, LimitZoneSpec
from ferryman.errors import ConfigError
from ferryman.filters.base import Delay, Deny
from ferryman.filters.rate_limit import (
    NO_DELAY,
    Bucket,
    LimitReqFilter,
    Rule,
    delay_ms,
    lookup,
    rate_milli,
    retry_after,
    take,
)
from ferryman.filters.zone import LimitZone, open_zones


def rule(rate: float, burst: int = 0, *, nodelay: bool = False, delay: int = 0) -> Rule:
    return Rule.from_spec(LimitReqSpec("z", burst, nodelay, delay), rate)


class Clock:
    """One key's bucket driven by hand: `at(ms)` sends a request at that time and
    returns "reject" or its delay in ms, the way the filter combines the functions."""

    def __init__(self, r: Rule) -> None:
        self.rule = r
        self.bucket: Bucket | None = None

    def at(self, now_ms: int) -> str | int:
        busy, excess = lookup(self.rule, self.bucket, now_ms)
        if busy:
            return "reject"
        excess, self.bucket = take(self.rule, self.bucket, now_ms)
        return delay_ms(self.rule, excess)


# --- the arithmetic ----------------------------------------------------------------


def test_rates_are_thousandths_rounded_down_as_nginx() -> None:
    assert rate_milli(10.0) == 10000
    assert rate_milli(1.0) == 1000
    assert rate_milli(30 / 60) == 500
    assert rate_milli(1 / 60) == 16  # nginx: 1 * 1000 / 60
    assert rate_milli(7 / 60) == 116
    assert rate_milli(3 / 60) == 50  # not 49 from 0.05 * 1000 = 49.999...


def test_first_request_finds_an_empty_bucket() -> None:
    assert lookup(rule(1), None, 5000) == (False, 0)
    assert take(rule(1), None, 5000) == (0, (0, 5000))


def test_no_burst_one_request_per_interval() -> None:
    c = Clock(rule(1))  # 1r/s, burst 0: delay never matters (excess 0 only)
    assert c.at(0) == 0
    assert c.at(0) == "reject"  # excess 1.000 > 0
    assert c.at(999) == "reject"  # drained 0.999 of 1.000: excess 0.001
    assert c.at(1000) == 0
    assert c.at(1500) == "reject"
    assert c.at(2000) == 0


def test_a_rejected_request_leaves_the_bucket_alone() -> None:
    r = rule(1)
    _, bucket = take(r, None, 0)
    assert lookup(r, bucket, 10) == (True, 990)
    # the rejected request was not added: the next one at 1 s passes
    assert lookup(r, bucket, 1000) == (False, 0)


def test_burst_with_nodelay_passes_at_once_then_rejects() -> None:
    c = Clock(rule(10, 5, nodelay=True))
    assert [c.at(0) for _ in range(8)] == [0, 0, 0, 0, 0, 0, "reject", "reject"]
    assert c.bucket == (5000, 0)


def test_burst_without_nodelay_spaces_requests_at_the_rate() -> None:
    c = Clock(rule(10, 5))  # 10r/s: one every 100 ms
    assert [c.at(0) for _ in range(7)] == [0, 100, 200, 300, 400, 500, "reject"]


def test_delay_n_lets_the_first_n_excess_requests_through() -> None:
    c = Clock(rule(10, 5, delay=2))
    assert [c.at(0) for _ in range(7)] == [0, 0, 0, 100, 200, 300, "reject"]


def test_the_bucket_recovers_over_time() -> None:
    r = rule(10, 5, nodelay=True)
    c = Clock(r)
    for _ in range(6):
        c.at(0)
    assert c.bucket == (5000, 0)
    # 250 ms drain 2.500; this request adds 1.000
    assert lookup(r, c.bucket, 250) == (False, 3500)
    # after 600 ms the bucket is empty again, whatever it held
    assert lookup(r, c.bucket, 600) == (False, 0)
    assert [c.at(600) for _ in range(7)] == [0, 0, 0, 0, 0, 0, "reject"]


def test_per_minute_rates() -> None:
    c = Clock(rule(30 / 60))  # 30r/m: one every 2 s
    assert c.at(0) == 0
    assert c.at(1999) == "reject"  # drained 999 thousandths of 1000
    assert c.at(2000) == 0


def test_one_per_minute_keeps_nginxs_rounding() -> None:
    # nginx stores 1r/m as 16 thousandths per second: a request drains in 62.5 s.
    c = Clock(rule(1 / 60))
    assert c.at(0) == 0
    assert c.at(60_000) == "reject"  # 16 * 60 = 960 drained
    assert c.at(62_499) == "reject"
    assert c.at(62_500) == 0


def test_last_moves_only_when_time_passed() -> None:
    r = rule(10, 10, nodelay=True)
    _, bucket = take(r, None, 100)
    excess, bucket = take(r, bucket, 100)
    assert bucket == (1000, 100)
    excess, bucket = take(r, bucket, 150)  # 0.500 drained, 1.000 added
    assert (excess, bucket) == (1500, (1500, 150))


def test_a_clock_that_went_back() -> None:
    r = rule(1000, 100, nodelay=True)  # 1000 r/s: 1.000 per ms
    bucket = (5000, 100_000)
    # a little back: no drain; far back (over 60 s): counts as 1 ms
    assert lookup(r, bucket, 99_000) == (False, 6000)
    assert lookup(r, bucket, 10_000) == (False, 5000)


def test_delay_arithmetic() -> None:
    r = rule(10, 20)
    assert delay_ms(r, 0) == 0
    assert delay_ms(r, 1000) == 100
    assert delay_ms(r, 1500) == 150
    assert delay_ms(rule(10, 20, delay=3), 3000) == 0
    assert delay_ms(rule(10, 20, delay=3), 3500) == 50
    assert delay_ms(rule(10, 20, nodelay=True), 20_000) == 0
    assert rule(10, nodelay=True).delay == NO_DELAY


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert retry_after(rule(1), 1000) == 1
    assert retry_after(rule(10, 5), 6000) == 1  # 100 ms: at least 1 s
    assert retry_after(rule(1 / 60), 1000) == 63  # 62.5 s
    assert retry_after(rule(30 / 60, 2), 4000) == 4  # 2.000 over burst at 0.5 r/s


# --- the filter ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Head:
    request_line: bytes = b"GET / HTTP/1.1"
    host: bytes | None = b"example.test"
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(eq=False)
class _Exchange:
    """What the filter reads of an exchange: the variables of its key, and the head and
    client address for its log lines."""

    remote_addr: bytes = b"10.0.0.1"
    head: _Head = _Head()


def _zones(*specs: LimitZoneSpec) -> dict[str, LimitZone]:
    return open_zones(specs, "test.yaml")


def _filter(
    zones: dict[str, LimitZone],
    *limits: LimitReqSpec,
    status: int = 503,
    dry_run: bool = False,
) -> LimitReqFilter:
    built = [(s, zones[s.zone], zones[s.zone].compile_key(frozenset())) for s in limits]
    return LimitReqFilter(built, status, dry_run)


def test_filter_passes_delays_and_rejects() -> None:
    zones = _zones(LimitZoneSpec("one", "$remote_addr", "req", rate=10))
    f = _filter(zones, LimitReqSpec("one", burst=2))
    ex = _Exchange()
    assert f.check(ex, 100.0) is None
    assert f.check(ex, 100.0) == Delay(0.1)
    assert f.check(ex, 100.0) == Delay(0.2)
    verdict = f.check(ex, 100.0)
    assert isinstance(verdict, Deny) and verdict.status == 503 and verdict.headers == ()
    # another client has a bucket of its own
    assert f.check(_Exchange(remote_addr=b"10.0.0.2"), 100.0) is None


def test_binary_remote_addr_keys_by_the_client_address() -> None:
    zones = _zones(LimitZoneSpec("one", "$binary_remote_addr", "req", rate=1))
    f = _filter(zones, LimitReqSpec("one"))
    assert f.check(_Exchange(), 1.0) is None
    assert isinstance(f.check(_Exchange(), 1.0), Deny)
    assert f.check(_Exchange(remote_addr=b"10.0.0.9"), 1.0) is None


def test_429_carries_retry_after() -> None:
    zones = _zones(LimitZoneSpec("slow", "$remote_addr", "req", rate=1 / 60))
    f = _filter(zones, LimitReqSpec("slow"), status=429)
    assert f.check(_Exchange(), 10.0) is None
    verdict = f.check(_Exchange(), 10.0)
    assert isinstance(verdict, Deny)
    assert verdict.status == 429
    assert verdict.headers == ((b"Retry-After", b"63"),)


def test_an_empty_key_is_not_limited() -> None:
    zones = _zones(LimitZoneSpec("one", "$http_x_user", "req", rate=1))
    f = _filter(zones, LimitReqSpec("one"))
    assert all(f.check(_Exchange(), 1.0) is None for _ in range(5))
    assert zones["one"].table.entries() == 0


def test_several_limits_a_reject_of_any_rejects_and_charges_none() -> None:
    zones = _zones(
        LimitZoneSpec("loose", "$remote_addr", "req", rate=100),
        LimitZoneSpec("strict", "$remote_addr", "req", rate=1),
    )
    f = _filter(zones, LimitReqSpec("loose", burst=50, nodelay=True), LimitReqSpec("strict"))
    ex = _Exchange()
    assert f.check(ex, 0.0) is None
    loose, strict = zones["loose"].table, zones["strict"].table
    h = loose.hash(b"10.0.0.1")
    before = loose.peek(h)
    assert isinstance(f.check(ex, 0.0), Deny)
    # nginx: the request was looked up in "loose" first but, refused, not taken there
    assert loose.peek(h) == before
    assert strict.peek(strict.hash(b"10.0.0.1")) == (0, 0)


def test_several_limits_the_longest_delay_decides() -> None:
    zones = _zones(
        LimitZoneSpec("fast", "$remote_addr", "req", rate=10),
        LimitZoneSpec("slow", "$remote_addr", "req", rate=2),
    )
    f = _filter(zones, LimitReqSpec("slow", burst=5), LimitReqSpec("fast", burst=5))
    ex = _Exchange()
    assert f.check(ex, 0.0) is None
    # fast would wait 100 ms, slow (looked up first, taken after) 500 ms
    assert f.check(ex, 0.0) == Delay(0.5)
    assert f.check(ex, 0.0) == Delay(1.0)
    # both buckets took the requests
    assert zones["fast"].table.peek(zones["fast"].table.hash(b"10.0.0.1")) == (2000, 0)
    assert zones["slow"].table.peek(zones["slow"].table.hash(b"10.0.0.1")) == (2000, 0)


def test_dry_run_lets_everything_through_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    zones = _zones(LimitZoneSpec("one", "$remote_addr", "req", rate=1))
    f = _filter(zones, LimitReqSpec("one", burst=1), dry_run=True)
    caplog.set_level(logging.WARNING, logger="ferryman.filters.rate_limit")
    verdicts = [f.check(_Exchange(), 0.0) for _ in range(4)]
    assert verdicts == [None, None, None, None]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (
        logging.WARNING,
        'delaying request, dry run, excess: 1.000, by zone "one", key: "10.0.0.1", '
        'client: 10.0.0.1, request: "GET / HTTP/1.1", host: "example.test"',
    ) in messages
    rejects = [m for level, m in messages if level == logging.ERROR]
    assert len(rejects) == 2
    assert rejects[0].startswith('limiting requests, dry run, excess: 2.000 by zone "one"')


def test_rejections_log_at_error_with_zone_and_key(caplog: pytest.LogCaptureFixture) -> None:
    zones = _zones(LimitZoneSpec("one", "$remote_addr", "req", rate=1))
    f = _filter(zones, LimitReqSpec("one"))
    caplog.set_level(logging.INFO, logger="ferryman.filters.rate_limit")
    f.check(_Exchange(), 0.0)
    f.check(_Exchange(head=_Head(request_line=b'GET /"\x1b HTTP/1.1')), 0.0)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        'limiting requests, excess: 1.000 by zone "one", key: "10.0.0.1", client: 10.0.0.1, '
        'request: "GET /\\x22\\x1b HTTP/1.1", host: "example.test"'
    )


# --- configuration ---------------------------------------------------------------------

_NATIVE = """
limit_zones:
  - {name: one, kind: req, key: $remote_addr, rate: RATE}
  - {name: addr, kind: conn, key: $remote_addr, size: 64k}
servers:
  - listen: [127.0.0.1:8080]
    routes:
      - path: /
        ROUTE
"""


def _native(route: str, rate: str = "10r/s") -> None:
    load_native(_NATIVE.replace("RATE", rate).replace("ROUTE", route), "t.yaml")


def test_native_limits_load() -> None:
    text = _NATIVE.replace("RATE", "30r/m").replace(
        "ROUTE",
        "limit_req: [{zone: one, burst: 5, delay: 2}]\n        limit_req_status: 429\n"
        "        limit_conn: [{zone: addr, limit: 3}]\n        limit_dry_run: true",
    )
    config = load_native(text, "t.yaml")
    assert config.limit_zones[0] == LimitZoneSpec("one", "$remote_addr", "req", 0.5)
    assert config.limit_zones[1].size == 64 * 1024
    route = config.servers[0].routes[0]
    assert route.limit_req == (LimitReqSpec("one", 5, False, 2),)
    assert route.limit_req_status == 429
    assert route.limit_conn[0].limit == 3
    assert route.limit_dry_run


@pytest.mark.parametrize(
    ("route", "rate", "where", "reason"),
    [
        ("limit_req: [{zone: nope}]", "1r/s", "limit_req[0].zone", "not a req zone"),
        ("limit_req: [{zone: addr}]", "1r/s", "limit_req[0].zone", "not a req zone"),
        ("limit_conn: [{zone: one, limit: 1}]", "1r/s", "limit_conn[0].zone", "not a conn"),
        ("limit_req: [{zone: one, nodelay: true, delay: 1}]", "1r/s", "limit_req[0]", "exclude"),
        ("limit_req: [{zone: one}, {zone: one}]", "1r/s", "limit_req", "more than once"),
        ("limit_req_status: 302", "1r/s", "limit_req_status", "400 to 599"),
        ("limit_conn: [{zone: addr, limit: 0}]", "1r/s", "limit_conn[0].limit", "1 to 65535"),
        ("match: prefix", "10r/h", "limit_zones[0].rate", "10r/s or 30r/m"),
        ("match: prefix", "0r/s", "limit_zones[0].rate", "more than 0"),
    ],
)
def test_native_errors_name_the_key(route: str, rate: str, where: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        _native(route, rate)
    assert where in info.value.where
    assert reason in info.value.reason


def test_native_zone_needs_a_rate_and_a_size_of_32k() -> None:
    base = "servers: [{listen: [127.0.0.1:1], routes: [{path: /}]}]\n"
    with pytest.raises(ConfigError, match="needs a rate"):
        load_native("limit_zones: [{name: a, kind: req, key: $uri}]\n" + base, "t.yaml")
    with pytest.raises(ConfigError, match="too small"):
        load_native("limit_zones: [{name: a, kind: conn, key: $uri, size: 16k}]\n" + base, "t.yaml")


def _nginx(tmp_path: Path, http: str) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n" + http + "\n}\n")
    load_nginx(str(conf))


@pytest.mark.parametrize(
    ("http", "line", "reason"),
    [
        (
            "server { listen 8080;\nlocation / { limit_req zone=nope; return 204; } }",
            4,
            'zero size shared memory zone "nope"',
        ),
        (
            "limit_conn_zone $remote_addr zone=a:1m;\n"
            "server { listen 8080; location / { limit_req zone=a; return 204; } }",
            4,
            "already declared for a different use",
        ),
        (
            "limit_req_zone $remote_addr zone=a:1m rate=1r/s;\n"
            "limit_req_zone $uri zone=a:1m rate=1r/s;",
            4,
            'is already bound to key "$remote_addr"',
        ),
        ("limit_req_zone $uri zone=a:1m rate=5r/h;", 3, 'invalid rate "rate=5r/h"'),
        ("limit_req_zone $uri zone=a:8k rate=5r/s;", 3, "is too small"),
        ("limit_req zone=a burst=0;", 3, 'invalid burst value "burst=0"'),
        ("limit_req zone=a fast;", 3, 'invalid parameter "fast"'),
        ("limit_req burst=5;", 3, 'must have "zone" parameter'),
        (
            "limit_req_zone $uri zone=a:1m rate=5r/s;\nlimit_req zone=a; limit_req zone=a;",
            4,
            "is duplicate",
        ),
        ("limit_conn addr 0;", 3, "invalid number of connections"),
        ("limit_req_status 200;", 3, "between 400 and 599"),
        (
            "limit_req_zone $uri zone=r:1m rate=5r/s; limit_conn_zone $uri zone=c:1m;\n"
            "limit_req_dry_run on;\n"
            "server { listen 8080; location / { limit_req zone=r; limit_conn c 1; return 204; } }",
            4,
            "one dry-run switch",
        ),
    ],
)
def test_nginx_errors_name_file_and_line(tmp_path: Path, http: str, line: int, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        _nginx(tmp_path, http)
    assert info.value.where.endswith(f"nginx.conf:{line}")
    assert reason in info.value.reason
