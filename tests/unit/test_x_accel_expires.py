"""cache/policy.py: nginx's X-Accel-Expires (seconds, `@` absolute time, 0 = never
cache) taking priority over Cache-Control and Expires, and proxy_ignore_headers
leaving fields out of the cache's decisions."""

from __future__ import annotations

from ferryman.cache import policy

DATE = b"Tue, 02 Jan 2024 03:04:05 GMT"
T = 1704164645.0


def test_parse_relative_absolute_zero_and_invalid() -> None:
    assert policy.x_accel_expires([(b"X-Accel-Expires", b"60")], None) == 60.0
    assert policy.x_accel_expires([(b"x-accel-expires", b" 0 ")], None) == 0.0
    assert policy.x_accel_expires([(b"X-Accel-Expires", b"@%d" % (T + 90))], T) == 90.0
    # An absolute time already past, or with no Date to measure from: expired.
    assert policy.x_accel_expires([(b"X-Accel-Expires", b"@%d" % (T - 5))], T) == 0.0
    assert policy.x_accel_expires([(b"X-Accel-Expires", b"@100")], None) == 0.0
    # Not digits: nginx ignores the field.
    for bad in (b"", b"-5", b"+5", b"1_0", b"5s", b"\xd9\xa5", b"@", b"@x"):
        assert policy.x_accel_expires([(b"X-Accel-Expires", bad)], T) is None, bad
    assert policy.x_accel_expires([(b"Expires", DATE)], T) is None


def test_it_wins_over_cache_control_and_expires() -> None:
    headers = [
        (b"Date", DATE),
        (b"Cache-Control", b"max-age=5, no-cache"),
        (b"Expires", b"Tue, 02 Jan 2024 03:04:06 GMT"),
        (b"X-Accel-Expires", b"600"),
    ]
    assert policy.freshness_lifetime(200, headers) == 600.0
    absolute = [
        (b"Date", DATE),
        (b"Cache-Control", b"max-age=5"),
        (b"X-Accel-Expires", b"@%d" % (T + 30)),
    ]
    assert policy.freshness_lifetime(200, absolute) == 30.0


def test_storable_follows_it() -> None:
    no_store = [(b"Cache-Control", b"no-store, private"), (b"X-Accel-Expires", b"60")]
    assert policy.storable(b"GET", 200, [], no_store) is None
    never = [(b"Cache-Control", b"max-age=60"), (b"X-Accel-Expires", b"0")]
    assert policy.storable(b"GET", 200, [], never) == "x-accel-expires"
    # Set-Cookie and Vary: * still keep a response out.
    cookie = [(b"X-Accel-Expires", b"60"), (b"Set-Cookie", b"a=1")]
    assert policy.storable(b"GET", 200, [], cookie) == "set-cookie"
    # A 200 with nothing to go on is not stored; X-Accel-Expires alone is enough.
    assert policy.storable(b"GET", 200, [], []) == "no-freshness"
    assert policy.storable(b"GET", 200, [], [(b"X-Accel-Expires", b"1")]) is None


def test_new_meta_with_it_needs_no_revalidation() -> None:
    headers = [(b"Date", DATE), (b"Cache-Control", b"no-cache"), (b"X-Accel-Expires", b"60")]
    meta = policy.new_meta("k", 200, [], headers, T, T)
    assert meta.lifetime == 60.0
    assert not meta.must_revalidate
    assert policy.evaluate(meta, policy.request_rules(b"GET", []), T + 10) is policy.Decision.FRESH


def test_ignored_fields_are_kept_but_not_decided_on() -> None:
    headers = [
        (b"Date", DATE),
        (b"Cache-Control", b"max-age=600"),
        (b"Vary", b"Accept"),
        (b"X-Accel-Expires", b"5"),
    ]
    ignore = frozenset({b"x-accel-expires", b"vary"})
    meta = policy.new_meta("k", 200, [], headers, T, T, ignore=ignore)
    assert meta.lifetime == 600.0  # Cache-Control decides once X-Accel-Expires is ignored
    assert meta.vary == ()
    assert (b"Vary", b"Accept") in meta.headers  # still stored and replayed
    decided = policy.without_fields(headers, frozenset({b"cache-control", b"x-accel-expires"}))
    assert policy.storable(b"GET", 200, [], decided) == "no-freshness"
    assert policy.without_fields(headers, ()) is headers
