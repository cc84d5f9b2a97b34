"""Passive health: `max_fails` failures within `fail_timeout` take a peer out for
`fail_timeout` (nginx semantics). Pure: time comes in as `now`."""

from __future__ import annotations

__all__ = ["PassiveHealth"]


class PassiveHealth:
    __slots__ = ("fail_timeout", "fails", "last_failure", "max_fails")

    def __init__(self, max_fails: int, fail_timeout: float) -> None:
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self.fails = 0
        self.last_failure = float("-inf")

    def is_available(self, now: float) -> bool:
        # max_fails=0 disables accounting (nginx).
        if self.max_fails == 0 or self.fails < self.max_fails:
            return True
        return now - self.last_failure >= self.fail_timeout

    def record_failure(self, now: float) -> None:
        # Failures count within a window of fail_timeout; an old streak starts over.
        if now - self.last_failure >= self.fail_timeout:
            self.fails = 0
        self.fails += 1
        self.last_failure = now

    def record_success(self, now: float) -> None:
        self.fails = 0

    def reset(self) -> None:
        self.fails = 0

    def __repr__(self) -> str:
        return f"PassiveHealth(fails={self.fails}/{self.max_fails} window={self.fail_timeout}s)"
