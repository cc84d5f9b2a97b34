"""proxy/autoindex.py: the listing's bytes, laid out as nginx's autoindex lays them out
(the layout itself is checked against nginx in tests/differential/autoindex.*)."""

from __future__ import annotations

import json
from pathlib import Path

from ferryman.proxy.autoindex import (
    NAME_LEN,
    Entry,
    escape_html,
    escape_uri,
    read_entries,
    render_html,
    render_json,
    rounded_size,
    sort_entries,
)

# 2024-01-02 03:04:05 UTC
T = 1704164645.0


def _file(name: bytes, size: int = 3) -> Entry:
    return Entry(name, is_dir=False, is_file=True, size=size, mtime=T)


def _dir(name: bytes) -> Entry:
    return Entry(name, is_dir=True, is_file=False, size=4096, mtime=T)


def test_directories_come_first_then_names_in_byte_order() -> None:
    entries = [_file(b"b"), _dir(b"z"), _file(b"B"), _dir(b"a")]
    assert [e.name for e in sort_entries(entries)] == [b"a", b"z", b"B", b"b"]


def test_html_page_frame_and_lines() -> None:
    page = render_html(b"/d/", [_file(b"f.txt", 12), _dir(b"sub")])
    lines = page.split(b"\r\n")
    assert lines[:3] == [b"<html>", b"<head><title>Index of /d/</title></head>", b"<body>"]
    assert lines[3] == b'<h1>Index of /d/</h1><hr><pre><a href="../">../</a>'
    pad_dir = b" " * (NAME_LEN - len(b"sub/"))
    assert (
        lines[4] == b'<a href="sub/">sub/</a>' + pad_dir + b" 02-Jan-2024 03:04 " + b" " * 18 + b"-"
    )
    pad_file = b" " * (NAME_LEN - len(b"f.txt"))
    assert (
        lines[5] == b'<a href="f.txt">f.txt</a>' + pad_file + b" 02-Jan-2024 03:04 " + b"%19d" % 12
    )
    assert page.endswith(b"</pre><hr></body>\r\n</html>\r\n")


def test_long_names_are_cut_with_an_ellipsis() -> None:
    name = b"x" * 60
    line = render_html(b"/", [_file(name)]).split(b"\r\n")[4]
    assert line.startswith(b'<a href="' + name + b'">' + b"x" * 47 + b"..&gt;</a> 02-Jan")


def test_names_are_escaped_in_the_link_and_the_text() -> None:
    line = render_html(b"/<x>/", [_file(b'a b&"c<.txt')]).split(b"\r\n")
    assert b"Index of /&lt;x&gt;/" in line[1]
    assert line[4].startswith(b'<a href="a%20b%26%22c%3C.txt">a b&amp;&quot;c&lt;.txt</a>')


def test_escape_uri_keeps_only_unreserved_bytes() -> None:
    assert escape_uri(b"Az09-._~") == b"Az09-._~"
    assert escape_uri(b"!'()*+,;=:@/?#[]\xc3\xa9") == (
        b"%21%27%28%29%2A%2B%2C%3B%3D%3A%40%2F%3F%23%5B%5D%C3%A9"
    )
    assert escape_html(b"plain") == b"plain"


def test_rounded_sizes_as_nginx_prints_them() -> None:
    assert rounded_size(0) == b"      0"
    assert rounded_size(9999) == b"   9999"
    assert rounded_size(10_000) == b"    10K"  # 9.77 KiB rounds up
    assert rounded_size(10_751) == b"    10K"  # remainder 511: down
    assert rounded_size(10_752) == b"    11K"  # remainder 512: up
    assert rounded_size(1024 * 1024) == b"     1M"
    assert rounded_size(3 * 1024 * 1024 + 512 * 1024) == b"     4M"
    assert rounded_size(5 * 1024**3) == b"     5G"
    exact_off = render_html(b"/", [_file(b"f", 20_000), _dir(b"d")], exact_size=False)
    lines = exact_off.split(b"\r\n")
    assert lines[4].endswith(b"03:04       -")
    assert lines[5].endswith(b"03:04     20K")


def test_json_listing() -> None:
    body = render_json([_file(b"f.txt", 5), _dir(b"d"), Entry(b"l", False, False, 0, T)])
    assert body.startswith(b"[\r\n{ ") and body.endswith(b" }\r\n]")
    assert json.loads(body) == [
        {"name": "d", "type": "directory", "mtime": "Tue, 02 Jan 2024 03:04:05 GMT"},
        {"name": "f.txt", "type": "file", "mtime": "Tue, 02 Jan 2024 03:04:05 GMT", "size": 5},
        {"name": "l", "type": "other", "mtime": "Tue, 02 Jan 2024 03:04:05 GMT"},
    ]
    assert render_json([]) == b"[\r\n]"


def test_read_entries_skips_dot_files_and_shows_broken_links(tmp_path: Path) -> None:
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "f").write_text("abc")
    (tmp_path / "d").mkdir()
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    found = {e.name: e for e in read_entries(str(tmp_path).encode())}
    assert set(found) == {b"f", b"d", b"gone"}
    assert found[b"f"].is_file and found[b"f"].size == 3
    assert found[b"d"].is_dir
    assert not found[b"gone"].is_file and not found[b"gone"].is_dir
