"""nginx `map`: exact strings (case-insensitive), then regexes in order, then default."""

from __future__ import annotations

import pytest

from ferryman.config.schema import MapSpec
from ferryman.proxy.maps import CompiledMap, MapResult


def compiled(*entries: tuple[str, str], default: str = "") -> CompiledMap:
    return CompiledMap(MapSpec("$http_host", "backend", tuple(entries), default))


def test_exact_match() -> None:
    m = compiled(("example.com", "a"), ("other.com", "b"), default="d")
    assert m.evaluate("example.com") == ("a", ())
    assert m.evaluate("other.com") == ("b", ())
    assert m.evaluate("nope") == ("d", ())


def test_exact_match_is_case_insensitive_both_ways() -> None:
    m = compiled(("Example.COM", "a"))
    assert m.evaluate("example.com") == ("a", ())
    assert m.evaluate("EXAMPLE.com") == ("a", ())


def test_case_folding_is_ascii_only() -> None:
    m = compiled(("straße", "a"), ("É", "e"))
    assert m.evaluate("STRAßE") == ("a", ())
    assert m.evaluate("é") == ("", ())  # ngx_tolower leaves non-ASCII alone
    assert m.evaluate("É") == ("e", ())


def test_default_is_empty_when_not_given() -> None:
    assert compiled(("a", "1")).evaluate("b") == ("", ())


def test_exact_beats_regex_whatever_the_order() -> None:
    m = compiled(("~^api", "regex"), ("api.example.com", "exact"))
    assert m.evaluate("api.example.com") == ("exact", ())
    assert m.evaluate("api.other.com") == ("regex", ())


def test_regexes_in_order_first_match_wins() -> None:
    m = compiled(("~^a", "first"), ("~^ab", "second"))
    assert m.evaluate("abc") == ("first", ())
    m = compiled(("~^ab", "first"), ("~^a", "second"))
    assert m.evaluate("abc") == ("first", ())
    assert m.evaluate("ax") == ("second", ())


def test_regex_case_sensitivity() -> None:
    m = compiled(("~^Mozilla", "cs"), ("~*curl", "ci"), default="none")
    assert m.evaluate("Mozilla/5.0") == ("cs", ())
    assert m.evaluate("mozilla/5.0") == ("none", ())
    assert m.evaluate("CURL/8") == ("ci", ())


def test_regex_captures_and_value_template_are_returned_raw() -> None:
    m = compiled((r"~^(?<sub>[^.]+)\.(example)\.com$", "$sub.$2.backend"))
    assert m.evaluate("shop.example.com") == ("$sub.$2.backend", ("shop", "example"))
    assert m.lookup("shop.example.com") == MapResult(
        "$sub.$2.backend", ("shop", "example"), (("sub", "shop"),)
    )


def test_regex_is_a_search() -> None:
    assert compiled(("~bot", "yes")).evaluate("Googlebot/2.1") == ("yes", ())


def test_empty_source_value_never_tries_regexes() -> None:
    m = compiled(("~.*", "any"), default="d")
    assert m.evaluate("") == ("d", ())
    assert compiled(("", "empty"), ("~.*", "any")).evaluate("") == ("empty", ())


def test_backslash_makes_a_literal_key() -> None:
    m = compiled(("\\~tilde", "t"), ("\\default", "literal default"), default="d")
    assert m.evaluate("~tilde") == ("t", ())
    assert m.evaluate("default") == ("literal default", ())
    assert m.evaluate("~TILDE") == ("t", ())


def test_conflicting_keys_are_refused() -> None:
    with pytest.raises(ValueError, match='conflicting parameter "A"'):
        compiled(("a", "1"), ("A", "2"))


def test_bad_regex_is_refused() -> None:
    with pytest.raises(ValueError, match="compilation failed"):
        compiled(("~(", "x"))


def test_repr_and_names() -> None:
    m = compiled(("a", "1"), ("~b", "2"))
    assert m.source == "$http_host" and m.variable == "backend"
    assert repr(m) == "CompiledMap($http_host -> $backend: 1 exact, 1 regex)"
