"""One coarse timer per worker instead of a timer handle per request.

Connections keep a plain float `deadline` (0 = none) and move it as they change phase,
which costs an attribute store; a periodic tick calls `on_timeout()` on those whose
deadline has passed. Timeouts therefore fire up to one tick late, which is fine for
timeouts measured in seconds. (nginx uses a timer tree; HAProxy wakes tasks in a
timer wheel; the per-request `call_later` alternative showed up in profiles.)

The tick also runs `periodic` callbacks, e.g. the access log flush.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

__all__ = ["Sweeper", "Timed"]

_log = logging.getLogger(__name__)


class Timed(Protocol):
    deadline: float

    def on_timeout(self) -> None: ...


class Sweeper:
    __slots__ = ("_handle", "_items", "_loop", "_periodic", "now", "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = 0.1) -> None:
        self._loop = loop
        self.tick = tick
        self._items: set[Timed] = set()
        self._periodic: list[Callable[[], None]] = []
        self._handle: asyncio.TimerHandle | None = None
        # Refreshed every tick; deadlines are computed from it to avoid a clock call
        # per event. Coarse by at most one tick.
        self.now = loop.time()

    def start(self) -> None:
        self.now = self._loop.time()
        self._handle = self._loop.call_later(self.tick, self._run)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def add(self, item: Timed) -> None:
        self._items.add(item)

    def discard(self, item: Timed) -> None:
        self._items.discard(item)

    def every_tick(self, fn: Callable[[], None]) -> None:
        self._periodic.append(fn)

    def __len__(self) -> int:
        return len(self._items)

    def _run(self) -> None:
        # Rescheduled first: whatever fails below, the worker's timers keep ticking.
        self._handle = self._loop.call_later(self.tick, self._run)
        now = self.now = self._loop.time()
        expired = [i for i in self._items if 0.0 < i.deadline <= now]
        for item in expired:
            item.deadline = 0.0
            try:
                item.on_timeout()
            except Exception:  # a bug in one connection must not stop every timer
                _log.exception("timeout handler failed for %r", item)
        for fn in self._periodic:
            try:
                fn()
            except Exception:
                _log.exception("periodic task %r failed", fn)

    def __repr__(self) -> str:
        return f"Sweeper(tick={self.tick}s items={len(self._items)})"
