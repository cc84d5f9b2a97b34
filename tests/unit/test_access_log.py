"""Access log: the pure formatters, byte for byte, and the buffered file sink."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ferryman.observability.access_log import (
    FLUSH_ENTRIES,
    AccessLog,
    Entry,
    format_combined,
    format_json,
)

STAMP = "10/Oct/2000:13:55:36 -0700"


def entry(**overrides: object) -> Entry:
    fields: dict[str, object] = {
        "remote_addr": b"127.0.0.1",
        "time": 971211336.0,
        "request_line": b"GET /apache_pb.gif HTTP/1.0",
        "status": 200,
        "body_bytes": 2326,
        "referer": b"http://www.example.com/start.html",
        "user_agent": b"Mozilla/4.08 [en] (Win98; I ;Nav)",
        "upstream": "10.0.0.1:8080",
        "request_time": 0.0123,
        "upstream_time": 0.0101,
    }
    fields.update(overrides)
    return Entry(**fields)  # type: ignore[arg-type]


# ---- format_combined ----


def test_combined_exact_bytes() -> None:
    assert format_combined(entry(), STAMP) == (
        b'127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
        b'"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"\n'
    )


def test_combined_dash_for_empty_referer_and_user_agent() -> None:
    line = format_combined(entry(referer=b"", user_agent=b"", status=404, body_bytes=0), STAMP)
    assert line == (
        b'127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 404 0 "-" "-"\n'
    )


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        (b'say "hi"', b"say \\x22hi\\x22"),
        (b"back\\slash", b"back\\x5Cslash"),
        (b"tab\there", b"tab\\x09here"),
        (b"nl\r\nx", b"nl\\x0D\\x0Ax"),
        (b"nul\x00", b"nul\\x00"),
        (b"del\x7f", b"del\\x7F"),
        (b"caf\xc3\xa9", b"caf\\xC3\\xA9"),
        (b"\xff", b"\\xFF"),
        (
            b"plain ~!#$%&'()*+,-./:;<=>?@[]^_`{|} text",
            b"plain ~!#$%&'()*+,-./:;<=>?@[]^_`{|} text",
        ),
    ],
)
def test_combined_escapes_quote_backslash_control_and_non_ascii(raw: bytes, escaped: bytes) -> None:
    line = format_combined(entry(user_agent=raw), STAMP)
    assert line.endswith(b' "' + escaped + b'"\n')


def test_every_byte_is_escaped_exactly_when_nginx_would() -> None:
    # One byte at a time, alone and inside plain text: the check that lets a line skip
    # escaping (a translate table) must agree with the escaping itself.
    for c in range(256):
        byte = bytes([c])
        needs = c < 0x20 or c > 0x7E or byte in (b'"', b"\\")
        for raw in (byte, b"GET /" + byte + b" HTTP/1.1"):
            line = format_combined(entry(request_line=raw), STAMP)
            assert (b"\\x%02X" % c in line) is needs, raw


def test_combined_escapes_every_untrusted_field() -> None:
    e = entry(
        remote_addr=b'1"2',
        request_line=b'GET /"\x01 HTTP/1.1',
        referer=b"\x1b[31m",
        user_agent=b"a\\b",
    )
    assert format_combined(e, STAMP) == (
        b"1\\x222 - - [10/Oct/2000:13:55:36 -0700] "
        b'"GET /\\x22\\x01 HTTP/1.1" 200 2326 "\\x1B[31m" "a\\x5Cb"\n'
    )


def test_combined_line_is_one_line_whatever_the_input() -> None:
    e = entry(request_line=b"GET /\n\r HTTP/1.1", referer=b"\n", user_agent=b"\r\n")
    line = format_combined(e, STAMP)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert b"\r" not in line


def test_combined_formats_local_time_when_not_given() -> None:
    e = entry()
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(e.time))
    assert format_combined(e) == format_combined(e, stamp)
    assert b"[" + stamp.encode() + b"]" in format_combined(e)


# ---- format_json ----


def test_json_is_one_valid_object_per_line_with_expected_keys() -> None:
    line = format_json(entry(user_agent=b'ua "quoted" \xe9'), STAMP)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    obj = json.loads(line)
    assert set(obj) == {
        "time",
        "remote_addr",
        "request",
        "status",
        "body_bytes_sent",
        "http_referer",
        "http_user_agent",
        "upstream_addr",
        "request_time",
        "upstream_response_time",
    }
    assert obj["remote_addr"] == "127.0.0.1"
    assert obj["request"] == "GET /apache_pb.gif HTTP/1.0"
    assert obj["status"] == 200
    assert obj["body_bytes_sent"] == 2326
    assert obj["http_referer"] == "http://www.example.com/start.html"
    assert obj["http_user_agent"] == 'ua "quoted" \xe9'
    assert obj["upstream_addr"] == "10.0.0.1:8080"
    assert obj["request_time"] == 0.012
    assert obj["upstream_response_time"] == 0.01
    assert obj["time"] == time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(971211336.0))


def test_json_empty_fields_stay_empty_strings() -> None:
    obj = json.loads(format_json(entry(referer=b"", user_agent=b"", upstream=""), None))
    assert obj["http_referer"] == "" and obj["http_user_agent"] == ""
    assert obj["upstream_addr"] == ""


# ---- AccessLog sink ----


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_record_buffers_until_flush(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    try:
        assert log.enabled
        e1 = entry()
        e2 = entry(time=e1.time + 1.5, status=502, request_line=b"POST /x HTTP/1.1")
        log.record(e1)
        log.record(e2)
        assert path.read_bytes() == b""  # nothing written on the hot path
        log.flush()
        assert read_lines(path) == [format_combined(e1), format_combined(e2)]
        log.flush()  # nothing new: nothing written
        assert len(read_lines(path)) == 2
    finally:
        log.close()


def test_record_escapes_as_format_combined_does(tmp_path: Path) -> None:
    # The sink renders combined lines itself (a direct call, the time stamp as bytes):
    # the same bytes as the formatter, escaping included, field by field.
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    entries = [
        entry(),
        entry(referer=b"", user_agent=b""),
        entry(remote_addr=b'1"2'),
        entry(request_line=b"GET /\xff HTTP/1.1"),
        entry(referer=b"a\\b"),
        entry(user_agent=b"x\ny"),
        entry(user_agent=b'"', referer=b'"'),
    ]
    try:
        for e in entries:
            log.record(e)
        log.flush()
        assert read_lines(path) == [format_combined(e) for e in entries]
        assert b"1\\x222 - - [" in path.read_bytes()
    finally:
        log.close()


def test_flush_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_bytes(b"old line\n")
    log = AccessLog(str(path))
    log.record(entry())
    log.close()
    assert read_lines(path) == [b"old line\n", format_combined(entry())]


def test_json_format_sink(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    log = AccessLog(str(path), "json")
    log.record(entry())
    log.record(entry(status=404))
    log.close()
    lines = read_lines(path)
    assert [json.loads(line)["status"] for line in lines] == [200, 404]


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        AccessLog(str(tmp_path / "x.log"), "nope")


def test_close_flushes_and_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    log.record(entry())
    log.close()
    assert read_lines(path) == [format_combined(entry())]
    log.close()  # closing twice is harmless
    assert read_lines(path) == [format_combined(entry())]


def test_large_buffer_flushes_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    try:
        for i in range(FLUSH_ENTRIES - 1):
            log.record(entry(body_bytes=i))
        assert path.read_bytes() == b""
        log.record(entry(body_bytes=FLUSH_ENTRIES - 1))
        lines = read_lines(path)
        assert len(lines) == FLUSH_ENTRIES
        assert lines[-1] == format_combined(entry(body_bytes=FLUSH_ENTRIES - 1))
    finally:
        log.close()


def test_path_none_is_disabled() -> None:
    log = AccessLog(None)
    assert log.enabled is False
    # Recording into a disabled log must not raise, nor write anywhere.
    log.record(entry())
    log.flush()
    log.close()


def test_dash_writes_to_stdout_and_does_not_close_it(capfd: pytest.CaptureFixture[str]) -> None:
    log = AccessLog("-")
    assert log.enabled
    log.record(entry())
    log.close()
    out = capfd.readouterr().out
    assert out.encode() == format_combined(entry())
    os.fstat(1)  # still open


def test_wall_time_is_the_wall_clock_of_a_monotonic_reading() -> None:
    # The exchange logs `wall_time(its monotonic end)`: one clock call fewer a request.
    log = AccessLog(None)
    now = time.monotonic()
    assert abs(log.wall_time(now) - time.time()) < 0.05
    # Later readings within the second reuse the offset, and still track the clock.
    assert abs(log.wall_time(now + 0.5) - (time.time() + 0.5)) < 0.05
    # Past the second it is read again.
    later = time.monotonic() + 2.0
    assert abs(log.wall_time(later) - (time.time() + 2.0)) < 0.05
