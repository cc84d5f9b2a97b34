"""The rules of serving a file, as nginx's static module and its filters apply them.

Owns:
- the file name of a URI under `root` or `alias` (ngx_http_map_uri_to_path);
- the validators: `ETag` in nginx's format `"<mtime hex>-<size hex>"`
  (ngx_http_set_etag) and `Last-Modified` (RFC 9110 5.6.7 IMF-fixdate);
- conditional requests as ngx_http_not_modified_filter decides them: If-Unmodified-Since
  and If-Match fail with 412; If-Modified-Since matches only the exact time
  (`if_modified_since exact`, nginx's default); If-None-Match compares weakly;
- byte ranges as ngx_http_range_filter parses them: one range -> 206 with
  Content-Range, none satisfiable -> 416, several -> the whole file (nginx would send
  multipart/byteranges; RFC 9110 14.2 lets a server ignore Range), If-Range by exact
  ETag or date;
- `expires` (ngx_http_headers_filter: Expires and Cache-Control).

Pure: no I/O, no clock (time comes in as `now`). Knows nothing about sockets or
exchanges; `serve.py` does the file system work and the writing.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from typing import Final

from ferryman.http.dates import http_date as _http_date

__all__ = [
    "EXPIRES_STATUSES",
    "UNSATISFIABLE",
    "WHOLE",
    "ByteRange",
    "Conditional",
    "check_conditionals",
    "etag",
    "expires_fields",
    "http_date",
    "map_alias",
    "map_root",
    "parse_http_date",
    "parse_range",
]

# ngx_http_headers_filter: `expires` applies to these statuses only.
EXPIRES_STATUSES: Final = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})
# nginx's `expires max` and `expires epoch` (ngx_http_set_expires).
_MAX_EXPIRES: Final = b"Thu, 31 Dec 2037 23:55:55 GMT"
_MAX_AGE: Final = 315360000
_EPOCH: Final = b"Thu, 01 Jan 1970 00:00:01 GMT"
_DIGITS: Final = frozenset(b"0123456789")
# A byte offset past this cannot be a real file's (nginx: NGX_MAX_OFF_T_VALUE).
_MAX_OFFSET: Final = 2**63 - 1


def map_root(root: bytes, uri: bytes) -> bytes:
    """`root`: the file is ROOT + $uri ($uri is normalised: no `..`, no `//`)."""
    return root.rstrip(b"/") + uri if root != b"/" else uri


def map_alias(alias: bytes, uri: bytes, prefix: bytes) -> bytes:
    """`alias` in a prefix location: the matched prefix of $uri is replaced by ALIAS.
    (In a regex location ALIAS, with its captures, is the whole file name: the caller
    uses it as is.)"""
    return alias + uri[len(prefix) :] if uri.startswith(prefix) else alias


def etag(mtime: int, size: int) -> bytes:
    """nginx's ETag: last modification time and length, in hex, quoted."""
    return b'"%x-%x"' % (mtime, size)


def http_date(seconds: float) -> bytes:
    return _http_date(seconds).encode("ascii")


