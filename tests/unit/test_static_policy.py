"""proxy/static/policy.py and proxy/mime.py: validators, conditionals, ranges, expires,
media types; and proxy/redirects.py, proxy/error_pages.py."""

from __future__ import annotations

from ferryman.config.schema import ErrorPageSpec
from ferryman.proxy.error_pages import ErrorPages
from ferryman.proxy.mime import BUILTIN_TYPES, content_type, type_table
from ferryman.proxy.redirects import Redirects, default_rule
from ferryman.proxy.static import policy
from ferryman.proxy.static.policy import UNSATISFIABLE, WHOLE, ByteRange, Conditional

MTIME = 1704164645  # Tue, 02 Jan 2024 03:04:05 GMT
TAG = policy.etag(MTIME, 55)
DATE = b"Tue, 02 Jan 2024 03:04:05 GMT"


def test_etag_is_nginx_format() -> None:
    assert TAG == b'"65937d25-37"'


def test_http_date_round_trip() -> None:
    assert policy.http_date(MTIME) == DATE
    assert policy.parse_http_date(DATE) == MTIME
    assert policy.parse_http_date(b"Tuesday, 02-Jan-24 03:04:05 GMT") == MTIME
    assert policy.parse_http_date(b"not a date") is None


def test_paths_map_under_root_and_alias() -> None:
    assert policy.map_root(b"/srv/www/", b"/a/b.txt") == b"/srv/www/a/b.txt"
    assert policy.map_root(b"/", b"/a") == b"/a"
    assert policy.map_alias(b"/srv/alt/", b"/alias/x.txt", b"/alias/") == b"/srv/alt/x.txt"


def conditional(**fields: bytes) -> int:
    return policy.check_conditionals(MTIME, TAG, **fields)


def test_if_none_match_compares_weakly() -> None:
    assert conditional(if_none_match=TAG) == Conditional.NOT_MODIFIED
    assert conditional(if_none_match=b"W/" + TAG) == Conditional.NOT_MODIFIED
    assert conditional(if_none_match=b'"x", ' + TAG) == Conditional.NOT_MODIFIED
    assert conditional(if_none_match=b"*") == Conditional.NOT_MODIFIED
    assert conditional(if_none_match=b'"other"') == Conditional.SEND


def test_if_modified_since_is_exact() -> None:
    assert conditional(if_modified_since=DATE) == Conditional.NOT_MODIFIED
    assert conditional(if_modified_since=b"Tue, 02 Jan 2024 03:04:06 GMT") == Conditional.SEND
    # Both present: both must say "not modified".
    assert conditional(if_modified_since=DATE, if_none_match=b'"x"') == Conditional.SEND


def test_preconditions_fail_with_412() -> None:
    assert conditional(if_match=b'"nope"') == Conditional.PRECONDITION_FAILED
    assert conditional(if_match=b"W/" + TAG) == Conditional.PRECONDITION_FAILED
    assert conditional(if_match=TAG) == Conditional.SEND
    early = b"Mon, 01 Jan 2024 00:00:00 GMT"
    assert conditional(if_unmodified_since=early) == Conditional.PRECONDITION_FAILED
    assert conditional(if_unmodified_since=DATE) == Conditional.SEND


def test_single_ranges() -> None:
    assert policy.parse_range(b"bytes=0-4", 55) == ByteRange(0, 5)
    assert policy.parse_range(b"bytes=6-", 55) == ByteRange(6, 55)
    assert policy.parse_range(b"bytes=-5", 55) == ByteRange(50, 55)
    assert policy.parse_range(b"bytes=50-100", 55) == ByteRange(50, 55)
    assert policy.parse_range(b"bytes= 1 - 2 ", 55) == ByteRange(1, 3)
    assert ByteRange(0, 5).content_range(55) == b"bytes 0-4/55"


