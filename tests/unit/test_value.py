"""`Value`: the equality, hash and repr the per-request value classes take from it
(a dataclass's, without its interpreted constructor)."""

from __future__ import annotations

from ferryman.cache.policy import CacheControl, parse_cache_control
from ferryman.proxy.maps import MapResult
from ferryman.proxy.script import ScriptOutcome


def test_equal_by_fields_and_hashed_alike() -> None:
    a = ScriptOutcome("/a", uri_changed=True, flag="last")
    b = ScriptOutcome("/a", uri_changed=True, flag="last")
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != ScriptOutcome("/a", uri_changed=True, flag="break")
    assert a != ScriptOutcome("/b", uri_changed=True, flag="last")


def test_every_field_counts() -> None:
    base = CacheControl()
    other: dict[object, object] = {None: 7.0, False: True, (): (b"x",)}
    for name in CacheControl.FIELDS:
        changed = CacheControl(**{name: other[getattr(base, name)]})  # type: ignore[arg-type]
        assert changed != base, name
    assert parse_cache_control([(b"Cache-Control", b"public, max-age=60")]) == CacheControl(
        max_age=60.0, public=True
    )


def test_different_classes_are_never_equal() -> None:
    # Same field values, different classes: unequal, as two dataclasses would be.
    assert MapResult("x") != ScriptOutcome("x")
    assert MapResult("x") != ("x", (), ())


def test_repr_names_the_class_and_each_field() -> None:
    assert repr(MapResult("v", ("a",))) == "MapResult(value='v', captures=('a',), named=())"
    assert repr(ScriptOutcome("/x")).startswith("ScriptOutcome(uri='/x', args=None, ")
