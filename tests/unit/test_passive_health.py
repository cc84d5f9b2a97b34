"""Passive health: max_fails within fail_timeout takes a peer out for fail_timeout."""

from __future__ import annotations

from ferryman.health.passive import PassiveHealth


def test_new_peer_is_available() -> None:
    assert PassiveHealth(max_fails=1, fail_timeout=10).is_available(0.0)


def test_max_fails_within_window_marks_down() -> None:
    h = PassiveHealth(max_fails=3, fail_timeout=10)
    h.record_failure(100.0)
    h.record_failure(101.0)
    assert h.is_available(101.5)
    h.record_failure(102.0)
    assert not h.is_available(102.0)
    assert not h.is_available(111.9)


def test_available_again_after_fail_timeout() -> None:
    h = PassiveHealth(max_fails=1, fail_timeout=10)
    h.record_failure(50.0)
    assert not h.is_available(59.9)
    assert h.is_available(60.0)


def test_failures_spread_wider_than_window_do_not_accumulate() -> None:
    h = PassiveHealth(max_fails=2, fail_timeout=10)
    for t in (0.0, 15.0, 30.0, 45.0):
        h.record_failure(t)
        assert h.is_available(t)
    assert h.fails == 1


def test_max_fails_zero_never_marks_down() -> None:
    h = PassiveHealth(max_fails=0, fail_timeout=10)
    for t in range(100):
        h.record_failure(float(t) / 10)
    assert h.is_available(10.0)


def test_success_resets_the_count() -> None:
    h = PassiveHealth(max_fails=2, fail_timeout=10)
    h.record_failure(1.0)
    h.record_success(2.0)
    h.record_failure(3.0)
    assert h.is_available(3.0)
    assert h.fails == 1


def test_reset_makes_a_down_peer_available() -> None:
    h = PassiveHealth(max_fails=1, fail_timeout=10)
    h.record_failure(1.0)
    assert not h.is_available(2.0)
    h.reset()
    assert h.is_available(2.0)
