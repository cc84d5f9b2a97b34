"""Shared-cache rules of RFC 9111 (with RFC 5861 stale windows and RFC 9211 Cache-Status).

Owns: parsing Cache-Control / Pragma / Expires / Age / HTTP-dates, whether a response
may be stored by a shared cache, its freshness lifetime and age, whether a stored
response may answer a request (fresh, stale-while-revalidate, revalidate), the
conditional request and the 304 merge, Vary variants and the Cache-Status value.

Pure: no I/O, no asyncio, no clock (`now` and the request/response times come in as
wall-clock seconds). It must not know cache keys, stores, config loading or the proxy.
Headers are `(name, value)` byte pairs in original case, as the parsers produce them.
Everything here reads untrusted upstream or client bytes: nothing raises on junk, and
numbers are parsed as RFC 9111 1.2.2 delta-seconds (ASCII digits only, never int()
on raw bytes).
"""

from __future__ import annotations

import calendar
import datetime
import enum
import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from typing import Final

from ferryman.cache.entry import EntryMeta
from ferryman.http.fields import HOP_BY_HOP, equals_lower, parse_connection_tokens, trim_ows
from ferryman.value import Value

__all__ = [
    "HEURISTIC_STATUSES",
    "UPSTREAM_CACHE_STATUSES",
    "CacheControl",
    "Decision",
    "RequestRules",
    "cache_status",
    "conditional_headers",
    "evaluate",
    "format_http_date",
    "freshness_lifetime",
    "initial_age",
    "invalidates",
    "lookup_method",
    "may_serve_stale_on_error",
    "merge_not_modified",
    "new_meta",
    "not_modified_matches",
    "parse_cache_control",
    "parse_delta_seconds",
    "parse_http_date",
    "refresh_meta",
    "request_rules",
    "storable",
    "upstream_cache_status",
    "variant_key",
    "vary_fields",
    "without_fields",
    "x_accel_expires",
]

Headers = Sequence[tuple[bytes, bytes]]
Valid = Sequence[tuple[Sequence[int], float]]

# RFC 9111 1.2.2: a delta-seconds too large to represent is taken as 2^31.
MAX_DELTA: Final = 2**31
# RFC 9110 15.1: statuses a cache may store with heuristic freshness.
HEURISTIC_STATUSES: Final = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# RFC 9111 4.2.2 suggests at most 10% of the time since Last-Modified; capped at one day
# (Squid's and Varnish's usual refresh_pattern ceiling) so an ancient file isn't pinned.
HEURISTIC_CAP: Final = 86400.0
# Statuses never stored: 1xx are not final; we implement neither ranges (206, RFC 9111
# 3.3 combining) nor storing 304s, which only ever update an entry (4.3.4).
_NEVER_STORED: Final = frozenset({206, 304})


# -- Cache-Control -------------------------------------------------------------------


class CacheControl(Value):
    """Cache-Control directives of one message (RFC 9111 5.2). The first occurrence of a
    directive wins (4.2.1 allows it). An invalid max-age / s-maxage value becomes 0 (4.2.1:
    "consider responses that have invalid freshness information to be stale"); other
    invalid numeric values are ignored. `max-stale` without a value is infinite.
    A `Value`, not a dataclass: parsed for every response a cache route stores or
    revalidates, and a dataclass's `__init__` stays Python code in the compiled build
    (1.4 us for these sixteen fields)."""

    FIELDS = (
        "max_age",
        "s_maxage",
        "stale_while_revalidate",
        "stale_if_error",
        "max_stale",
        "min_fresh",
        "no_store",
        "no_cache",
        "private",
        "public",
        "must_revalidate",
        "proxy_revalidate",
        "only_if_cached",
        "immutable",
        "no_cache_fields",
        "private_fields",
    )
    __slots__ = FIELDS

    def __init__(
        self,
        *,
        max_age: float | None = None,
        s_maxage: float | None = None,
        stale_while_revalidate: float | None = None,
        stale_if_error: float | None = None,
        max_stale: float | None = None,
        min_fresh: float | None = None,
        no_store: bool = False,
        # True for the qualified forms too (`no-cache="Set-Cookie"`), which a shared cache
        # may treat as unqualified (RFC 9111 5.2.2.4, 5.2.2.7); the names are kept for logs.
        no_cache: bool = False,
        private: bool = False,
        public: bool = False,
        must_revalidate: bool = False,
        proxy_revalidate: bool = False,
        only_if_cached: bool = False,
        immutable: bool = False,
        no_cache_fields: tuple[bytes, ...] = (),
        private_fields: tuple[bytes, ...] = (),
    ) -> None:
        self.max_age = max_age
        self.s_maxage = s_maxage
        self.stale_while_revalidate = stale_while_revalidate
        self.stale_if_error = stale_if_error
        self.max_stale = max_stale
        self.min_fresh = min_fresh
        self.no_store = no_store
        self.no_cache = no_cache
        self.private = private
        self.public = public
        self.must_revalidate = must_revalidate
        self.proxy_revalidate = proxy_revalidate
        self.only_if_cached = only_if_cached
        self.immutable = immutable
        self.no_cache_fields = no_cache_fields
        self.private_fields = private_fields


