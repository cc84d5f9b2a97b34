"""tls/sni.py: which certificate answers which SNI name (pure)."""

from __future__ import annotations

import pytest

from ferryman.tls.sni import SniTable, is_valid_sni_pattern

TABLE = SniTable(
    [
        (["example.com", "www.example.com"], "exact"),
        (["*.example.com"], "wild"),
        (["*.deep.example.com"], "deeper"),
        (["mail.*"], "prefix"),
        (["example.com"], "second-claim"),  # the first to claim a name keeps it
    ],
    "default",
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("example.com", "exact"),
        ("EXAMPLE.com.", "exact"),  # case and a trailing dot do not matter
        ("www.example.com", "exact"),  # exact beats the wildcard
        ("api.example.com", "wild"),
        ("a.b.example.com", "wild"),
        ("x.deep.example.com", "deeper"),  # the longest wildcard wins
        ("mail.example.org", "prefix"),
        ("mail.", "default"),
        ("example.org", "default"),
        ("xexample.com", "default"),  # a suffix match is on a label boundary
        ("", "default"),
        (None, "default"),
    ],
)
def test_select(name: str | None, expected: str) -> None:
    assert TABLE.select(name) == expected


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [
        ("example.com", True),
        ("*.example.com", True),
        ("www.example.*", True),
        ("localhost", True),
        ("", False),
        ("*", False),
        ("a.*.com", False),
        ("**.example.com", False),
        ("exa mple.com", False),
        ("example..com", False),
        ("é.example.com", False),
        ("~^regex$", False),
    ],
)
def test_valid_patterns(pattern: str, valid: bool) -> None:
    assert is_valid_sni_pattern(pattern) is valid
