"""RFC 9111 shared-cache rules (cache/policy.py), table-driven, with a manual clock."""

from __future__ import annotations

import math

import pytest

from ferryman.cache.entry import EntryMeta
from ferryman.cache.policy import (
    Decision,
    cache_status,
    conditional_headers,
    evaluate,
    format_http_date,
    freshness_lifetime,
    initial_age,
    invalidates,
    lookup_method,
    may_serve_stale_on_error,
    merge_not_modified,
    new_meta,
    not_modified_matches,
    parse_cache_control,
    parse_delta_seconds,
    parse_http_date,
    refresh_meta,
    request_rules,
    storable,
    upstream_cache_status,
    variant_key,
    vary_fields,
)
from ferryman.clock import ManualClock

H = list[tuple[bytes, bytes]]

# Sun, 06 Nov 1994 08:49:37 GMT: the example date of RFC 9110 5.6.7.
T0 = 784111777.0
DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
DAY = 86400.0


def d(t: float) -> bytes:
    return format_http_date(t)


def cc(value: str) -> H:
    return [(b"Cache-Control", value.encode())]


# -- delta-seconds and Cache-Control ---------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"0", 0),
        (b"60", 60),
        (b"2147483647", 2147483647),
        (b"2147483648", 2**31),
        (b"99999999999999999999", 2**31),  # 1.2.2: overflow is 2^31
        (b"", None),
        (b"+5", None),
        (b"-1", None),
        (b"1_0", None),
        (b" 5", None),
        (b"5 ", None),
        (b"1.5", None),
        ("\u0665".encode(), None),  # an Arabic-Indic digit: int() would take it
        (b"0x10", None),
    ],
)
def test_delta_seconds(raw: bytes, expected: int | None) -> None:
    assert parse_delta_seconds(raw) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (cc("max-age=60"), {"max_age": 60.0}),
        (cc("MAX-AGE=60"), {"max_age": 60.0}),  # directive names are case-insensitive
        (cc('max-age="60"'), {"max_age": 60.0}),  # quoted form accepted (5.2)
        (cc("  max-age = 60 ,public"), {"max_age": 60.0, "public": True}),
        (cc("max-age=abc"), {"max_age": 0.0}),  # 4.2.1: invalid freshness is stale
        (cc("max-age=-1"), {"max_age": 0.0}),
        (cc("max-age"), {"max_age": 0.0}),
        (cc("max-age=10, max-age=99"), {"max_age": 10.0}),  # first occurrence wins
        (cc("s-maxage=5"), {"s_maxage": 5.0}),
        (cc("no-store"), {"no_store": True}),
        (cc("no-cache"), {"no_cache": True}),
        (
            cc('no-cache="Set-Cookie, X-Foo"'),
            {"no_cache": True, "no_cache_fields": (b"set-cookie", b"x-foo")},
        ),
        (cc('private="Set-Cookie"'), {"private": True, "private_fields": (b"set-cookie",)}),
        (
            cc("must-revalidate, proxy-revalidate"),
            {"must_revalidate": True, "proxy_revalidate": True},
        ),
        (
            cc("stale-while-revalidate=30, stale-if-error=600"),
            {"stale_while_revalidate": 30.0, "stale_if_error": 600.0},
        ),
        (cc("stale-while-revalidate=x"), {"stale_while_revalidate": None}),
        (cc("max-stale"), {"max_stale": math.inf}),
        (cc("max-stale=20"), {"max_stale": 20.0}),
        (
            cc("min-fresh=5, only-if-cached, immutable"),
            {"min_fresh": 5.0, "only_if_cached": True, "immutable": True},
        ),
        (
            [(b"cache-control", b"public"), (b"Cache-Control", b"max-age=7")],
            {"public": True, "max_age": 7.0},
        ),
        (cc('foo="a,b", max-age=3'), {"max_age": 3.0}),  # a comma inside quotes is not a separator
        (cc('max-age="5" junk, public'), {"max_age": 5.0, "public": True}),
        (cc('no-cache="unterminated, max-age=5'), {"no_cache": True, "max_age": None}),
        (cc(",,, ,"), {}),
        (cc("=5, no-store"), {"no_store": True}),
    ],
)
def test_parse_cache_control(headers: H, expected: dict[str, object]) -> None:
    parsed = parse_cache_control(headers)
    for attr, value in expected.items():
        assert getattr(parsed, attr) == value, attr
    defaults = parse_cache_control([])
    untouched = {"no_store", "private", "public", "no_cache"} - set(expected)
    for attr in untouched:
        assert getattr(parsed, attr) == getattr(defaults, attr), attr