def parse_delta_seconds(value: bytes) -> int | None:
    """RFC 9111 1.2.2 delta-seconds = 1*DIGIT; None if not that; huge values -> 2^31."""
    if not value or not value.isdigit():  # bytes.isdigit is ASCII-only
        return None
    if len(value) > 10:
        return MAX_DELTA
    return min(int(value), MAX_DELTA)


def _unquote(value: bytes) -> bytes:
    """RFC 9110 5.6.4 quoted-string body with quoted-pairs resolved (already unwrapped)."""
    return re.sub(rb"\\(.)", rb"\1", value, flags=re.DOTALL)


_NAME: Final = re.compile(rb"[^=,]*")
_QUOTED_BODY: Final = re.compile(rb'(?:[^"\\]|\\.)*', re.DOTALL)


def _split_directives(value: bytes, out: list[tuple[bytes, bytes | None]]) -> None:
    """`name[=token|"quoted"]` members of a comma list (RFC 9111 5.2). Junk after a
    quoted value is skipped; an unterminated quoted value runs to the end."""
    i, n = 0, len(value)
    while i < n:
        m = _NAME.match(value, i)
        assert m is not None  # `[^=,]*` always matches
        name, i = trim_ows(m.group()).lower(), m.end()
        arg: bytes | None = None
        if i < n and value[i] == 0x3D:  # "="
            i += 1
            while i < n and value[i] in (0x20, 0x09):
                i += 1
            if i < n and value[i] == 0x22:  # '"'
                q = _QUOTED_BODY.match(value, i + 1)
                assert q is not None
                arg = _unquote(q.group())
                i = q.end() + 1
            comma = value.find(b",", i)
            end = n if comma < 0 else comma
            if arg is None:
                arg = trim_ows(value[i:end])
            i = end
        i += 1  # past the comma
        if name:
            out.append((name, arg))


def _directives(headers: Headers, field: bytes) -> list[tuple[bytes, bytes | None]]:
    out: list[tuple[bytes, bytes | None]] = []
    for name, value in headers:
        if name.lower() == field:
            _split_directives(value, out)
    return out


def _field_names(value: bytes | None) -> tuple[bytes, ...]:
    if not value:
        return ()
    return tuple(n for n in (trim_ows(p).lower() for p in value.split(b",")) if n)


def _seconds(value: bytes | None, *, invalid: float | None) -> float | None:
    parsed = None if value is None else parse_delta_seconds(value)
    return invalid if parsed is None else float(parsed)


def parse_cache_control(headers: Headers) -> CacheControl:
    """All Cache-Control fields of a message, combined (RFC 9110 5.3)."""
    found: dict[bytes, bytes | None] = {}
    for name, value in _directives(headers, b"cache-control"):
        found.setdefault(name, value)
    if not found:
        return _EMPTY_CC
    max_stale: float | None = None
    if b"max-stale" in found:
        raw = found[b"max-stale"]
        max_stale = math.inf if raw is None else _seconds(raw, invalid=None)
    return CacheControl(
        max_age=_seconds(found[b"max-age"], invalid=0.0) if b"max-age" in found else None,
        s_maxage=_seconds(found[b"s-maxage"], invalid=0.0) if b"s-maxage" in found else None,
        stale_while_revalidate=_seconds(found.get(b"stale-while-revalidate"), invalid=None),
        stale_if_error=_seconds(found.get(b"stale-if-error"), invalid=None),
        max_stale=max_stale,
        min_fresh=_seconds(found.get(b"min-fresh"), invalid=None),
        no_cache_fields=_field_names(found.get(b"no-cache")),
        private_fields=_field_names(found.get(b"private")),
        no_store=b"no-store" in found,
        no_cache=b"no-cache" in found,
        private=b"private" in found,
        public=b"public" in found,
        must_revalidate=b"must-revalidate" in found,
        proxy_revalidate=b"proxy-revalidate" in found,
        only_if_cached=b"only-if-cached" in found,
        immutable=b"immutable" in found,
    )


