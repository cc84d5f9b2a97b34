"""The error log: nginx's levels, its line format, and files that reopen on USR1.

Owns how a `logging.LogRecord` becomes an error-log line. Under `ferryman nginx` (and
for every nginx.conf run) lines read as nginx writes them, so log alerts written for
nginx keep firing:

    2026/01/01 12:00:00 [error] 4242#4242: *17 connect() failed (111: Connection
    refused) while connecting to upstream, client: 127.0.0.1, server: example,
    request: "GET / HTTP/1.1", upstream: "http://127.0.0.1:1/", host: "example"

The request context travels in the record's `extra=` fields (`CONTEXT_FIELDS`; see
`context()`), so the code that logs never formats it and native configurations keep
their own format (`NativeFormatter`, which shows the same context in its own words).
Knows nothing about sockets, requests or configuration objects.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

__all__ = [
    "CONTEXT_FIELDS",
    "LEVELS",
    "NativeFormatter",
    "NginxFormatter",
    "ReopeningFileHandler",
    "context",
    "install",
    "level_name",
    "reopen_all",
]

# nginx's levels, least severe first, as Python logging numbers. notice, alert and emerg
# fall between (or above) Python's own so that `error_log FILE notice` lets INFO out
# and `error_log FILE crit` keeps ERROR in.
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": 25,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "crit": logging.CRITICAL,
    "alert": 55,
    "emerg": 60,
}
_BY_NUMBER = sorted((number, name) for name, number in LEVELS.items())

# The context nginx appends to a request's error lines, in its order
# (ngx_http_log_error_handler): client, server, request, upstream, host. `cid` is the
# connection number printed as `*N` before the message.
CONTEXT_FIELDS = ("client", "server", "request", "upstream", "host")
_QUOTED = frozenset({"request", "upstream", "host"})


def level_name(levelno: int) -> str:
    """The nginx level of a record: the most severe one at or below its number."""
    name = "debug"
    for number, candidate in _BY_NUMBER:
        if levelno >= number:
            name = candidate
    return name


def context(
    cid: int = 0,
    client: str | None = None,
    server: str | None = None,
    request: str | None = None,
    upstream: str | None = None,
    host: str | None = None,
    nginx: str | None = None,
) -> dict[str, Any]:
    """The `extra=` mapping for a log call about one request (None: not known).
    `nginx` is the message in nginx's words where Ferryman's own differ (the nginx
    format prints it instead of the record's message)."""
    out: dict[str, Any] = {"cid": cid}
    if nginx is not None:
        out["nginx"] = nginx
    for key, value in (
        ("client", client),
        ("server", server),
        ("request", request),
        ("upstream", upstream),
        ("host", host),
    ):
        if value is not None:
            out[key] = value
    return out


def _context_suffix(record: logging.LogRecord) -> str:
    parts = []
    for key in CONTEXT_FIELDS:
        value = getattr(record, key, None)
        if value is None:
            continue
        parts.append(f'{key}: "{value}"' if key in _QUOTED else f"{key}: {value}")
    return "".join(", " + part for part in parts)


class NginxFormatter(logging.Formatter):
    """`YYYY/MM/DD HH:MM:SS [level] PID#TID: *CID message, client: ..., host: "..."`."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        # nginx's TID is the thread's id, the PID's own in a single-threaded process.
        tid = getattr(record, "thread_native_id", None) or threading.get_native_id()
        cid = getattr(record, "cid", 0)
        conn = f"*{cid} " if cid else ""
        line = (
            f"{stamp} [{level_name(record.levelno)}] {record.process}#{tid}: "
            f"{conn}{getattr(record, 'nginx', None) or record.getMessage()}"
            f"{_context_suffix(record)}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class NativeFormatter(logging.Formatter):
    """Ferryman's own format, with the request context (when there is one) appended."""

    def __init__(self, with_process: bool = False) -> None:
        process = " %(process)d:" if with_process else ""
        super().__init__(f"%(asctime)s [%(levelname)s]{process} %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record) + _context_suffix(record)


class ReopeningFileHandler(logging.FileHandler):
    """A log file that `reopen()` opens again by name: after logrotate moved it, the
    next lines go to a new file at the configured path (nginx's USR1)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
            if old is not None:
                old.close()
        finally:
            self.release()


def name_levels() -> None:
    """Give nginx's levels that Python lacks (notice, crit, alert, emerg) their names,
    so a notice logs as NOTICE rather than "Level 25"."""
    for name, number in LEVELS.items():
        if logging.getLevelName(number).startswith("Level "):
            logging.addLevelName(number, name.upper())


def install(target: str, level: str, nginx_format: bool) -> logging.Handler:
    """Make `target` ("stderr" or a path) the root logger's only handler at `level`.
    Raises OSError when the file cannot be opened."""
    handler: logging.Handler
    if target == "stderr":
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = ReopeningFileHandler(target, encoding="utf-8")
    handler.setFormatter(NginxFormatter() if nginx_format else NativeFormatter(True))
    name_levels()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.ERROR))
    return handler


def reopen_all() -> None:
    """Reopen every file the root logger writes to (USR1)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopeningFileHandler):
            handler.reopen()