def test_cache_control_never_raises_on_junk() -> None:
    for junk in (b'"', b"\\", b'a="\\', b"\xff\xfe=\x00", b"=" * 50, b'max-age="', b"=,=,="):
        parse_cache_control([(b"Cache-Control", junk)])


# -- HTTP-date (RFC 9110 5.6.7) --------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        b"Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        b"Sun Nov  6 08:49:37 1994",  # obsolete asctime
        b" Sun, 06 Nov 1994 08:49:37 GMT\t",  # OWS around the value
    ],
)
def test_http_date_forms(raw: bytes) -> None:
    assert parse_http_date(raw) == T0


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"0",
        b"-1",
        b"Thu, 01 Jan 1970",
        b"sun, 06 Nov 1994 08:49:37 GMT",  # day names are case-sensitive
        b"Sun, 06 nov 1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994 08:49:37 gmt",
        b"Sun, 06 Nov 1994 08:49:37 UTC",
        b"Sun, 06 Nov 1994 08:49:37 +0000",
        b"Sun, 6 Nov 1994 08:49:37 GMT",
        b"Sun, 06 Nov 94 08:49:37 GMT",
        b"Sun, 31 Feb 1994 08:49:37 GMT",  # no such day
        b"Sun, 29 Feb 1995 08:49:37 GMT",  # not a leap year
        b"Sun, 06 Nov 1994 24:00:00 GMT",
        b"Sun, 06 Nov 1994 08:60:00 GMT",
        b"Sun, 06 Nov 1994 08:49:61 GMT",
        b"Sun, 00 Nov 1994 08:49:37 GMT",
        b"Sun, 06 Nov 0000 08:49:37 GMT",
        b"Sun, 06 Nov 1994 08:49:37 GMT junk",
        b"Sun,  06 Nov 1994 08:49:37 GMT",
        "Sun, \u06606 Nov 1994 08:49:37 GMT".encode(),
        b"Sunday, 06-Nov-1994 08:49:37 GMT",
        b"Sun Nov 6 08:49:37 1994",
        b"Sun, 06 Nov 1994 08:49:37 GMT\r\nX: y",
    ],
)
def test_http_date_junk(raw: bytes) -> None:
    assert parse_http_date(raw) is None


def test_http_date_leap_day_and_second() -> None:
    assert parse_http_date(b"Thu, 29 Feb 1996 00:00:00 GMT") == 825552000.0
    # A leap second is a valid second (60): it reads as the next minute's first second.
    assert parse_http_date(b"Sat, 31 Dec 2016 23:59:60 GMT") == 1483228800.0


def test_rfc850_two_digit_year_is_never_more_than_50_years_ahead() -> None:
    now = 1767225600.0  # 2026-01-01
    assert parse_http_date(b"Monday, 01-Jan-76 00:00:00 GMT", now=now) == parse_http_date(
        b"Thu, 01 Jan 2076 00:00:00 GMT"
    )
    assert parse_http_date(b"Friday, 01-Jan-77 00:00:00 GMT", now=now) == parse_http_date(
        b"Sat, 01 Jan 1977 00:00:00 GMT"
    )


def test_format_http_date_round_trips() -> None:
    assert format_http_date(T0) == DATE
    for t in (0.0, 951782400.0, 4102444799.0):
        assert parse_http_date(format_http_date(t)) == t