def parse_http_date(value: bytes) -> int | None:
    """An HTTP date (IMF-fixdate, or the obsolete RFC 850 / asctime forms) in seconds;
    None when it is not one."""
    import email.utils  # only for conditional requests: a worker need not load it

    try:
        parsed = email.utils.parsedate_tz(value.decode("latin-1"))
    except (ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return calendar.timegm(parsed[:9]) - (parsed[9] or 0)


class Conditional:
    """What the conditional fields make of a 200: send it, 304, or 412."""

    SEND = 200
    NOT_MODIFIED = 304
    PRECONDITION_FAILED = 412


def check_conditionals(
    mtime: int,
    tag: bytes | None,
    *,
    if_modified_since: bytes | None = None,
    if_none_match: bytes | None = None,
    if_unmodified_since: bytes | None = None,
    if_match: bytes | None = None,
) -> int:
    """One of Conditional's codes, in ngx_http_not_modified_header_filter's order."""
    if if_unmodified_since is not None:
        when = parse_http_date(if_unmodified_since)
        if when is None or when < mtime:
            return Conditional.PRECONDITION_FAILED
    if if_match is not None and not _etag_matches(if_match, tag, weak=False):
        return Conditional.PRECONDITION_FAILED
    if if_modified_since is None and if_none_match is None:
        return Conditional.SEND
    if if_modified_since is not None and parse_http_date(if_modified_since) != mtime:
        return Conditional.SEND
    if if_none_match is not None and not _etag_matches(if_none_match, tag, weak=True):
        return Conditional.SEND
    return Conditional.NOT_MODIFIED


def _etag_matches(field: bytes, tag: bytes | None, *, weak: bool) -> bool:
    """ngx_http_test_if_match: `*`, or one of the listed tags equals ours (weakly: W/
    prefixes ignored on both sides)."""
    if field == b"*":
        return True
    if tag is None:
        return False
    if weak:
        tag = tag.removeprefix(b"W/")
    for item in field.split(b","):
        item = item.strip(b" \t")
        if weak:
            item = item.removeprefix(b"W/")
        if item == tag:
            return True
    return False


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes [start, end) of the file."""

    start: int
    end: int

    def content_range(self, size: int) -> bytes:
        return b"bytes %d-%d/%d" % (self.start, self.end - 1, size)


# parse_range's answers besides a ByteRange: send the whole file, or 416.
WHOLE: Final = "whole"
UNSATISFIABLE: Final = "unsatisfiable"


def parse_range(
    field: bytes | None,
    size: int,
    *,
    if_range: bytes | None = None,
    tag: bytes | None = None,
    mtime: int | None = None,
) -> ByteRange | str:
    """A Range field for a file of `size` bytes: a ByteRange (206), WHOLE (200) or
    UNSATISFIABLE (416), as ngx_http_range_header_filter and ngx_http_range_parse."""
    if field is None or len(field) < 7 or field[:6].lower() != b"bytes=":
        return WHOLE
    if if_range is not None and not _if_range_holds(if_range, tag, mtime):
        return WHOLE
    ranges = _parse_ranges(field[6:], size)
    if isinstance(ranges, str):
        return ranges
    if not ranges:
        return UNSATISFIABLE
    if len(ranges) > 1 or ranges[0].end - ranges[0].start > size:
        # Several ranges: nginx answers multipart/byteranges; Ferryman sends the whole
        # file, which RFC 9110 14.2 allows ("a server MAY ignore the Range field").
        return WHOLE
    return ranges[0]


def _if_range_holds(if_range: bytes, tag: bytes | None, mtime: int | None) -> bool:
    if len(if_range) >= 2 and if_range.endswith(b'"'):
        return tag is not None and if_range == tag
    return mtime is not None and parse_http_date(if_range) == mtime


def _parse_ranges(spec: bytes, size: int) -> list[ByteRange] | str:
    """The range set after `bytes=`, nginx's way: spaces allowed around numbers, a
    malformed set is 416, a range that starts past the end is skipped, `0-` of an
    empty file (or a sum over the size) sends the whole file."""
    out: list[ByteRange] = []
    total = 0
    for raw in spec.split(b","):
        item = raw.strip(b" ")
        first, dash, last = item.partition(b"-")
        first, last = first.strip(b" "), last.strip(b" ")
        if not dash or (not first and not last):
            return UNSATISFIABLE
        if not _is_number(first or b"0") or (last and not _is_number(last)):
            return UNSATISFIABLE
        if not first:  # a suffix: the last N bytes
            suffix = int(last)
            start, end = (size - suffix if suffix < size else 0), size
        else:
            start = int(first)
            end = size if not last else min(int(last) + 1, size)
        if start < end:
            out.append(ByteRange(start, end))
            total += end - start
        elif start == 0:
            return WHOLE
    if total > size:
        return WHOLE
    return out


def _is_number(text: bytes) -> bool:
    # Digits only (int() alone would take "+5", "1_0" or " 5"), and no more than an
    # offset can hold: nginx answers 416 to an overflow.
    return bool(text) and all(c in _DIGITS for c in text) and len(text) <= 18


def expires_fields(expires: float | str | None, now: float) -> bytes:
    """The Expires and Cache-Control lines of nginx's `expires`."""
    if expires is None:
        return b""
    if expires == "epoch":
        return b"Expires: %s\r\nCache-Control: no-cache\r\n" % _EPOCH
    if expires == "max":
        return b"Expires: %s\r\nCache-Control: max-age=%d\r\n" % (_MAX_EXPIRES, _MAX_AGE)
    seconds = int(float(expires))
    line = b"Expires: %s\r\n" % http_date(int(now) + seconds)
    if seconds < 0:
        return line + b"Cache-Control: no-cache\r\n"
    return line + b"Cache-Control: max-age=%d\r\n" % seconds