_EMPTY_CC: Final = CacheControl()


# -- HTTP-date (RFC 9110 5.6.7) ------------------------------------------------------

_DAYS: Final = rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAYS: Final = rb"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH_NAMES: Final = b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_MONTHS: Final = {m: i + 1 for i, m in enumerate(_MONTH_NAMES)}
_MON: Final = rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME: Final = rb"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# Day names and GMT are case-sensitive (RFC 9110 5.6.7: %s"...").
_IMF_FIXDATE: Final = re.compile(
    _DAYS + rb", ([0-9]{2}) " + _MON + rb" ([0-9]{4}) " + _TIME + rb" GMT"
)
_RFC850: Final = re.compile(
    _LONG_DAYS + rb", ([0-9]{2})-" + _MON + rb"-([0-9]{2}) " + _TIME + rb" GMT"
)
_ASCTIME: Final = re.compile(
    _DAYS + rb" " + _MON + rb" ([0-9]{2}| [0-9]) " + _TIME + rb" ([0-9]{4})"
)


def _digits(value: bytes) -> int:
    # Only called on regex groups of ASCII digits (and a leading space for asctime).
    return int(value.lstrip(b" ") or b"0")


def _two_digit_year(yy: int, now: float | None) -> int:
    """RFC 9110 5.6.7: a two-digit year more than 50 years in the future is the most
    recent past year with those digits. Without `now`, the POSIX strptime pivot (69)."""
    if now is None:
        return 1900 + yy if yy >= 69 else 2000 + yy
    try:
        this_year = datetime.datetime.fromtimestamp(now, datetime.UTC).year
    except (OverflowError, OSError, ValueError):
        return 1900 + yy if yy >= 69 else 2000 + yy
    year = this_year - this_year % 100 + yy
    return year - 100 if year > this_year + 50 else year


def parse_http_date(value: bytes, *, now: float | None = None) -> float | None:
    """Seconds since the epoch for an IMF-fixdate, RFC 850 or asctime date; None for
    anything else (out-of-range fields, wrong case, trailing junk)."""
    value = trim_ows(value)
    m = _IMF_FIXDATE.fullmatch(value)
    if m is not None:
        day, mon, year, hh, mm, ss = m.groups()
        y = _digits(year)
    elif (m := _RFC850.fullmatch(value)) is not None:
        day, mon, year, hh, mm, ss = m.groups()
        y = _two_digit_year(_digits(year), now)
    elif (m := _ASCTIME.fullmatch(value)) is not None:
        mon, day, hh, mm, ss, year = m.groups()
        y = _digits(year)
    else:
        return None
    d, h, mi, s = _digits(day), _digits(hh), _digits(mm), _digits(ss)
    month = _MONTHS[mon]
    # Second 60 is a leap second (RFC 9110 5.6.7 allows it; timegm rolls it over).
    if y < 1 or h > 23 or mi > 59 or s > 60:
        return None
    if not 1 <= d <= calendar.monthrange(y, month)[1]:
        return None
    return float(calendar.timegm((y, month, d, h, mi, s, 0, 0, 0)))


def format_http_date(t: float) -> bytes:
    """IMF-fixdate, the only form a sender may generate (RFC 9110 5.6.7)."""
    tm = datetime.datetime.fromtimestamp(math.floor(t), datetime.UTC)
    day = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")[tm.weekday()]
    mon = _MONTH_NAMES[tm.month - 1]
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        day, tm.day, mon, tm.year, tm.hour, tm.minute, tm.second
    )  # fmt: skip


# -- Field access --------------------------------------------------------------------


def _first(headers: Headers, name: bytes) -> bytes | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def _has(headers: Headers, name: bytes) -> bool:
    return any(n.lower() == name for n, _ in headers)


def _method(method: bytes | str) -> str:
    return method.decode("latin-1") if isinstance(method, bytes) else method


# -- Requests ------------------------------------------------------------------------