# -- Freshness lifetime (4.2.1) and heuristics (4.2.2) ---------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        # Precedence: s-maxage > max-age > Expires > heuristic.
        (200, [*cc("s-maxage=10, max-age=20"), (b"Expires", d(T0 + 30))], 10.0),
        (200, [*cc("max-age=20"), (b"Expires", d(T0 + 30))], 20.0),
        (200, [(b"Date", DATE), (b"Expires", d(T0 + 30))], 30.0),
        (200, [(b"Date", DATE), (b"Expires", d(T0 - 30))], 0.0),  # already expired
        (200, [(b"Date", DATE), (b"Expires", b"0")], 0.0),  # 5.3: invalid means expired
        (200, [(b"Date", DATE), (b"Expires", b"garbage"), (b"Last-Modified", d(T0 - DAY))], 0.0),
        (200, [(b"Date", DATE), (b"Expires", b"Sunday, 06-Nov-94 08:50:37 GMT")], 60.0),
        (200, [*cc("max-age=bogus"), (b"Expires", d(T0 + 30))], 0.0),  # invalid: stale
        (200, [*cc("no-cache, max-age=60")], 0.0),  # no-cache: always revalidate
        (200, [*cc("max-age=99999999999")], float(2**31)),
        # Heuristic: 10% of Date - Last-Modified for heuristically cacheable statuses.
        (200, [(b"Date", DATE), (b"Last-Modified", d(T0 - 5 * DAY))], 0.5 * DAY),
        (404, [(b"Date", DATE), (b"Last-Modified", d(T0 - 5 * DAY))], 0.5 * DAY),
        (200, [(b"Date", DATE), (b"Last-Modified", d(T0 - 100 * DAY))], DAY),  # capped
        (200, [(b"Date", DATE), (b"Last-Modified", d(T0 + 10))], 0.0),  # in the future
        (200, [(b"Date", DATE), (b"Last-Modified", b"yesterday")], 0.0),
        (302, [(b"Date", DATE), (b"Last-Modified", d(T0 - 5 * DAY))], 0.0),  # not heuristic
        (500, [(b"Date", DATE), (b"Last-Modified", d(T0 - 5 * DAY))], 0.0),
        (302, [*cc("public"), (b"Date", DATE), (b"Last-Modified", d(T0 - 5 * DAY))], 0.5 * DAY),
        (200, [(b"Date", DATE)], 0.0),
        (200, [], 0.0),
    ],
)
def test_freshness_lifetime(status: int, headers: H, expected: float) -> None:
    assert freshness_lifetime(status, headers) == expected


def test_expires_without_date_uses_response_time() -> None:
    headers = [(b"Expires", d(T0 + 45))]
    assert freshness_lifetime(200, headers, response_time=T0) == 45.0
    assert freshness_lifetime(200, headers) == 0.0  # no reference at all: expired
    # An invalid Date is no better than none.
    bad = [(b"Date", b"tomorrow"), *headers]
    assert freshness_lifetime(200, bad, response_time=T0) == 45.0


def test_proxy_cache_valid_applies_only_without_explicit_freshness() -> None:
    valid = (((200, 301), 600.0), ((404,), 60.0), ((), 5.0))
    assert freshness_lifetime(200, [], valid=valid) == 600.0
    assert freshness_lifetime(404, [], valid=valid) == 60.0
    assert freshness_lifetime(503, [], valid=valid) == 5.0  # `any`
    assert freshness_lifetime(200, cc("max-age=7"), valid=valid) == 7.0
    assert freshness_lifetime(200, [(b"Date", DATE), (b"Expires", d(T0 + 3))], valid=valid) == 3.0
    # proxy_cache_valid beats the heuristic.
    lm = [(b"Date", DATE), (b"Last-Modified", d(T0 - 50 * DAY))]
    assert freshness_lifetime(200, lm, valid=valid) == 600.0


def test_heuristic_fraction_is_configurable() -> None:
    headers = [(b"Date", DATE), (b"Last-Modified", d(T0 - 1000))]
    assert freshness_lifetime(200, headers, heuristic_fraction=0.5) == 500.0


