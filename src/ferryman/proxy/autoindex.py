"""Directory listings: nginx's `autoindex on` (ngx_http_autoindex_module), for a
directory of a static route that has no index file.

Owns the listing's bytes: which entries show (no dot files), their order (directories
first, then byte order of names), the HTML page laid out as nginx lays it out (names
padded or cut to 50 columns, `dd-Mon-yyyy hh:mm`, exact or rounded sizes), and the
`autoindex_format json` array. `render_html`, `render_json`, `escape_uri` and
`rounded_size` are pure (times come in as numbers); `read_entries` is the one that
reads the disk, and `send_listing` writes the answer through the exchange. Knows
nothing about index files or try_files (serve.py decides when a listing is due).
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ferryman.http.dates import http_date
from ferryman.http.serialize import CHUNKED_END, chunk, status_line
from ferryman.proxy.route import render_add_headers

if TYPE_CHECKING:
    from ferryman.proxy.exchange import Exchange

__all__ = [
    "NAME_LEN",
    "Entry",
    "escape_html",
    "escape_uri",
    "read_entries",
    "render_html",
    "render_json",
    "rounded_size",
    "send_listing",
    "sort_entries",
]

# NGX_HTTP_AUTOINDEX_NAME_LEN: the column names are padded (or cut) to.
NAME_LEN: Final = 50
_MONTHS: Final = tuple(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())
# nginx's NGX_ESCAPE_URI_COMPONENT keeps only these bytes as they are in an href.
_URI_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HTML_ESCAPES: Final = {ord("<"): b"&lt;", ord(">"): b"&gt;", ord("&"): b"&amp;"}
_HTML_ESCAPES[ord('"')] = b"&quot;"
_KIB: Final = 1024
_MIB: Final = 1024 * 1024
_GIB: Final = 1024 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a directory, as the listing shows it."""

    name: bytes
    is_dir: bool
    is_file: bool
    size: int
    mtime: float


def sort_entries(entries: Iterable[Entry]) -> list[Entry]:
    """ngx_http_autoindex_cmp_entries: directories first, then names byte by byte."""
    return sorted(entries, key=lambda e: (not e.is_dir, e.name))


def escape_uri(name: bytes) -> bytes:
    """A name as an href path segment (nginx NGX_ESCAPE_URI_COMPONENT, upper-case hex)."""
    return b"".join(bytes((c,)) if c in _URI_SAFE else b"%%%02X" % c for c in name)


def escape_html(text: bytes) -> bytes:
    """ngx_escape_html: <, >, & and " as entities."""
    if not any(c in _HTML_ESCAPES for c in text):
        return text
    return b"".join(_HTML_ESCAPES.get(c, bytes((c,))) for c in text)