class RequestRules:
    """What a request asks of the cache (RFC 9111 5.2.1). Read-only by convention.

    A plain slotted class, not a dataclass: made for every cacheable request, and a
    dataclass's generated __init__ stays interpreted in the compiled build (it cost
    about a microsecond a cache hit)."""

    __slots__ = (
        "authorization",
        "conditional",
        "max_age",
        "max_stale",
        "may_store",
        "method",
        "min_fresh",
        "must_revalidate",
        "only_if_cached",
    )

    def __init__(
        self,
        method: str,
        may_store: bool,
        must_revalidate: bool,
        max_age: float | None,
        max_stale: float | None,
        min_fresh: float | None,
        only_if_cached: bool,
        authorization: bool,
        conditional: bool,
    ) -> None:
        self.method = method
        # The request does not forbid storing the response (5.2.1.5 no-store).
        self.may_store = may_store
        # A stored response may not be used without revalidation: no-cache, max-age=0
        # or Pragma: no-cache without Cache-Control (5.2.1.4, 5.4).
        self.must_revalidate = must_revalidate
        self.max_age = max_age
        self.max_stale = max_stale
        self.min_fresh = min_fresh
        # 5.2.1.7: answer from the cache or 504, never contact upstream.
        self.only_if_cached = only_if_cached
        # 3.5: the response is then shared only if it allows it.
        self.authorization = authorization
        # It has If-None-Match or If-Modified-Since: a hit then compares validators
        # (RFC 9110 13.1); without either, a hit need not look for them again.
        self.conditional = conditional


def request_rules(method: bytes | str, headers: Headers) -> RequestRules:
    # One pass over the fields for what the cache asks of every request; Cache-Control
    # is parsed only when present (most requests have none).
    # The names are told apart by length first, then by their usual spelling (a memcmp).
    has_cc = authorization = conditional = False
    pragma: list[tuple[bytes, bytes | None]] = []
    for name, value in headers:
        size = len(name)
        if size == 13:
            if equals_lower(name, b"cache-control", b"Cache-Control"):
                has_cc = True
            elif equals_lower(name, b"authorization", b"Authorization"):
                authorization = True
            elif equals_lower(name, b"if-none-match", b"If-None-Match"):
                conditional = True
        elif size == 17 and equals_lower(name, b"if-modified-since", b"If-Modified-Since"):
            conditional = True
        elif size == 6 and equals_lower(name, b"pragma", b"Pragma"):
            _split_directives(value, pragma)
    cc = parse_cache_control(headers) if has_cc else _EMPTY_CC
    pragma_no_cache = not has_cc and any(d == b"no-cache" for d, _ in pragma)
    return RequestRules(
        _method(method),
        not cc.no_store,
        cc.no_cache or cc.max_age == 0 or pragma_no_cache,
        cc.max_age,
        cc.max_stale,
        cc.min_fresh,
        cc.only_if_cached,
        authorization,
        conditional,
    )


def lookup_method(method: bytes | str, methods: Collection[str] = ("GET", "HEAD")) -> str | None:
    """The method whose stored responses may answer this one, or None (no lookup).
    HEAD is answered from a stored GET (RFC 9110 9.3.2: the same header fields; RFC 9111
    4), which is also why a response to HEAD is never stored (storable refuses it)."""
    m = _method(method)
    if m not in methods:
        return None
    return "GET" if m == "HEAD" else m


_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def invalidates(method: bytes | str, status: int) -> bool:
    """RFC 9111 4.4: a non-error response to an unsafe method invalidates the stored
    responses of its target URI."""
    return _method(method) not in _SAFE_METHODS and 200 <= status < 400


# -- Storing -------------------------------------------------------------------------


def _valid_for(status: int, valid: Valid) -> float | None:
    """nginx proxy_cache_valid: the first entry naming the status, or `any` (empty)."""
    for statuses, seconds in valid:
        if not statuses or status in statuses:
            return seconds
    return None


def _explicit(cc: CacheControl, headers: Headers) -> bool:
    return cc.s_maxage is not None or cc.max_age is not None or _has(headers, b"expires")


