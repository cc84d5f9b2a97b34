"""Serving files from disk: nginx's content phase for a location with `root` or `alias`
(ngx_http_try_files, ngx_http_index, ngx_http_static handlers, in that order).

Owns the file-system side: which name to open for $uri, what `try_files` and `index`
find, the answer for a missing (404), unreadable (403) or directory (301 to the slash
form; 403 without an index) name, and writing the file: the head, then the body in
bounded reads that stop while the client is not reading (backpressure through
Exchange.client_paused) and never hold the whole file. The rules that need no disk
(validators, conditionals, ranges, expires) are policy.py's.

A body over one CHUNK, to an HTTP/1 client on a uvloop plain TCP or Unix transport,
is written whole as a view of the file's mapping (file_views.py): no read into the
worker, as nginx's sendfile. Otherwise (TLS, HTTP/2, the stock loop, a small body) it is
read with os.pread on the event loop, as nginx reads without `aio`. loop.sendfile is not
used: uvloop has no sendfile for its transports.

Symbolic links are followed (nginx's `disable_symlinks off`); $uri never climbs out
of the root, because it is normalised (no `..`, no `//`) before it gets here.
Knows nothing about upstreams.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from typing import TYPE_CHECKING, Any, Final

from ferryman.config.schema import StaticSpec
from ferryman.http.serialize import status_line
from ferryman.proxy import autoindex
from ferryman.proxy.mime import BUILTIN_TYPES, content_type, type_table
from ferryman.proxy.route import render_add_headers
from ferryman.proxy.static import policy
from ferryman.proxy.variables import Template, compile_template

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ferryman.proxy.exchange import Exchange

__all__ = ["CHUNK", "FileResponse", "StaticFiles"]

_log: Final = logging.getLogger(__name__)

# One read per write: large enough to keep syscalls few, small enough that a worker
# serving many slow clients holds little (nginx's output_buffers default is 32k x 1).
CHUNK: Final = 64 * 1024
# errno -> status, as ngx_http_static_handler maps open() failures.
_NOT_FOUND: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG})
_FORBIDDEN: Final = frozenset({errno.EACCES, errno.EPERM})
_READ_METHODS: Final = frozenset({b"GET", b"HEAD", b"POST"})


def _render(template: Template, ex: Any) -> bytes:
    return template if isinstance(template, bytes) else template(ex)


class StaticFiles:
    """A route's static settings, compiled once: templates, the type table."""

    __slots__ = (
        "alias",
        "autoindex",
        "default_type",
        "etag",
        "expires",
        "index",
        "prefix",
        "regex",
        "root",
        "try_files",
        "types",
    )

    def __init__(
        self,
        spec: StaticSpec,
        prefix: bytes,
        regex: bool,
        where: str,
        user_vars: frozenset[str],
    ) -> None:
        def tpl(text: str, key: str) -> Template:
            return compile_template(text, f"{where}.static.{key}", user_vars)

        self.root = tpl(spec.root, "root") if spec.root is not None else None
        self.alias = tpl(spec.alias, "alias") if spec.alias is not None else None
        self.prefix = prefix
        # nginx: alias in a regex location is the whole file name (with captures).
        self.regex = regex
        self.index = tuple(tpl(name, "index") for name in spec.index)
        self.try_files = tuple(tpl(item, "try_files") for item in spec.try_files)
        self.etag = spec.etag
        self.expires = spec.expires
        self.types: Mapping[bytes, bytes] = (
            BUILTIN_TYPES if spec.types is None else type_table(spec.types)
        )
        self.default_type = spec.default_type.encode()
        # nginx autoindex (proxy/autoindex.py): None when off.
        self.autoindex: tuple[str, bool, bool] | None = (
            (spec.autoindex_format, spec.autoindex_exact_size, spec.autoindex_localtime)
            if spec.autoindex
            else None
        )

    def __repr__(self) -> str:
        kind = "alias" if self.alias is not None else "root"
        return f"StaticFiles({kind}, prefix={self.prefix!r})"

    # ---- the content phase ----

    def serve(self, ex: Exchange) -> None:
        """Answer `ex` from disk (or move it elsewhere: try_files, index, error_page)."""
        if self.try_files and not ex.tried_files:
            ex.tried_files = True
            if not self._try_files(ex):
                return
        method = ex.method
        if method not in _READ_METHODS:
            ex.respond_error(405)
        elif ex.uri.endswith(b"/"):
            self._index(ex)
        else:
            self._file(ex, method)

    def path_for(self, ex: Exchange, uri: bytes) -> bytes:
        """The file name of `uri` (ngx_http_map_uri_to_path)."""
        if self.alias is None:
            assert self.root is not None
            return policy.map_root(_render(self.root, ex), uri)
        alias = _render(self.alias, ex)
        return alias if self.regex else policy.map_alias(alias, uri, self.prefix)

    def _try_files(self, ex: Exchange) -> bool:
        """nginx try_files: the first name that exists becomes $uri (True: serve it);
        else the last parameter decides (False: answered or redirected)."""
        *names, last = self.try_files
        for template in names:
            name = _render(template, ex)
            if not name:
                continue
            path = self.path_for(ex, name)
            want_dir = name.endswith(b"/")
            kind = _kind(path.rstrip(b"/") if want_dir else path)
            if (want_dir and kind == "dir") or (not want_dir and kind == "file"):
                ex.uri = name
                return True
        target = _render(last, ex)
        if target.startswith(b"="):
            code = target[1:]
            status = int(code) if code.isdigit() and len(code) <= 3 else 500
            ex.respond_error(status)
        elif target.startswith(b"@"):
            ex.named_redirect(target)
        else:
            uri, _, args = target.partition(b"?")
            ex.internal_redirect(uri, args if args else ex.args)
        return False

    def _index(self, ex: Exchange) -> None:
        """ngx_http_index_handler: an internal redirect to the first index file that
        exists; 404 when the directory itself is missing, 403 otherwise."""
        directory = self.path_for(ex, ex.uri)
        dir_checked = False
        for template in self.index:
            name = _render(template, ex)
            if name.startswith(b"/"):
                ex.internal_redirect(name, ex.args)  # nginx: an absolute index is last
                return
            try:
                st = os.stat(directory + name)
            except OSError as exc:
                if exc.errno in _FORBIDDEN:
                    self._log_denied(ex, directory + name)
                    ex.respond_error(403)
                    return
                if not dir_checked:
                    dir_checked = True
                    status = _directory_status(directory)
                    if status:
                        ex.respond_error(status)
                        return
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            ex.internal_redirect(ex.uri + name, ex.args)
            return
        if not dir_checked and _directory_status(directory):
            ex.respond_error(_directory_status(directory))
            return
        if self.autoindex is not None and ex.method in (b"GET", b"HEAD"):
            self._list(ex, directory)
            return
        _log.error('directory index of "%s" is forbidden', directory.decode("latin-1"))
        ex.respond_error(403)

    def _list(self, ex: Exchange, directory: bytes) -> None:
        """nginx autoindex: the directory's listing (403 when it cannot be read)."""
        assert self.autoindex is not None
        form, exact_size, localtime = self.autoindex
        try:
            entries = autoindex.read_entries(directory)
        except OSError as exc:
            _log.error('opendir() "%s" failed (%s)', directory.decode("latin-1"), exc.strerror)
            ex.respond_error(403 if exc.errno in _FORBIDDEN else 404)
            return
        if form == "json":
            autoindex.send_listing(ex, autoindex.render_json(entries), b"application/json")
        else:
            page = autoindex.render_html(
                ex.uri, entries, exact_size=exact_size, localtime=localtime
            )
            autoindex.send_listing(ex, page, b"text/html")

    def _file(self, ex: Exchange, method: bytes) -> None:
        path = self.path_for(ex, ex.uri)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self._open_failed(ex, path, exc)
            return
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            self._open_failed(ex, path, exc)
            return
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            target = ex.uri + b"/"
            ex.respond_return(301, target + b"?" + ex.args if ex.args else target)
            return
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            _log.error('"%s" is not a regular file', path.decode("latin-1"))
            ex.respond_error(404)
            return
        if method == b"POST":
            os.close(fd)
            ex.respond_error(405)
            return
        FileResponse(self, ex, fd, st).send()

    def _open_failed(self, ex: Exchange, path: bytes, exc: OSError) -> None:
        if exc.errno in _NOT_FOUND:
            _log.error('open() "%s" failed (%s)', path.decode("latin-1"), exc.strerror)
            ex.respond_error(404)
        elif exc.errno in _FORBIDDEN:
            self._log_denied(ex, path)
            ex.respond_error(403)
        else:
            _log.error('open() "%s" failed (%s)', path.decode("latin-1"), exc.strerror)
            ex.respond_error(500)

    @staticmethod
    def _log_denied(ex: Exchange, path: bytes) -> None:
        _log.error('open() "%s" failed (13: Permission denied)', path.decode("latin-1"))


