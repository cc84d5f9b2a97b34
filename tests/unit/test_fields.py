"""Field-name helpers of http/fields.py against the plain expressions they stand for:
the parsers use them on every field, in place of a lower-cased table lookup, a set
lookup or two method calls, so each must agree with its oracle on every name."""

from __future__ import annotations

import itertools

import pytest

from ferryman.http.fields import (
    HOP_BY_HOP,
    equals_lower,
    is_token_name,
    length_mask,
    names_end_to_end,
    parse_connection_tokens,
)
from ferryman.http.request_parser import PROXY_MANAGED

NAMES = [
    b"Host",
    b"host",
    b"HOST",
    b"hosT",
    b"Date",
    b"Content-Length",
    b"content-length",
    b"CONTENT-LENGTH",
    b"Content_Length",
    b"Content-Lengt",
    b"Content-Lengthh",
    b"Connection",
    b"Transfer-Encoding",
    b"User-Agent",
    b"Referer",
    b"X-Forwarded-For",
    b"-",
    b"--",
    b"a",
    b"9",
    b"x-1",
    b"Accept@",
    b"Host ",
    b"H\xc3\xb6st",
    # Bytes that a careless `| 0x20` would fold onto lower-case letters or '-'.
    b"\x40ate",
    b"[ate",
    b"Content\x0dLength",
    b"Content\x2dLength",
]


@pytest.mark.parametrize("lower", sorted(PROXY_MANAGED | {b"date", b"referer", b"user-agent"}))
def test_equals_lower_is_lower_then_compare(lower: bytes) -> None:
    usual = lower.title()  # b"Content-Length": the spelling compared whole first
    candidates = [*NAMES, lower, lower.upper(), usual, lower.swapcase(), usual[:-1] + b"\xff"]
    for name in candidates:
        assert equals_lower(name, lower, usual) is (name.lower() == lower), name


def test_is_token_name_is_nginx_ignore_invalid_headers() -> None:
    alphabet = [b"a", b"Z", b"0", b"-", b"_", b".", b" ", b"\x00", b"\xe9", b"@", b"[", b"`", b"{"]
    names = [b"".join(p) for n in range(1, 4) for p in itertools.product(alphabet, repeat=n)]
    for name in [*names, *NAMES]:
        assert is_token_name(name) is name.replace(b"-", b"").isalnum(), name


@pytest.mark.parametrize("names", [PROXY_MANAGED, HOP_BY_HOP | {b"date"}])
def test_length_mask_never_rules_out_a_member(names: frozenset[bytes]) -> None:
    mask = length_mask(names)
    for name in names:
        assert (mask >> len(name)) & 1
    lengths = {len(n) for n in names}
    for n in range(0, 80):
        assert bool((mask >> n) & 1) is (n in lengths), n


@pytest.mark.parametrize(
    "value",
    [
        b"keep-alive",
        b"Keep-Alive",
        b"close",
        b"Close",
        b"upgrade",
        b"Upgrade",
        b"keep-alive, upgrade",
        b"close, X-Secret",
        b"te, trailer",
        b"x-forwarded-for",
    ],
)
def test_names_end_to_end_is_the_subset_test(value: bytes) -> None:
    tokens = parse_connection_tokens(value)
    assert names_end_to_end(tokens) is (bool(tokens) and not tokens <= HOP_BY_HOP)


def test_connection_tokens_of_both_spellings_are_one_set() -> None:
    assert parse_connection_tokens(b"keep-alive") is parse_connection_tokens(b"Keep-Alive")
    assert parse_connection_tokens(b"upgrade") is parse_connection_tokens(b"Upgrade")
    assert parse_connection_tokens(b"keep-alive") == frozenset({b"keep-alive"})
    assert names_end_to_end(frozenset()) is False