def storable(
    method: bytes | str,
    status: int,
    req_headers: Headers,
    resp_headers: Headers,
    *,
    store_set_cookie: bool = False,
    valid: Valid = (),
    methods: Collection[str] = ("GET",),
    now: float | None = None,
) -> str | None:
    """None if a shared cache may store this response (RFC 9111 3, 3.5), else the reason:
    method, status, no-store, private, vary-star, authorization, set-cookie, no-freshness,
    x-accel-expires. `methods`: request methods whose responses are stored (nginx
    proxy_cache_methods); HEAD never is (no body) but is answered from GET, see
    lookup_method. `now` stands in for a missing Date (X-Accel-Expires `@T`)."""
    m = _method(method)
    if m == "HEAD" or m not in methods:
        return "method"
    if status < 200 or status > 599 or status in _NEVER_STORED:
        return "status"
    cc = parse_cache_control(resp_headers)
    # nginx: X-Accel-Expires, the upstream speaking to its own proxy cache, overrides
    # the response's Cache-Control and Expires (0: never cache).
    accel = x_accel_expires(resp_headers, _date(resp_headers, now))
    if accel is not None and accel <= 0:
        return "x-accel-expires"
    if parse_cache_control(req_headers).no_store or (cc.no_store and accel is None):
        return "no-store"
    # 5.2.2.7: the qualified form is handled as unqualified (allowed by 5.2.3).
    if cc.private and accel is None:
        return "private"
    if vary_fields(resp_headers) is None:
        return "vary-star"
    if _has(req_headers, b"authorization") and not (
        cc.public or cc.s_maxage is not None or cc.must_revalidate
    ):
        return "authorization"
    # Set-Cookie is personal: nginx does not cache such responses unless told to.
    if not store_set_cookie and _has(resp_headers, b"set-cookie"):
        return "set-cookie"
    if accel is not None:
        return None
    return _freshness_reason(status, cc, resp_headers, valid)


def _freshness_reason(status: int, cc: CacheControl, headers: Headers, valid: Valid) -> str | None:
    """RFC 9111 3: storable with explicit freshness, a heuristically cacheable status,
    `public`, or a proxy_cache_valid entry; and worth storing only if it can ever be
    reused: some freshness, a validator to revalidate with, or a stale window."""
    configured = _valid_for(status, valid)
    if not _explicit(cc, headers):
        if configured is not None and configured <= 0:
            return "status"  # nginx: `proxy_cache_valid 404 0` means "do not cache"
        if configured is None and status not in HEURISTIC_STATUSES and not cc.public:
            return "status"
    if freshness_lifetime(status, headers, valid=valid) > 0:
        return None
    if _has(headers, b"etag") or _has(headers, b"last-modified"):
        return None
    if cc.stale_if_error and not (cc.must_revalidate or cc.no_cache):
        return None
    return "no-freshness"


# -- Freshness -----------------------------------------------------------------------


def freshness_lifetime(
    status: int,
    resp_headers: Headers,
    *,
    valid: Valid = (),
    heuristic_fraction: float = 0.1,
    response_time: float | None = None,
) -> float:
    """RFC 9111 4.2.1: s-maxage > max-age > Expires - Date > proxy_cache_valid (nginx:
    only without Cache-Control/Expires) > heuristic (4.2.2) > 0. A response with
    `no-cache` has no freshness: every use needs validation (5.2.2.4). `response_time`
    stands in for a missing or invalid Date. nginx's X-Accel-Expires comes first."""
    accel = x_accel_expires(resp_headers, _date(resp_headers, response_time))
    if accel is not None:
        return accel
    cc = parse_cache_control(resp_headers)
    if cc.no_cache:
        return 0.0
    if cc.s_maxage is not None:
        return cc.s_maxage
    if cc.max_age is not None:
        return cc.max_age
    date = _date(resp_headers, response_time)
    expires = _first(resp_headers, b"expires")
    if expires is not None:
        exp = parse_http_date(expires, now=date)
        # 5.3: an invalid Expires (e.g. "0") means already expired.
        if exp is None or date is None:
            return 0.0
        return max(0.0, exp - date)
    configured = _valid_for(status, valid)
    if configured is not None:
        return max(0.0, configured)
    return _heuristic(status, cc, resp_headers, date, heuristic_fraction)


def x_accel_expires(headers: Headers, date: float | None) -> float | None:
    """nginx X-Accel-Expires (ngx_http_upstream_process_accel_expires): the lifetime
    in seconds it gives, `N` from the response, `@T` until Unix time T (measured from
    `date`, the response's Date; 0 if unknown or past). 0 means "do not cache". None
    when absent or not digits: nginx then ignores it."""
    raw = _first(headers, b"x-accel-expires")
    if raw is None:
        return None
    value = trim_ows(raw)
    if value[:1] == b"@":
        when = parse_delta_seconds(value[1:])
        if when is None:
            return None
        return max(0.0, when - date) if date is not None else 0.0
    seconds = parse_delta_seconds(value)
    return None if seconds is None else float(seconds)