def rounded_size(size: int) -> bytes:
    """`autoindex_exact_size off`: the 7-column size nginx prints (K, M, G rounded
    half up; below 10000 bytes, the number)."""
    for unit, scale in ((_GIB, b"G"), (_MIB, b"M")):
        if size > unit - 1:
            return b"%6d%s" % (size // unit + (size % unit > unit // 2 - 1), scale)
    if size > 9999:
        return b"%6dK" % (size // _KIB + (size % _KIB > 511))
    return b" %6d" % size


def _when(mtime: float, localtime: bool) -> bytes:
    tm = time.localtime(mtime) if localtime else time.gmtime(mtime)
    return b"%02d-%s-%d %02d:%02d" % (
        tm.tm_mday,
        _MONTHS[tm.tm_mon - 1],
        tm.tm_year,
        tm.tm_hour,
        tm.tm_min,
    )


def _html_line(entry: Entry, exact_size: bool, localtime: bool) -> bytes:
    name = entry.name
    slash = b"/" if entry.is_dir else b""
    length = len(name)
    if length > NAME_LEN:
        # nginx cuts a long name to 47 bytes and ends the link text with "..>".
        text = escape_html(name[: NAME_LEN - 3]) + b"..&gt;</a>"
    else:
        # A directory's name gets its "/" when the column has room for it.
        mark = slash if length < NAME_LEN else b""
        text = escape_html(name) + mark + b"</a>" + b" " * (NAME_LEN - length - len(mark))
    if entry.is_dir:
        size = b"                  -" if exact_size else b"      -"
    else:
        size = b"%19d" % entry.size if exact_size else rounded_size(entry.size)
    return b'<a href="%s%s">%s %s %s\r\n' % (
        escape_uri(name),
        slash,
        text,
        _when(entry.mtime, localtime),
        size,
    )


def render_html(
    uri: bytes, entries: Iterable[Entry], *, exact_size: bool = True, localtime: bool = False
) -> bytes:
    """The listing page of `uri` (the decoded path, ending in "/"), as nginx's."""
    title = escape_html(uri)
    lines = [
        b"<html>\r\n<head><title>Index of %s</title></head>\r\n<body>\r\n" % title,
        b'<h1>Index of %s</h1><hr><pre><a href="../">../</a>\r\n' % title,
    ]
    lines.extend(_html_line(e, exact_size, localtime) for e in sort_entries(entries))
    lines.append(b"</pre><hr></body>\r\n</html>\r\n")
    return b"".join(lines)


def render_json(entries: Iterable[Entry]) -> bytes:
    """`autoindex_format json`: nginx's array of {name, type, mtime[, size]}."""
    items = []
    for e in sort_entries(entries):
        name = json.dumps(e.name.decode("utf-8", "surrogateescape"), ensure_ascii=False)
        kind = "directory" if e.is_dir else "file" if e.is_file else "other"
        mtime = http_date(e.mtime)
        size = f', "size":{e.size}' if e.is_file else ""
        text = f'{{ "name":{name}, "type":"{kind}", "mtime":"{mtime}"{size} }}'
        items.append(text.encode("utf-8", "surrogateescape"))
    body = b",\r\n".join(items)
    return b"[\r\n" + (body + b"\r\n" if items else b"") + b"]"


def read_entries(directory: bytes) -> list[Entry]:
    """The directory's entries but dot files; a name whose target is gone (a broken
    link) shows with the link's own information, as nginx shows it. Raises OSError
    when the directory cannot be read."""
    out = []
    with os.scandir(directory) as it:
        for d in it:
            name = d.name
            if name.startswith(b"."):
                continue
            try:
                st = os.stat(d.path)
            except OSError:
                try:
                    st = os.lstat(d.path)
                except OSError:
                    continue  # gone between the listing and the look
            out.append(
                Entry(
                    name=name,
                    is_dir=stat.S_ISDIR(st.st_mode),
                    is_file=stat.S_ISREG(st.st_mode),
                    size=st.st_size,
                    mtime=st.st_mtime,
                )
            )
    return out


def send_listing(
    ex: Exchange, body: bytes, content_type: bytes, *, keep_wanted: bool = True
) -> None:
    """Write a listing: 200, no length (nginx builds it as it goes, so HTTP/1.1 gets it
    chunked and HTTP/1.0 until close); a HEAD gets the head only."""
    head_only = ex.method == b"HEAD"
    http11 = ex.head.version == b"1.1"
    worker = ex.client.worker
    keep = (
        keep_wanted
        and (http11 or head_only)
        and ex.head.keep_alive
        and ex.body_done
        and not worker.draining
    )
    out = [status_line(200), worker.date_line, b"Content-Type: %s\r\n" % content_type]
    if http11 and not head_only:
        out.append(b"Transfer-Encoding: chunked\r\n")
    route = ex.route
    if route is not None and route.add_headers:
        out.append(render_add_headers(route.add_headers, 200, ex))
    if keep:
        out.append(worker.keepalive_line)
    out.append(b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n")
    if not head_only:
        out.append(chunk(body) + CHUNKED_END if http11 else body)
        ex.body_bytes += len(body)
    ex.status = 200
    ex.client.write(b"".join(out))
    ex.end_local(keep)
