"""The error log's nginx line format, levels and reopening (observability/error_log.py)."""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

from ferryman.observability.error_log import (
    LEVELS,
    NativeFormatter,
    NginxFormatter,
    ReopeningFileHandler,
    context,
    level_name,
)


def _record(level: int, message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("ferryman.proxy", level, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_request_line_has_nginx_shape_and_context_order() -> None:
    extra = context(
        cid=17,
        client="127.0.0.1",
        server="example",
        request="GET /x HTTP/1.1",
        upstream="http://127.0.0.1:1/x",
        host="h.example",
        nginx="connect() failed (111: Connection refused) while connecting to upstream",
    )
    line = NginxFormatter().format(_record(logging.ERROR, "our own words", **extra))
    pid, tid = os.getpid(), threading.get_native_id()
    assert re.fullmatch(
        rf"\d{{4}}/\d\d/\d\d \d\d:\d\d:\d\d \[error\] {pid}#{tid}: \*17 connect\(\) failed "
        r"\(111: Connection refused\) while connecting to upstream, client: 127\.0\.0\.1, "
        r'server: example, request: "GET /x HTTP/1\.1", upstream: "http://127\.0\.0\.1:1/x", '
        r'host: "h\.example"',
        line,
    ), line


def test_a_line_without_context_has_no_connection_number() -> None:
    line = NginxFormatter().format(_record(LEVELS["notice"], "reopening logs"))
    assert line.endswith(f"[notice] {os.getpid()}#{threading.get_native_id()}: reopening logs")


def test_unknown_context_fields_are_left_out() -> None:
    extra = context(cid=3, client="10.0.0.1", server="", request="GET / HTTP/1.0")
    line = NginxFormatter().format(_record(logging.ERROR, "x", **extra))
    assert line.endswith(': *3 x, client: 10.0.0.1, server: , request: "GET / HTTP/1.0"')


def test_levels_map_as_nginx_names_them() -> None:
    assert [level_name(n) for n in sorted(LEVELS.values())] == list(LEVELS)
    assert level_name(logging.INFO) == "info"
    assert level_name(logging.WARNING) == "warn"
    assert level_name(logging.CRITICAL) == "crit"
    assert level_name(5) == "debug"
    assert level_name(100) == "emerg"


def test_native_format_keeps_its_words_and_adds_the_context() -> None:
    extra = context(cid=2, client="127.0.0.1", request="GET / HTTP/1.1", nginx="nginx words")
    line = NativeFormatter().format(_record(logging.ERROR, "our own words", **extra))
    assert "[ERROR] ferryman.proxy: our own words" in line
    assert line.endswith(', client: 127.0.0.1, request: "GET / HTTP/1.1"')
    assert "nginx words" not in line


def test_reopen_follows_the_path_after_a_move(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    handler = ReopeningFileHandler(str(path))
    handler.setFormatter(NginxFormatter())
    try:
        handler.emit(_record(logging.ERROR, "before"))
        path.rename(tmp_path / "error.log.1")
        handler.emit(_record(logging.ERROR, "still the old file"))
        handler.reopen()
        handler.emit(_record(logging.ERROR, "after"))
    finally:
        handler.close()
    old = (tmp_path / "error.log.1").read_text()
    assert "before" in old and "still the old file" in old and "after" not in old
    assert "after" in path.read_text() and "before" not in path.read_text()