def without_fields(headers: Headers, names: Collection[bytes]) -> Headers:
    """`headers` less the fields named (lower case): what the cache decides on when a
    route ignores some (nginx proxy_ignore_headers)."""
    if not names:
        return headers
    return [(n, v) for n, v in headers if n.lower() not in names]


def _date(headers: Headers, fallback: float | None) -> float | None:
    raw = _first(headers, b"date")
    parsed = None if raw is None else parse_http_date(raw, now=fallback)
    return fallback if parsed is None else parsed


def _heuristic(
    status: int, cc: CacheControl, headers: Headers, date: float | None, fraction: float
) -> float:
    # 4.2.2: only for heuristically cacheable statuses or with `public`.
    if status not in HEURISTIC_STATUSES and not cc.public:
        return 0.0
    raw = _first(headers, b"last-modified")
    modified = None if raw is None else parse_http_date(raw, now=date)
    if modified is None or date is None or modified >= date:
        return 0.0
    return min((date - modified) * fraction, HEURISTIC_CAP)


def _age_value(headers: Headers) -> float:
    """The first Age field (RFC 9111 5.1); an invalid one counts as absent (0)."""
    raw = _first(headers, b"age")
    parsed = None if raw is None else parse_delta_seconds(trim_ows(raw))
    return 0.0 if parsed is None else float(parsed)


def initial_age(resp_headers: Headers, request_time: float, response_time: float) -> float:
    """RFC 9111 4.2.3 corrected_initial_age = max(apparent_age, corrected_age_value)."""
    date = _date(resp_headers, None)
    apparent_age = 0.0 if date is None else max(0.0, response_time - date)
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, _age_value(resp_headers) + response_delay)


def new_meta(
    key: str,
    status: int,
    req_headers: Headers,
    resp_headers: Headers,
    request_time: float,
    response_time: float,
    *,
    body_size: int = 0,
    valid: Valid = (),
    heuristic_fraction: float = 0.1,
    ignore: Collection[bytes] = (),
) -> EntryMeta:
    """The EntryMeta for a response that `storable` accepted. `ignore`: fields (lower
    case) kept but not decided on (nginx proxy_ignore_headers)."""
    decide = without_fields(resp_headers, ignore)
    cc = parse_cache_control(decide)
    vary = vary_fields(decide) or ()
    headers = list(resp_headers)
    accel = _first(decide, b"x-accel-expires") is not None
    return EntryMeta(
        key=key,
        variant=variant_key(vary, req_headers),
        status=status,
        headers=headers,
        request_time=request_time,
        response_time=response_time,
        stored_at=response_time,
        lifetime=freshness_lifetime(
            status,
            list(decide),
            valid=valid,
            heuristic_fraction=heuristic_fraction,
            response_time=response_time,
        ),
        initial_age=initial_age(headers, request_time, response_time),
        etag=_first(headers, b"etag"),
        last_modified=_first(headers, b"last-modified"),
        swr=cc.stale_while_revalidate,
        sie=cc.stale_if_error,
        # 5.2.2.10: s-maxage carries proxy-revalidate; no-cache forbids stale use (4.2.4).
        # nginx serves an X-Accel-Expires lifetime without revalidating.
        must_revalidate=(
            cc.must_revalidate
            or cc.proxy_revalidate
            or ((cc.s_maxage is not None or cc.no_cache) and not accel)
        ),
        body_size=body_size,
        vary=vary,
    )


# -- Using a stored response ---------------------------------------------------------


class Decision(enum.Enum):
    FRESH = "fresh"  # serve it
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"  # serve it, refresh in background
    MUST_REVALIDATE = "must-revalidate"  # conditional request upstream first


def evaluate(meta: EntryMeta, req: RequestRules, now: float) -> Decision:
    """RFC 9111 4.2 and 5.2.1 with RFC 5861 stale-while-revalidate. An `only-if-cached`
    request that gets MUST_REVALIDATE is answered 504 by the caller (5.2.1.7)."""
    if req.must_revalidate:
        return Decision.MUST_REVALIDATE
    age = meta.age(now)
    if req.max_age is not None and age > req.max_age:
        return Decision.MUST_REVALIDATE
    remaining = meta.lifetime - age
    if req.min_fresh is not None and remaining < req.min_fresh:
        return Decision.MUST_REVALIDATE
    if remaining > 0:
        return Decision.FRESH
    # Stale. 4.2.4: must-revalidate (and friends) forbid any stale use.
    if meta.must_revalidate:
        return Decision.MUST_REVALIDATE
    staleness = -remaining
    if req.max_stale is not None and staleness <= req.max_stale:
        return Decision.FRESH  # 5.2.1.2: the client accepts this much staleness
    if meta.swr is not None and staleness <= meta.swr:
        return Decision.STALE_WHILE_REVALIDATE
    return Decision.MUST_REVALIDATE