# -- Age (4.2.3) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "request_time", "response_time", "expected"),
    [
        ([], T0, T0, 0.0),
        ([(b"Date", DATE)], T0 - 2, T0 + 3, 5.0),  # max(apparent 3, age 0 + delay 5)
        ([(b"Date", d(T0 - 10))], T0, T0, 10.0),  # apparent age from Date
        ([(b"Date", d(T0 + 10))], T0, T0, 0.0),  # a Date in the future: apparent age 0
        ([(b"Age", b"100")], T0 - 1, T0, 101.0),  # corrected age = Age + response delay
        ([(b"Age", b"100"), (b"Date", d(T0 - 500))], T0, T0, 500.0),
        ([(b"Age", b"junk")], T0, T0, 0.0),
        ([(b"Age", b"-5")], T0, T0, 0.0),
        ([(b"Age", b" 7 ")], T0, T0, 7.0),
        ([(b"Age", b"99999999999999")], T0, T0, float(2**31)),
        ([(b"Age", b"3"), (b"Age", b"9")], T0, T0, 3.0),  # the first
    ],
)
def test_initial_age(
    headers: H, request_time: float, response_time: float, expected: float
) -> None:
    assert initial_age(headers, request_time, response_time) == expected


def test_age_and_freshness_advance_with_the_clock() -> None:
    clock = ManualClock(T0)
    headers = [(b"Date", d(T0 - 10)), *cc("max-age=60"), (b"Age", b"5")]
    meta = new_meta("k", 200, [], headers, clock.now() - 1, clock.now())
    assert meta.initial_age == 10.0  # max(apparent 10, 5 + 1)
    assert meta.lifetime == 60.0
    assert meta.age(clock.now()) == 10.0
    assert meta.is_fresh(clock.now())
    clock.advance(49.9)
    assert meta.is_fresh(clock.now())
    assert meta.ttl(clock.now()) == pytest.approx(0.1)
    clock.advance(0.1)
    assert not meta.is_fresh(clock.now())
    clock.advance(10)
    assert meta.ttl(clock.now()) == pytest.approx(-10.0)


# -- Storing (3, 3.5) -------------------------------------------------------------------

FRESH: H = cc("max-age=60")


@pytest.mark.parametrize(
    ("method", "status", "req", "resp", "expected"),
    [
        ("GET", 200, [], FRESH, None),
        (b"GET", 200, [], FRESH, None),
        ("HEAD", 200, [], FRESH, "method"),  # no body: HEAD is answered from GET instead
        ("POST", 200, [], FRESH, "method"),
        ("GET", 206, [], FRESH, "status"),
        ("GET", 304, [], FRESH, "status"),
        ("GET", 101, [], FRESH, "status"),
        ("GET", 200, [], cc("no-store, max-age=60"), "no-store"),
        ("GET", 200, cc("no-store"), FRESH, "no-store"),  # 5.2.1.5 request no-store
        ("GET", 200, [], cc("private, max-age=60"), "private"),
        ("GET", 200, [], cc('private="X-User", max-age=60'), "private"),
        ("GET", 200, [], [*FRESH, (b"Vary", b"Accept-Encoding, *")], "vary-star"),
        ("GET", 200, [], [*FRESH, (b"Vary", b"Accept-Encoding")], None),
        ("GET", 200, [], [*FRESH, (b"Set-Cookie", b"a=b")], "set-cookie"),
        # 3.5: Authorization only with public, s-maxage or must-revalidate.
        ("GET", 200, [(b"Authorization", b"Basic eA==")], FRESH, "authorization"),
        ("GET", 200, [(b"Authorization", b"x")], cc("public, max-age=60"), None),
        ("GET", 200, [(b"Authorization", b"x")], cc("s-maxage=60"), None),
        ("GET", 200, [(b"Authorization", b"x")], cc("must-revalidate, max-age=60"), None),
        (
            "GET",
            200,
            [(b"Authorization", b"x")],
            cc("proxy-revalidate, max-age=60"),
            "authorization",
        ),
        # Something to reuse it by: freshness, a validator or a stale-if-error window.
        ("GET", 200, [], [], "no-freshness"),
        ("GET", 200, [], [(b"ETag", b'"v1"')], None),  # lifetime 0, revalidated each time
        ("GET", 200, [], [(b"Last-Modified", d(T0 - DAY))], None),
        ("GET", 200, [], cc("no-cache"), "no-freshness"),
        ("GET", 200, [], [*cc("no-cache"), (b"ETag", b'"v1"')], None),
        ("GET", 200, [], cc("max-age=0"), "no-freshness"),
        ("GET", 200, [], [(b"Date", DATE), (b"Expires", b"0")], "no-freshness"),
        # Statuses not heuristically cacheable need explicit freshness or `public`.
        ("GET", 302, [], [(b"ETag", b'"v1"')], "status"),
        ("GET", 302, [], FRESH, None),
        ("GET", 500, [], FRESH, None),
        ("GET", 302, [], [*cc("public"), (b"ETag", b'"v1"')], None),
        ("GET", 404, [], [(b"ETag", b'"v1"')], None),
    ],
)
def test_storable(method: str | bytes, status: int, req: H, resp: H, expected: str | None) -> None:
    assert storable(method, status, req, resp) == expected


