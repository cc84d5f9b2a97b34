"""nginx's `$uri` (ngx_http_parse_complex_uri, merge_slashes on) and ngx_escape_uri."""

from __future__ import annotations

import pytest

from ferryman.errors import ProtocolError
from ferryman.http.uri import encode_args, encode_path, normalize_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", b"/"),
        (b"", b"/"),
        (b"/a/b", b"/a/b"),
        (b"/a/b/", b"/a/b/"),
        (b"//a//b/", b"/a/b/"),
        (b"///", b"/"),
        (b"/a/./b", b"/a/b"),
        (b"/a/.", b"/a/"),
        (b"/.", b"/"),
        (b"/a/..", b"/"),
        (b"/a/b/..", b"/a/"),
        (b"/a/b/../c", b"/a/c"),
        (b"/a/b/../../c", b"/c"),
        (b"/a//..", b"/"),
        (b"/a/../../", None),
        (b"/..", None),
        (b"/./..", None),
        (b"/...", b"/..."),
        (b"/a/.../b", b"/a/.../b"),
        (b"/.hidden/..x", b"/.hidden/..x"),
        (b"/a.", b"/a."),
        # Decoded `.` and `/` carry structure, as in nginx.
        (b"/a/%2e%2e/b", b"/b"),
        (b"/a/%2E/b", b"/a/b"),
        (b"/%2e%2e", None),
        (b"/%2F", b"/"),
        (b"/a%2F%2Fb", b"/a/b"),
        (b"/a%2f..", b"/"),
        # Decoded `%`, `?` and `#` are plain bytes.
        (b"/a%25b", b"/a%b"),
        (b"/a%3Fb", b"/a?b"),
        (b"/a%23b", b"/a#b"),
        (b"/%41%62c", b"/Abc"),
        (b"/caf%C3%A9", b"/caf\xc3\xa9"),
        (b"/caf\xc3\xa9", b"/caf\xc3\xa9"),
        (b"/a+b%20c", b"/a+b c"),
    ],
)
def test_normalize_path(raw: bytes, expected: bytes | None) -> None:
    if expected is None:
        with pytest.raises(ProtocolError) as info:
            normalize_path(raw)
        assert info.value.status == 400
    else:
        assert normalize_path(raw) == expected


@pytest.mark.parametrize("raw", [b"/%zz", b"/%", b"/a%4", b"/%4g", b"/%g4", b"/%+1", b"/% 1"])
def test_invalid_percent_escapes_are_400(raw: bytes) -> None:
    with pytest.raises(ProtocolError, match="percent-encoding") as info:
        normalize_path(raw)
    assert info.value.status == 400


def test_nul_is_400() -> None:
    with pytest.raises(ProtocolError, match="NUL") as info:
        normalize_path(b"/a%00b")
    assert info.value.status == 400


def test_path_must_start_with_a_slash() -> None:
    with pytest.raises(ProtocolError):
        normalize_path(b"a/b")
    with pytest.raises(ProtocolError):
        normalize_path(b"*")


def test_fast_path_returns_the_same_object() -> None:
    raw = b"/api/v1/users/42"
    assert normalize_path(raw) is raw


# ---- escaping ----


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/a/b", b"/a/b"),
        (b"/a b", b"/a%20b"),
        (b"/a%b", b"/a%25b"),
        (b"/a?b#c", b"/a%3Fb%23c"),
        (b'/"<>\\^`{|}', b"/%22%3C%3E%5C%5E%60%7B%7C%7D"),
        (b"/\x00\x1f\x7f", b"/%00%1F%7F"),
        (b"/caf\xc3\xa9", b"/caf%C3%A9"),
        # RFC 3986 unreserved, gen-delims and sub-delims stay.
        (b"/-._~:@[]!$&'()*+,;=", b"/-._~:@[]!$&'()*+,;="),
    ],
)
def test_encode_path(path: bytes, expected: bytes) -> None:
    assert encode_path(path) == expected


def test_encode_path_fast_path_returns_the_same_object() -> None:
    path = b"/api/v1"
    assert encode_path(path) is path


def test_encode_args_also_escapes_argument_separators() -> None:
    assert encode_args(b"a&b+c;d=e f") == b"a%26b%2Bc%3Bd=e%20f"
    assert encode_args(b"plain") == b"plain"


def test_round_trip() -> None:
    for raw in (b"/a%20b/%C3%A9", b"/x%25y", b"/q%3Fz"):
        assert encode_path(normalize_path(raw)) == raw
    # Escapes come back upper-case, and needless ones decoded.
    assert encode_path(normalize_path(b"/%c3%a9%41")) == b"/%C3%A9A"
