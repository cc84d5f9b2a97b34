"""Active-health thresholds: turn a stream of probe outcomes into up/down.

Owns only the streak arithmetic (`passes` good probes in a row bring a peer back,
`fails` bad ones in a row take it out). Pure: it knows nothing of sockets, schedules or
clocks; the prober calls `record(ok)` once per finished probe.
"""

from __future__ import annotations

__all__ = ["ProbeState"]


class ProbeState:
    """Up/down state of one peer under active health checks.

    A peer starts healthy: nginx marks peers up when the configuration loads (unless
    `health_check ... mandatory`), so a new peer takes traffic before its first probe.
    """

    __slots__ = ("fails", "healthy", "passes", "streak_fail", "streak_ok")

    def __init__(self, *, passes: int = 1, fails: int = 1, healthy: bool = True) -> None:
        if passes < 1 or fails < 1:
            raise ValueError(f"passes and fails must be >= 1 (got {passes}, {fails})")
        self.passes = passes
        self.fails = fails
        self.healthy = healthy
        # Consecutive outcomes; each resets the other, so only an unbroken run counts.
        self.streak_ok = 0
        self.streak_fail = 0

    def record(self, ok: bool) -> bool:
        """Count one probe outcome; return True when it flipped `healthy`."""
        if ok:
            self.streak_ok += 1
            self.streak_fail = 0
            flip = not self.healthy and self.streak_ok >= self.passes
        else:
            self.streak_fail += 1
            self.streak_ok = 0
            flip = self.healthy and self.streak_fail >= self.fails
        if flip:
            self.healthy = not self.healthy
        return flip

    def __repr__(self) -> str:
        state = "up" if self.healthy else "down"
        return (
            f"<ProbeState {state} ok {self.streak_ok}/{self.passes}"
            f" fail {self.streak_fail}/{self.fails}>"
        )