def test_set_cookie_stored_only_when_configured() -> None:
    resp = [*FRESH, (b"Set-Cookie", b"session=1")]
    assert storable("GET", 200, [], resp) == "set-cookie"
    assert storable("GET", 200, [], resp, store_set_cookie=True) is None


def test_proxy_cache_valid_makes_statuses_storable() -> None:
    assert storable("GET", 302, [], []) == "status"
    assert storable("GET", 302, [], [], valid=(((302,), 60.0),)) is None
    assert storable("GET", 500, [], [], valid=(((), 10.0),)) is None
    # `proxy_cache_valid 404 0`: do not cache (nginx), even though 404 is heuristic.
    assert storable("GET", 404, [], [(b"ETag", b'"x"')], valid=(((404,), 0.0),)) == "status"
    # Explicit directives still rule.
    assert storable("GET", 200, [], cc("no-store"), valid=(((), 60.0),)) == "no-store"


def test_configured_methods() -> None:
    assert storable("POST", 200, [], FRESH, methods=("GET", "POST")) is None
    assert storable("HEAD", 200, [], FRESH, methods=("GET", "HEAD")) == "method"
    assert lookup_method(b"HEAD") == "GET"
    assert lookup_method("GET") == "GET"
    assert lookup_method("POST") is None
    assert lookup_method("POST", ("GET", "HEAD", "POST")) == "POST"
    assert lookup_method("HEAD", ("GET",)) is None


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [("POST", 200, True), ("DELETE", 204, True), ("PUT", 302, True), ("POST", 500, False),
     ("POST", 404, False), ("GET", 200, False), ("HEAD", 200, False), ("OPTIONS", 200, False)],
)  # fmt: skip
def test_unsafe_methods_invalidate(method: str, status: int, expected: bool) -> None:
    assert invalidates(method, status) is expected


def test_new_meta_records_validators_windows_and_revalidation() -> None:
    resp = [
        (b"Date", DATE),
        (b"ETag", b'"abc"'),
        (b"Last-Modified", d(T0 - DAY)),
        *cc("max-age=30, stale-while-revalidate=10, stale-if-error=300"),
        (b"Vary", b"accept-encoding, Accept-Language"),
    ]
    req = [(b"Accept-Encoding", b"GZIP"), (b"Accept-Language", b"fr")]
    meta = new_meta("k", 200, req, resp, T0, T0, body_size=5)
    assert (meta.etag, meta.last_modified) == (b'"abc"', d(T0 - DAY))
    assert (meta.lifetime, meta.swr, meta.sie, meta.must_revalidate) == (30.0, 10.0, 300.0, False)
    assert meta.vary == (b"accept-encoding", b"accept-language")
    assert meta.variant == variant_key(meta.vary, req)
    assert meta.body_size == 5
    for directive in ("must-revalidate", "proxy-revalidate", "s-maxage=5", "no-cache"):
        assert new_meta("k", 200, [], cc(directive), T0, T0).must_revalidate, directive


# -- Vary (4.1) -------------------------------------------------------------------------