def may_serve_stale_on_error(meta: EntryMeta, now: float, *, configured: bool = False) -> bool:
    """May `meta` answer when upstream failed? Within its stale-if-error window (RFC 5861
    4), or whenever `configured` (nginx proxy_cache_use_stale error/timeout/http_5xx/
    updating, which ignores the window); never with must-revalidate, proxy-revalidate,
    s-maxage or no-cache (RFC 9111 4.2.4, 5.2.2.2)."""
    if meta.is_fresh(now):
        return True
    if meta.must_revalidate:
        return False
    if configured:
        return True
    return meta.sie is not None and -meta.ttl(now) <= meta.sie


# -- Revalidation (RFC 9111 4.3) ------------------------------------------------------


def conditional_headers(meta: EntryMeta) -> bytes:
    """`If-None-Match` from the stored ETag, `If-Modified-Since` from a valid stored
    Last-Modified (4.3.1), as header lines ready to append to the upstream request."""
    out = b""
    if meta.etag is not None and _is_clean(meta.etag):
        out += b"If-None-Match: " + meta.etag + b"\r\n"
    lm = meta.last_modified
    if lm is not None and _is_clean(lm) and parse_http_date(lm) is not None:
        out += b"If-Modified-Since: " + trim_ows(lm) + b"\r\n"
    return out


def _is_clean(value: bytes) -> bool:
    # Stored values came through the parser, but never emit a line break from storage.
    return b"\r" not in value and b"\n" not in value and b"\x00" not in value


def _weak_eq(a: bytes, b: bytes) -> bool:
    """RFC 9110 8.8.3.2 weak comparison."""
    a, b = trim_ows(a), trim_ows(b)
    return a.removeprefix(b"W/") == b.removeprefix(b"W/")


def not_modified_matches(meta: EntryMeta, not_modified_headers: Headers) -> bool:
    """RFC 9111 4.3.4: does the 304 select this stored response? By ETag when the 304
    has one, else by Last-Modified when both have one; a 304 with no validator selects
    the one stored response."""
    etag = _first(not_modified_headers, b"etag")
    if etag is not None:
        return meta.etag is not None and _weak_eq(etag, meta.etag)
    lm = _first(not_modified_headers, b"last-modified")
    if lm is not None and meta.last_modified is not None:
        return parse_http_date(lm) == parse_http_date(meta.last_modified)
    return True


# 3.2: never updated from a 304: framing (the stored body's, not the 304's), hop-by-hop
# fields, and fields the stored body depends on.
_KEEP_STORED: Final = HOP_BY_HOP | {b"content-encoding", b"content-range", b"content-type"}


def merge_not_modified(
    stored_headers: Headers, not_modified_headers: Headers
) -> list[tuple[bytes, bytes]]:
    """RFC 9111 4.3.4 / 3.2: each field of the 304 replaces the stored field of that
    name, except the framing and hop-by-hop ones (and those its Connection names)."""
    skip = set(_KEEP_STORED)
    for name, value in not_modified_headers:
        if name.lower() == b"connection":
            skip |= parse_connection_tokens(value)
    updates = [(n, v) for n, v in not_modified_headers if n.lower() not in skip]
    replaced = {n.lower() for n, _ in updates}
    merged = [(n, v) for n, v in stored_headers if n.lower() not in replaced]
    merged.extend(updates)
    return merged


def refresh_meta(
    meta: EntryMeta,
    not_modified_headers: Headers,
    request_time: float,
    response_time: float,
    *,
    valid: Valid = (),
    heuristic_fraction: float = 0.1,
    ignore: Collection[bytes] = (),
) -> EntryMeta:
    """The stored response freshened by a 304: merged fields, then freshness and age
    computed anew from the 304's exchange times (4.3.4). Body and variant unchanged."""
    headers = merge_not_modified(meta.headers, not_modified_headers)
    fresh = new_meta(
        meta.key,
        meta.status,
        (),
        headers,
        request_time,
        response_time,
        body_size=meta.body_size,
        valid=valid,
        heuristic_fraction=heuristic_fraction,
        ignore=ignore,
    )
    # The Age of the 304 describes the 304, not the merged fields: recompute from it.
    fresh_age = initial_age(not_modified_headers, request_time, response_time)
    return replace(fresh, variant=meta.variant, vary=meta.vary, initial_age=fresh_age)


