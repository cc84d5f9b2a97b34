"""Passive health: `max_fails` failures within `fail_timeout` take a peer out for
`fail_timeout` (nginx semantics). Pure: time comes in as `now`."""

from __future__ import annotations

__all__ = ["PassiveHealth"]


class PassiveHealth:
    __slots__ = ("fail_timeout", "fails", "last_failure", "max_fails", "unavailable_until")

    def __init__(self, max_fails: int, fail_timeout: float) -> None:
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self.fails = 0
        self.last_failure = float("-inf")
        # The moment the peer may be used again; -inf while it is available. Kept as a
        # plain number so the hot path compares a float instead of calling a method.
        self.unavailable_until = float("-inf")

    def is_available(self, now: float) -> bool:
        return now >= self.unavailable_until

    def record_failure(self, now: float) -> None:
        # Failures count within a window of fail_timeout; an old streak starts over.
        if now - self.last_failure >= self.fail_timeout:
            self.fails = 0
        self.fails += 1
        self.last_failure = now
        # max_fails=0 disables accounting (nginx).
        if self.max_fails and self.fails >= self.max_fails:
            self.unavailable_until = now + self.fail_timeout

    def record_success(self, now: float) -> None:
        if self.fails:
            self.reset()

    def reset(self) -> None:
        self.fails = 0
        self.unavailable_until = float("-inf")

    def __repr__(self) -> str:
        return f"PassiveHealth(fails={self.fails}/{self.max_fails} window={self.fail_timeout}s)"