def test_vary_fields() -> None:
    assert vary_fields([]) == ()
    assert vary_fields([(b"Vary", b"")]) == ()
    assert vary_fields(
        [(b"Vary", b"Accept-Encoding, User-Agent"), (b"vary", b"accept-encoding")]
    ) == (
        b"accept-encoding",
        b"user-agent",
    )
    assert vary_fields([(b"Vary", b"accept-encoding"), (b"Vary", b" * ")]) is None


def test_variant_key_equivalent_requests_match() -> None:
    fields = (b"accept-encoding", b"accept-language")
    a = [(b"Accept-Encoding", b"gzip, br"), (b"Accept-Language", b"en")]
    b = [(b"accept-encoding", b"GZIP,br "), (b"ACCEPT-LANGUAGE", b"EN")]
    c = [(b"Accept-Encoding", b"gzip"), (b"Accept-Encoding", b"br"), (b"Accept-Language", b"en")]
    assert variant_key(fields, a) == variant_key(fields, b) == variant_key(fields, c)
    assert variant_key(fields, a) != variant_key(fields, [(b"Accept-Encoding", b"gzip")])
    # Absent differs from empty; unrelated fields do not matter.
    absent = variant_key((b"x-mode",), [])
    assert absent != variant_key((b"x-mode",), [(b"X-Mode", b"")])
    assert absent == variant_key((b"x-mode",), [(b"Other", b"1")])
    # Values of fields not known to be case-insensitive keep their case.
    assert variant_key((b"x-mode",), [(b"X-Mode", b"A")]) != variant_key(
        (b"x-mode",), [(b"X-Mode", b"a")]
    )
    assert variant_key((), a) == b""


# -- Requests (5.2.1) and the decision ------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "attrs"),
    [
        (
            [],
            {"must_revalidate": False, "may_store": True, "authorization": False},
        ),
        ([(b"Host", b"a")], {"conditional": False}),
        ([(b"If-None-Match", b'"a"')], {"conditional": True}),
        ([(b"IF-MODIFIED-SINCE", b"Sun, 06 Nov 1994 08:49:37 GMT")], {"conditional": True}),
        ([(b"If-Match", b'"a"'), (b"If-Range", b'"a"')], {"conditional": False}),
        (cc("no-cache"), {"must_revalidate": True}),
        (cc("max-age=0"), {"must_revalidate": True, "max_age": 0.0}),
        (cc("max-age=30"), {"must_revalidate": False, "max_age": 30.0}),
        ([(b"Pragma", b"no-cache")], {"must_revalidate": True}),
        ([(b"Pragma", b"no-cache"), *cc("max-age=30")], {"must_revalidate": False}),  # 5.4
        ([(b"Pragma", b"x, NO-CACHE")], {"must_revalidate": True}),
        (cc("no-store"), {"may_store": False}),
        (cc("only-if-cached"), {"only_if_cached": True}),
        (cc("max-stale"), {"max_stale": math.inf}),
        (cc("min-fresh=10"), {"min_fresh": 10.0}),
        ([(b"authorization", b"Bearer x")], {"authorization": True}),
        # Field names in any case, Cache-Control after Pragma, both in one pass.
        (
            [(b"PRAGMA", b"no-cache"), (b"CACHE-CONTROL", b"no-store")],
            {"may_store": False, "must_revalidate": False},
        ),
        (
            [(b"Host", b"a"), (b"Authorization", b"x"), (b"pragma", b"no-cache")],
            {"authorization": True, "must_revalidate": True},
        ),
    ],
)
def test_request_rules(headers: H, attrs: dict[str, object]) -> None:
    rules = request_rules(b"GET", headers)
    assert rules.method == "GET"
    for attr, value in attrs.items():
        assert getattr(rules, attr) == value, attr


def _meta(lifetime: float, *, swr: float | None = None, sie: float | None = None,
          must_revalidate: bool = False, age: float = 0.0) -> EntryMeta:  # fmt: skip
    return EntryMeta(
        key="k", variant=b"", status=200, headers=[], request_time=T0, response_time=T0,
        stored_at=T0, lifetime=lifetime, initial_age=age, swr=swr, sie=sie,
        must_revalidate=must_revalidate,
    )  # fmt: skip