def test_unsatisfiable_and_ignored_ranges() -> None:
    assert policy.parse_range(b"bytes=100-200", 55) == UNSATISFIABLE
    assert policy.parse_range(b"bytes=5-2", 55) == UNSATISFIABLE
    assert policy.parse_range(b"bytes=abc", 55) == UNSATISFIABLE
    assert policy.parse_range(b"bytes=+5-6", 55) == UNSATISFIABLE
    assert policy.parse_range(b"items=0-4", 55) == WHOLE
    assert policy.parse_range(None, 55) == WHOLE
    assert policy.parse_range(b"bytes=0-1,3-4", 55) == WHOLE  # several: whole file
    assert policy.parse_range(b"bytes=0-", 0) == WHOLE


def test_if_range() -> None:
    assert policy.parse_range(b"bytes=0-4", 55, if_range=TAG, tag=TAG) == ByteRange(0, 5)
    assert policy.parse_range(b"bytes=0-4", 55, if_range=b'"old"', tag=TAG) == WHOLE
    assert policy.parse_range(b"bytes=0-4", 55, if_range=DATE, mtime=MTIME) == ByteRange(0, 5)


def test_expires() -> None:
    assert policy.expires_fields(None, 0) == b""
    assert b"max-age=315360000" in policy.expires_fields("max", 0)
    assert b"no-cache" in policy.expires_fields("epoch", 0)
    lines = policy.expires_fields(3600.0, MTIME)
    assert lines == b"Expires: %s\r\nCache-Control: max-age=3600\r\n" % policy.http_date(
        MTIME + 3600
    )
    assert b"no-cache" in policy.expires_fields(-1.0, MTIME)


def test_media_types() -> None:
    assert content_type(b"/a/b.CSS", BUILTIN_TYPES, b"x") == b"text/css"
    assert content_type(b"/a/README", BUILTIN_TYPES, b"x") == b"x"
    assert content_type(b"/a/.hidden", BUILTIN_TYPES, b"x") == b"x"
    assert content_type(b"/a.d/file", BUILTIN_TYPES, b"x") == b"x"
    table = type_table([("txt", "text/plain"), ("TXT", "text/x")])
    assert content_type(b"/f.txt", table, b"x") == b"text/x"


def _render(template: str, captures: tuple[bytes, ...]) -> bytes:
    out = template.encode()
    for i, c in enumerate(captures, start=1):
        out = out.replace(b"$%d" % i, c)
    return out


def test_proxy_redirect_rules() -> None:
    rules = Redirects((default_rule("http://up/two/", "/two/", "/one/"),))
    assert rules.rewrite(b"http://up/two/x?y", _render) == b"/one/x?y"
    assert rules.rewrite(b"http://other/two/x", _render) is None
    assert default_rule("http://up", None, "/a/") == ("http://up/", "/")
    regex = Redirects((("~^http://up:\\d+/(.*)$", "/moved/$1"),))
    assert regex.rewrite(b"http://up:81/p/q", _render) == b"/moved/p/q"
    fields = b"Location: http://up/two/a\r\nRefresh: 5; url=http://up/two/b\r\nX: 1\r\n"
    out = rules.rewrite_fields(fields, _render, lambda p: b"http://h" + p)
    assert out == b"Location: http://h/one/a\r\nRefresh: 5; url=/one/b\r\nX: 1\r\n"


def test_error_pages() -> None:
    pages = ErrorPages(
        (
            ErrorPageSpec((404,), "/404.html?from=x"),
            ErrorPageSpec((404, 500), "@down", status=0),
            ErrorPageSpec((403,), "http://example.org/f", status=301),
            ErrorPageSpec((410,), "http://example.org/g", status=200),
        )
    )
    page = pages.page_for(404)
    assert page is not None and (page.kind, page.target, page.args) == (
        "uri",
        b"/404.html",
        b"from=x",
    )
    assert page.status == 404
    down = pages.page_for(500)
    assert down is not None and down.kind == "named" and down.status == 0
    moved = pages.page_for(403)
    assert moved is not None and moved.kind == "url" and moved.status == 301
    gone = pages.page_for(410)
    assert gone is not None and gone.status == 302
    assert pages.page_for(502) is None and not ErrorPages(())
