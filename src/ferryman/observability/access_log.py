"""The access log: a pure formatter per format, and a buffered sink.

Each entry is formatted when it is recorded, after its response was written (the time
stamp once a second), and the lines are buffered: written every sweeper tick, or when
64 are waiting. Each flush is one os.write, so lines from several workers never
interleave mid-line.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from typing import Any, Final

from ferryman.errors import ConfigError

__all__ = [
    "FLUSH_ENTRIES",
    "AccessLog",
    "Entry",
    "format_combined",
    "format_json",
    "open_access_log",
]

# Lines written at once when this many are buffered (else on the tick). Each entry is
# formatted when recorded, after its response was written: formatting a whole batch
# at flush time held the request behind it (512 entries: about 0.3 ms), which showed
# in the one-connection p99.
FLUSH_ENTRIES: Final = 64  # Final: compiled, a static rather than a dict lookup


class Entry:
    """One request's access-log fields, recorded on the hot path and formatted at flush.
    A plain slotted class rather than a NamedTuple: compiled, it is built by a direct
    call instead of a Python-level type call."""

    __slots__ = (
        "body_bytes",
        "referer",
        "remote_addr",
        "request_line",
        "request_time",
        "status",
        "time",
        "upstream",
        "upstream_time",
        "user_agent",
    )

    def __init__(
        self,
        remote_addr: bytes,
        time: float,  # wall clock, seconds
        request_line: bytes,
        status: int,
        body_bytes: int,
        referer: bytes,
        user_agent: bytes,
        upstream: str,
        request_time: float,
        upstream_time: float,
    ) -> None:
        self.remote_addr = remote_addr
        self.time = time
        self.request_line = request_line
        self.status = status
        self.body_bytes = body_bytes
        self.referer = referer
        self.user_agent = user_agent
        self.upstream = upstream
        self.request_time = request_time
        self.upstream_time = upstream_time


_NEEDS_ESCAPE = re.compile(rb'[^\x20-\x7e]|["\\]')
_SAFE: Final = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')
# A translate table that keeps the bytes that need no escaping and changes every other.
_SAFE_CHECK: Final = bytes(c if c in _SAFE else c ^ 1 for c in range(256))


def _plain(b: bytes) -> bool:
    """Whether `b` has no byte that log_format escapes: one C pass of bytes.translate
    (a mypyc primitive with a bytes table), which returns `b` itself when the table
    changes nothing, so the comparison is a pointer check. Its fixed cost (a result
    allocated, then dropped) is a native byte loop's over about 15 bytes; a user agent
    is 100 or more. translate(None, safe), a deletion, has no compiled fast path."""
    return not b or b.translate(_SAFE_CHECK) == b


def _escape(b: bytes) -> bytes:
    """nginx escapes `"`, `\\` and bytes outside printable ASCII as \\xHH in log_format."""
    if _plain(b):
        return b
    return _NEEDS_ESCAPE.sub(lambda m: b"\\x%02X" % m.group()[0], b)


def _local_time(t: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(t))


def format_combined(e: Entry, local_time: str | None = None) -> bytes:
    """nginx's predefined `combined` format; `local_time` may be passed pre-formatted
    (the sink formats each second once)."""
    return _combined(e, (local_time or _local_time(e.time)).encode())


def _combined(e: Entry, stamp: bytes) -> bytes:
    # Nearly every line needs no escaping: its variable fields are checked first, and
    # the line is formatted once. (The stamp is the sink's own.)
    if (
        _plain(e.remote_addr)
        and _plain(e.request_line)
        and _plain(e.referer)
        and _plain(e.user_agent)
    ):
        return b'%s - - [%s] "%s" %d %d "%s" "%s"\n' % (
            e.remote_addr,
            stamp,
            e.request_line,
            e.status,
            e.body_bytes,
            e.referer or b"-",
            e.user_agent or b"-",
        )
    return b'%s - - [%s] "%s" %d %d "%s" "%s"\n' % (
        _escape(e.remote_addr),
        stamp,
        _escape(e.request_line),
        e.status,
        e.body_bytes,
        _escape(e.referer) if e.referer else b"-",
        _escape(e.user_agent) if e.user_agent else b"-",
    )


def format_json(e: Entry, local_time: str | None = None) -> bytes:
    return (
        json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(e.time)),
                "remote_addr": e.remote_addr.decode("latin-1"),
                "request": e.request_line.decode("latin-1"),
                "status": e.status,
                "body_bytes_sent": e.body_bytes,
                "http_referer": e.referer.decode("latin-1"),
                "http_user_agent": e.user_agent.decode("latin-1"),
                "upstream_addr": e.upstream,
                "request_time": round(e.request_time, 3),
                "upstream_response_time": round(e.upstream_time, 3),
            },
            separators=(",", ":"),
        )
        + "\n"
    ).encode()


FORMATS: dict[str, Callable[[Entry, str | None], bytes]] = {
    "combined": format_combined,
    "json": format_json,
}


class AccessLog:
    """`custom`, when given, renders a whole line from the request context (a compiled
    nginx log_format); the built-in formats render an `Entry`."""

    __slots__ = (
        "_combined",
        "_fd",
        "_fmt",
        "_lines",
        "_offset",
        "_offset_until",
        "_owns_fd",
        "_path",
        "_second",
        "_stamp",
        "_stamp_bytes",
        "custom",
        "enabled",
    )

    def __init__(
        self,
        path: str | None,
        fmt: str = "combined",
        custom: Callable[[Any], bytes] | None = None,
        fd: int | None = None,
    ) -> None:
        """`fd`: the file `path` names, already open (the master opens it for its
        workers, open_access_log); None: opened here."""
        self.enabled = path is not None
        self.custom = custom
        # A custom format renders lines itself; otherwise the name must be a built-in.
        self._fmt = format_combined if custom is not None else FORMATS[fmt]
        self._combined = self._fmt is format_combined
        self._lines: list[bytes] = []
        # The local-time stamp of the current second, formatted once per second.
        self._second = -1
        self._stamp = ""
        self._stamp_bytes = b""
        # Wall clock minus monotonic, read once a second (`wall_time`).
        self._offset = 0.0
        self._offset_until = -1.0
        self._owns_fd = False
        self._path = path
        if path is None:
            self._fd = -1
        elif path == "-":
            self._fd = 1
        else:
            self._fd = fd if fd is not None else _open(path)
            self._owns_fd = True

    def wall_time(self, now: float) -> float:
        """The wall-clock time of the monotonic reading `now`, from an offset read once
        a second: a clock call fewer per request. A step of the wall clock shows within
        the second (nginx, too, logs a time it caches and updates as it goes)."""
        if now >= self._offset_until:
            self._offset = time.time() - time.monotonic()
            self._offset_until = now + 1.0
        return now + self._offset

    def record(self, entry: Entry) -> None:
        second = int(entry.time)
        if second != self._second:
            self._second = second
            self._stamp = _local_time(entry.time)
            self._stamp_bytes = self._stamp.encode()
        if self._combined:
            # A direct call where the format is the usual one (the compiled build calls
            # a function held in an attribute by the generic protocol).
            self.record_line(_combined(entry, self._stamp_bytes))
        else:
            self.record_line(self._fmt(entry, self._stamp))

    def record_line(self, line: bytes) -> None:
        self._lines.append(line)
        if len(self._lines) >= FLUSH_ENTRIES:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self._write(b"".join(lines))

    def _write(self, data: bytes) -> None:
        try:
            while data:
                n = os.write(self._fd, data)
                data = data[n:]
        except BlockingIOError:
            pass  # a stalled log reader must not stall the proxy
        except OSError:
            pass

    def reopen(self) -> None:
        """nginx's USR1 (logrotate): what is buffered goes to the file as it was, then
        the path is opened anew, so a moved file gets no new lines. If the path cannot
        be opened, the old file stays in use (nginx keeps the old one too)."""
        self.flush()
        if not self._owns_fd or self._path is None:
            return
        try:
            fd = _open(self._path)
        except OSError:
            return
        old, self._fd = self._fd, fd
        os.close(old)

    def close(self) -> None:
        self.flush()
        if self._owns_fd:
            os.close(self._fd)
            self._owns_fd = False


def open_access_log(path: str | None, source: str) -> int | None:
    """The access log file `path` names, opened for appending (created if need be);
    None for no log or stdout. ConfigError naming the configuration if it cannot be."""
    if path is None or path == "-":
        return None
    try:
        return _open(path)
    except OSError as exc:
        raise ConfigError(
            f"{source}: access_log.path", f"cannot open {path}: {exc.strerror}"
        ) from None


def _open(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