F, SWR, REV = Decision.FRESH, Decision.STALE_WHILE_REVALIDATE, Decision.MUST_REVALIDATE


@pytest.mark.parametrize(
    ("meta", "req", "elapsed", "expected"),
    [
        (_meta(60), [], 0, F),
        (_meta(60), [], 59.9, F),
        (_meta(60), [], 60, REV),
        (_meta(60, age=50), [], 10, REV),  # initial age counts
        (_meta(60), cc("no-cache"), 0, REV),
        (_meta(60), [(b"Pragma", b"no-cache")], 0, REV),
        (_meta(60), cc("max-age=0"), 0, REV),
        (_meta(60), cc("max-age=10"), 10, F),
        (_meta(60), cc("max-age=10"), 11, REV),
        (_meta(60), cc("min-fresh=20"), 39, F),
        (_meta(60), cc("min-fresh=20"), 41, REV),
        (_meta(60), cc("max-stale=30"), 85, F),  # the client accepts staleness
        (_meta(60), cc("max-stale=30"), 95, REV),
        (_meta(60), cc("max-stale"), 10**6, F),
        (_meta(60, must_revalidate=True), cc("max-stale"), 61, REV),  # 5.2.2.2 wins
        (_meta(60, swr=30), [], 70, SWR),
        (_meta(60, swr=30), [], 90, SWR),
        (_meta(60, swr=30), [], 91, REV),
        (_meta(60, swr=30, must_revalidate=True), [], 70, REV),
        (_meta(60, swr=30), cc("no-cache"), 70, REV),
        (_meta(0), [], 0, REV),
    ],
)
def test_evaluate(meta: EntryMeta, req: H, elapsed: float, expected: Decision) -> None:
    clock = ManualClock(T0)
    clock.advance(elapsed)
    assert evaluate(meta, request_rules("GET", req), clock.now()) is expected


@pytest.mark.parametrize(
    ("meta", "elapsed", "configured", "expected"),
    [
        (_meta(60), 30, False, True),  # fresh: no question
        (_meta(60), 61, False, False),  # stale, no window
        (_meta(60, sie=100), 160, False, True),
        (_meta(60, sie=100), 161, False, False),
        (_meta(60), 10**6, True, True),  # proxy_cache_use_stale error: no window
        (_meta(60, sie=100, must_revalidate=True), 61, False, False),  # 4.2.4
        (_meta(60, must_revalidate=True), 61, True, False),
    ],
)
def test_stale_if_error(meta: EntryMeta, elapsed: float, configured: bool, expected: bool) -> None:
    assert may_serve_stale_on_error(meta, T0 + elapsed, configured=configured) is expected


# -- Revalidation (4.3) ----------------------------------------------------------------


def test_conditional_headers() -> None:
    lm = d(T0 - DAY)
    both = new_meta("k", 200, [], [(b"ETag", b'W/"v1"'), (b"Last-Modified", lm)], T0, T0)
    assert (
        conditional_headers(both) == b'If-None-Match: W/"v1"\r\nIf-Modified-Since: ' + lm + b"\r\n"
    )
    assert conditional_headers(new_meta("k", 200, [], FRESH, T0, T0)) == b""
    junk = new_meta("k", 200, [], [(b"Last-Modified", b"last tuesday")], T0, T0)
    assert conditional_headers(junk) == b""


def test_merge_not_modified_updates_all_but_framing() -> None:
    stored = [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"5"),
        (b"Cache-Control", b"max-age=10"),
        (b"ETag", b'"v1"'),
        (b"X-Old", b"1"),
        (b"Date", d(T0 - 100)),
    ]
    nm = [
        (b"Cache-Control", b"max-age=600"),
        (b"Content-Length", b"0"),
        (b"Date", DATE),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"X-New", b"2"),
        (b"Transfer-Encoding", b"chunked"),
    ]
    merged = dict(merge_not_modified(stored, nm))
    assert merged[b"Cache-Control"] == b"max-age=600"
    assert merged[b"Content-Length"] == b"5"  # the stored body's length
    assert merged[b"Date"] == DATE
    assert merged[b"X-New"] == b"2" and merged[b"X-Old"] == b"1"
    assert b"X-Hop" not in merged and b"Transfer-Encoding" not in merged
    assert b"Connection" not in merged


