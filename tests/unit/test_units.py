"""config/units.py: strict, ASCII-only parsing of durations, sizes and addresses."""

from __future__ import annotations

import pytest

from ferryman.config.units import (
    parse_address,
    parse_duration,
    parse_host_name,
    parse_ip,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("500ms", 0.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("1m30s", 90.0),
        ("1h1m1s1ms", 3661.001),
        ("30", 30.0),
        ("0", 0.0),
        ("0s", 0.0),
        (30, 30.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "+5",
        "-5s",
        "1_0s",
        " 5s",
        "5s ",
        "5 s",
        "\u0665s",  # ARABIC-INDIC DIGIT FIVE
        "30s1m",  # smallest unit first
        "1s1s",  # unit repeated
        "1m30",  # nginx allows a trailing bare number; we don't
        "1.5s",
        "5x",
        "s",
        "1M",  # month in nginx; refused as a trap next to `1m`
        "9" * 16,
        True,
        None,
        [],
        -1,
        float("inf"),
        float("nan"),
    ],
)
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_duration_reason_names_the_value() -> None:
    with pytest.raises(ValueError, match="invalid duration '5x'"):
        parse_duration("5x")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512),
        ("64k", 65536),
        ("64K", 65536),
        ("1m", 1048576),
        ("1M", 1048576),
        ("1g", 1073741824),
        ("1G", 1073741824),
        ("0", 0),
        (4096, 4096),
    ],
)
def test_parse_size_accepts(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", "+1k", "1_024", " 1k", "1kb", "1t", "1.5k", "\uff11k", -1, 1.0, True, None]
)
def test_parse_size_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("server1:3000", ("server1", 3000)),
        ("my_service.local:1", ("my_service.local", 1)),
        ("[::1]:80", ("::1", 80)),
        ("[2001:DB8::1]:65535", ("2001:db8::1", 65535)),
        ("80", (None, 80)),
        ("08080", (None, 8080)),
    ],
)
def test_parse_address_accepts(text: str, expected: tuple[str | None, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "65536",
        "host",  # no port: say so rather than assume 80
        "host:",
        ":80",
        "host:+80",
        "host: 80",
        "host:8_0",
        "host:\u0668\u0660",
        "::1:80",  # IPv6 must be bracketed
        "[::1]",
        "[::1]80",
        "[nope]:80",
        "bad host:80",
        "-host:80",
        "999.1.1.1:80",
        "h\u00e9te:80",
    ],
)
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_parse_address_port_reason() -> None:
    with pytest.raises(ValueError, match="port must be a number from 1 to 65535"):
        parse_address("host:70000")


def test_parse_host_name_and_ip() -> None:
    assert parse_host_name("server1") == "server1"
    assert parse_ip("127.0.0.11") == "127.0.0.11"
    assert parse_ip("2001:DB8::0:1") == "2001:db8::1"
    for bad in ("127.0.0.011", "server1", "1.2.3", "\u0661.2.3.4", ""):
        with pytest.raises(ValueError):
            parse_ip(bad)