# -- Vary (RFC 9111 4.1) -------------------------------------------------------------


def vary_fields(resp_headers: Headers) -> tuple[bytes, ...] | None:
    """The request fields the response varies on, lower case, sorted, unique; () when
    none; None for `Vary: *`, which a cache cannot match and so never stores (4.1)."""
    fields: set[bytes] = set()
    for name, value in resp_headers:
        if name.lower() != b"vary":
            continue
        for part in value.split(b","):
            f = trim_ows(part).lower()
            if f == b"*":
                return None
            if f:
                fields.add(f)
    return tuple(sorted(fields))


# Fields whose values are case-insensitive tokens (RFC 9110 12.5.x): lower-cased.
_CASELESS: Final = frozenset({b"accept-encoding", b"accept-charset", b"accept-language"})


def _normalise(name: bytes, values: Iterable[bytes]) -> bytes:
    """One comma list of all the field's lines, members trimmed, empties dropped (RFC
    9110 5.3 and 5.6.1 say these are equivalent)."""
    members = [trim_ows(p) for v in values for p in v.split(b",")]
    joined = b",".join(p for p in members if p)
    return joined.lower() if name in _CASELESS else joined


def variant_key(fields: Iterable[bytes], req_headers: Headers) -> bytes:
    """The normalised values of `fields` in the request; equal for equivalent requests.
    An absent field differs from an empty one. b"" when there are no fields."""
    parts: list[bytes] = []
    for f in fields:
        values = [v for n, v in req_headers if n.lower() == f]
        if values:
            parts.append(f + b":" + _normalise(f, values))
        else:
            parts.append(f + b"!")
    return b"\n".join(parts)


# -- Cache-Status (RFC 9211) ---------------------------------------------------------

_FWD: Final = frozenset(
    {"bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"}
)
_TOKEN: Final = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")


def _sf_string(value: str) -> str:
    """An RFC 8941 Token when it is one, else a String (printable ASCII, escaped)."""
    if _TOKEN.fullmatch(value):
        return value
    clean = "".join(c for c in value if " " <= c <= "~")
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cache_status(
    hit: bool,
    fwd: str | None,
    detail: str | None,
    ttl: float | None,
    stored: bool,
    *,
    cache: str = "ferryman",
    fwd_status: int | None = None,
    collapsed: bool = False,
) -> bytes:
    """RFC 9211 Cache-Status member, e.g. b"ferryman; hit; ttl=30",
    b"ferryman; fwd=uri-miss; stored", b"ferryman; fwd=stale; fwd-status=304; ttl=60".
    `ttl` is the remaining freshness, negative when served stale (9211 2.5)."""
    if fwd is not None and fwd not in _FWD:
        raise ValueError(f"Cache-Status fwd {fwd!r} is not an RFC 9211 value")
    params = [_sf_string(cache)]
    if hit:
        params.append("hit")
    if fwd is not None:
        params.append("fwd=" + fwd)
        if fwd_status is not None:
            params.append(f"fwd-status={fwd_status}")
    if ttl is not None and math.isfinite(ttl):
        params.append(f"ttl={math.floor(ttl)}")
    if stored:
        params.append("stored")
    if collapsed:
        params.append("collapsed")
    if detail:
        params.append("detail=" + _sf_string(detail))
    return "; ".join(params).encode("ascii")


# nginx's $upstream_cache_status values the metrics count (a request the route does not
# cache has none).
UPSTREAM_CACHE_STATUSES: Final = ("hit", "miss", "bypass", "revalidated", "expired")


def upstream_cache_status(fwd: str | None, fwd_status: int | None, passing: bool) -> str | None:
    """nginx $upstream_cache_status from the RFC 9211 fwd reason the cache noted: None
    for a request the route does not cache (fwd "method", or passed on with no reason)."""
    if fwd is None:
        return None if passing else "hit"
    if fwd == "bypass":
        return "bypass"
    if fwd in ("uri-miss", "vary-miss"):
        return "miss"
    if fwd in ("stale", "request"):
        return "revalidated" if fwd_status == 304 else "expired"
    return None