def test_refresh_meta_from_304() -> None:
    clock = ManualClock(T0)
    meta = new_meta("k", 200, [], [(b"Date", DATE), *cc("max-age=10"), (b"ETag", b'"v1"')],
                    clock.now(), clock.now(), body_size=42)  # fmt: skip
    clock.advance(100)
    assert not meta.is_fresh(clock.now())
    nm = [(b"Date", d(clock.now())), *cc("max-age=60"), (b"ETag", b'"v1"')]
    assert not_modified_matches(meta, nm)
    fresh = refresh_meta(meta, nm, clock.now() - 1, clock.now())
    assert fresh.lifetime == 60.0 and fresh.body_size == 42
    assert fresh.initial_age == 1.0  # the 304's response delay, not the old entry's age
    assert fresh.is_fresh(clock.now())
    assert dict(fresh.headers)[b"Cache-Control"] == b"max-age=60"


def test_not_modified_matches_by_validator() -> None:
    meta = new_meta("k", 200, [], [(b"ETag", b'"v1"'), (b"Last-Modified", d(T0))], T0, T0)
    assert not_modified_matches(meta, [(b"ETag", b'W/"v1"')])  # weak comparison
    assert not not_modified_matches(meta, [(b"ETag", b'"v2"')])
    assert not_modified_matches(meta, [(b"Last-Modified", d(T0))])
    assert not not_modified_matches(meta, [(b"Last-Modified", d(T0 + 1))])
    assert not_modified_matches(meta, [])
    bare = new_meta("k", 200, [], FRESH, T0, T0)
    assert not not_modified_matches(bare, [(b"ETag", b'"v1"')])


# -- Cache-Status (RFC 9211) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((True, None, None, 30.0, False), {}, b"ferryman; hit; ttl=30"),
        ((True, None, None, 29.9, False), {}, b"ferryman; hit; ttl=29"),
        ((True, None, None, -5.5, False), {}, b"ferryman; hit; ttl=-6"),  # served stale
        ((False, "uri-miss", None, None, True), {}, b"ferryman; fwd=uri-miss; stored"),
        ((False, "bypass", None, None, False), {}, b"ferryman; fwd=bypass"),
        ((False, "stale", None, 60.0, True), {"fwd_status": 304},
         b"ferryman; fwd=stale; fwd-status=304; ttl=60; stored"),
        ((False, "miss", "no-store", None, False), {}, b"ferryman; fwd=miss; detail=no-store"),
        ((False, "miss", "two words", None, False), {}, b'ferryman; fwd=miss; detail="two words"'),
        ((False, "miss", 'q"\\', None, False), {}, b'ferryman; fwd=miss; detail="q\\"\\\\"'),
        ((True, None, None, math.inf, False), {"cache": "edge-1", "collapsed": True},
         b"edge-1; hit; collapsed"),
    ],
)  # fmt: skip
def test_cache_status(args: tuple[object, ...], kwargs: dict[str, object], expected: bytes) -> None:
    assert cache_status(*args, **kwargs) == expected  # type: ignore[arg-type]


def test_cache_status_refuses_unknown_fwd() -> None:
    with pytest.raises(ValueError):
        cache_status(False, "hit", None, None, False)


@pytest.mark.parametrize(
    ("fwd", "fwd_status", "passing", "expected"),
    [
        (None, None, False, "hit"),
        (None, None, True, None),  # passed on with no reason: not a cached route's request
        ("uri-miss", None, False, "miss"),
        ("vary-miss", None, False, "miss"),
        ("bypass", None, False, "bypass"),
        ("stale", 304, False, "revalidated"),
        ("request", 304, False, "revalidated"),
        ("stale", 200, False, "expired"),
        ("request", 502, False, "expired"),
        ("method", None, True, None),  # a method the route does not cache
    ],
)
def test_upstream_cache_status(
    fwd: str | None, fwd_status: int | None, passing: bool, expected: str | None
) -> None:
    assert upstream_cache_status(fwd, fwd_status, passing) == expected
