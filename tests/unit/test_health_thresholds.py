"""health/thresholds.py: consecutive-outcome streaks flip a peer down and back up."""

from __future__ import annotations

import pytest

from ferryman.health.thresholds import ProbeState


def run(state: ProbeState, outcomes: str) -> list[bool]:
    """Feed 'P'/'F' outcomes; return the flip flag of each."""
    return [state.record(c == "P") for c in outcomes]


def test_starts_healthy() -> None:
    assert ProbeState(passes=2, fails=3).healthy


def test_fails_in_a_row_take_it_down_once() -> None:
    s = ProbeState(passes=2, fails=3)
    assert run(s, "FFFFF") == [False, False, True, False, False]
    assert not s.healthy


def test_passes_in_a_row_bring_it_back_once() -> None:
    s = ProbeState(passes=2, fails=3)
    run(s, "FFF")
    assert run(s, "PPP") == [False, True, False]
    assert s.healthy


def test_a_success_resets_the_failure_streak() -> None:
    s = ProbeState(passes=2, fails=3)
    assert run(s, "FFPFF") == [False] * 5
    assert s.healthy
    assert s.record(False)  # the third in a row since the success


def test_a_failure_resets_the_success_streak() -> None:
    s = ProbeState(passes=2, fails=3)
    run(s, "FFF")
    assert run(s, "PFPF") == [False] * 4
    assert not s.healthy
    assert run(s, "PP") == [False, True]


def test_flapping_never_flips() -> None:
    s = ProbeState(passes=2, fails=2)
    assert not any(run(s, "FPFPFPFP"))
    assert s.healthy
    run(s, "FF")
    assert not any(run(s, "PFPFPF"))
    assert not s.healthy


def test_successes_while_healthy_do_not_flip() -> None:
    s = ProbeState(passes=1, fails=1)
    assert run(s, "PPP") == [False] * 3


def test_one_and_one_follows_every_outcome() -> None:
    s = ProbeState()
    assert run(s, "FPFFP") == [True, True, True, False, True]


def test_rejects_zero_thresholds() -> None:
    with pytest.raises(ValueError):
        ProbeState(passes=0, fails=1)
    with pytest.raises(ValueError):
        ProbeState(passes=1, fails=0)


def test_repr_shows_state_and_streaks() -> None:
    s = ProbeState(passes=2, fails=3)
    run(s, "FF")
    assert repr(s) == "<ProbeState up ok 0/2 fail 2/3>"
    run(s, "FP")
    assert repr(s) == "<ProbeState down ok 1/2 fail 0/3>"