def _kind(path: bytes) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return ""
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def _directory_status(directory: bytes) -> int:
    """ngx_http_index_test_dir: 0 when the directory is there, else 404 or 403."""
    try:
        st = os.stat(directory)
    except OSError as exc:
        return 403 if exc.errno in _FORBIDDEN else 404
    return 0 if stat.S_ISDIR(st.st_mode) else 404


class FileResponse:
    """One file's answer: the head by the policy's rules, then the body: a view of the
    file's mapping, or CHUNKs read as the client takes them."""

    __slots__ = ("ex", "fd", "keep", "offset", "remaining", "st", "static")

    def __init__(self, static: StaticFiles, ex: Exchange, fd: int, st: os.stat_result) -> None:
        self.static = static
        self.ex = ex
        self.fd = fd
        self.st = st
        self.offset = 0
        self.remaining = 0
        self.keep = False

    def send(self) -> None:
        ex, st, static = self.ex, self.st, self.static
        mtime, size = int(st.st_mtime), st.st_size
        tag = policy.etag(mtime, size) if static.etag else None
        # An error page served from a file keeps the error's status (nginx err_status).
        status = ex.error_status or 200
        # nginx's header filter sends Last-Modified with 200, 206 and 304 only.
        fields = [b"Last-Modified: %s\r\n" % policy.http_date(mtime)] if status == 200 else []
        if ex.error_status:
            fields.append(ex.error_headers)  # a denial's WWW-Authenticate, Retry-After
        if tag is not None:
            fields.append(b"ETag: %s\r\n" % tag)
        start, end = 0, size
        if status == 200:
            head = ex.head
            verdict = policy.check_conditionals(
                mtime,
                tag,
                if_modified_since=head.header(b"if-modified-since"),
                if_none_match=head.header(b"if-none-match"),
                if_unmodified_since=head.header(b"if-unmodified-since"),
                if_match=head.header(b"if-match"),
            )
            if verdict == policy.Conditional.PRECONDITION_FAILED:
                self.close()
                ex.respond_error(412)
                return
            if verdict == policy.Conditional.NOT_MODIFIED:
                self.close()
                self._write_head(304, b"".join(fields), None, b"")
                self._end()
                return
            chosen = policy.parse_range(
                head.header(b"range"),
                size,
                if_range=head.header(b"if-range"),
                tag=tag,
                mtime=mtime,
            )
            if chosen == policy.UNSATISFIABLE:
                self.close()
                ex.respond_error(416, b"Content-Range: bytes */%d\r\n" % size)
                return
            if isinstance(chosen, policy.ByteRange):
                status, start, end = 206, chosen.start, chosen.end
                fields.append(b"Content-Range: %s\r\n" % chosen.content_range(size))
            else:
                fields.append(b"Accept-Ranges: bytes\r\n")
        ctype = content_type(ex.uri, static.types, static.default_type)
        self._write_head(status, b"".join(fields), end - start, ctype)
        if ex.method == b"HEAD" or end == start:
            self.close()
            self._end()
            return
        h1 = ex.h1
        if (
            end - start > CHUNK
            and h1 is not None
            and not h1.is_write_paused
            and h1.takes_mapped_views
        ):
            # The region as a view of the file's mapping, written whole: the kernel
            # copies from the page cache, as nginx's sendfile (file_views.py). The
            # worker keeps the mapping for the next request of this file. A file
            # shrunk under it meanwhile cuts the body short and closes the connection,
            # as the reads below do.
            worker = ex.client.worker
            view = worker.mapped_files.region(self.fd, start, end, worker.sweeper.now)
            if view is not None:  # else (out of mappings) the reads below
                self.close()
                ex.body_bytes += len(view)
                h1.write_mapped(view)
                self._end()
                return
        self.offset, self.remaining = start, end - start
        ex.sender = self
        self.pump()

    def _write_head(self, status: int, fields: bytes, length: int | None, ctype: bytes) -> None:
        ex = self.ex
        route = ex.route
        self.keep = ex.head.keep_alive and ex.body_done and not ex.client.worker.draining
        out = [status_line(status), ex.client.worker.date_line]
        if ctype:
            out.append(b"Content-Type: %s\r\n" % ctype)
        if length is not None:
            out.append(b"Content-Length: %d\r\n" % length)
        out.append(fields)
        if status in policy.EXPIRES_STATUSES:
            out.append(policy.expires_fields(self.static.expires, time.time()))
        if route is not None and route.add_headers:
            out.append(render_add_headers(route.add_headers, status, ex))
        if self.keep:
            out.append(ex.client.worker.keepalive_line)  # keepalive_timeout T HEADER_T
        out.append(b"Connection: keep-alive\r\n\r\n" if self.keep else b"Connection: close\r\n\r\n")
        ex.status = status
        ex.client.write(b"".join(out))

    def pump(self) -> None:
        """Write the body while the client reads; called again when it drains."""
        ex = self.ex
        client = ex.client
        while self.remaining > 0:
            if ex.finished and ex.sender is None:
                return
            if client.is_write_paused:
                return
            try:
                data = os.pread(self.fd, min(CHUNK, self.remaining), self.offset)
            except OSError as exc:
                data = b""
                _log.error("reading a served file failed: %s", exc)
            if not data:
                # The file shrank (or failed) after its length went out: the client
                # must not take a short body for a whole one.
                self.close()
                ex.truncated("served file shrank while it was sent")
                return
            self.offset += len(data)
            self.remaining -= len(data)
            ex.body_bytes += len(data)
            client.write(data)
        self.close()
        self._end()

    def _end(self) -> None:
        ex = self.ex
        ex.sender = None
        ex.end_local(self.keep)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"FileResponse(fd={self.fd}, remaining={self.remaining})"
