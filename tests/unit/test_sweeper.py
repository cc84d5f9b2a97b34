"""Sweeper: one coarse timer per worker. Runs a real event loop, briefly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from ferryman.server.sweeper import Sweeper

TICK = 0.01


class Item:
    def __init__(self, deadline: float, name: str = "item", fail: bool = False) -> None:
        self.deadline = deadline
        self.name = name
        self.fail = fail
        self.fired = 0
        self.deadline_seen: list[float] = []

    def on_timeout(self) -> None:
        self.fired += 1
        self.deadline_seen.append(self.deadline)
        if self.fail:
            raise RuntimeError(f"{self.name} handler bug")

    def __repr__(self) -> str:
        return f"Item({self.name})"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    try:
        yield lp
    finally:
        lp.close()


def run_for(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


def run_ticks(loop: asyncio.AbstractEventLoop, sweeper: Sweeper, n: int) -> list[int]:
    """Run until `n` ticks have happened (bounded by a generous timeout)."""
    ticks: list[int] = []
    done = loop.create_future()

    def count() -> None:
        ticks.append(1)
        if len(ticks) >= n and not done.done():
            done.set_result(None)

    sweeper.every_tick(count)
    loop.run_until_complete(asyncio.wait_for(done, timeout=5.0))
    return ticks


def test_expired_item_fires_once_and_deadline_is_reset(loop: asyncio.AbstractEventLoop) -> None:
    sw = Sweeper(loop, tick=TICK)
    item = Item(deadline=loop.time() - 1.0)
    sw.add(item)
    sw.start()
    run_ticks(loop, sw, 4)
    sw.stop()
    assert item.fired == 1
    assert item.deadline_seen == [0.0]  # reset before the handler runs
    assert item.deadline == 0.0


def test_item_fires_once_its_deadline_passes(loop: asyncio.AbstractEventLoop) -> None:
    sw = Sweeper(loop, tick=TICK)
    deadline = loop.time() + 5 * TICK
    item = Item(deadline=deadline)
    sw.add(item)
    # (now, fired) at each tick, after the items were swept.
    seen: list[tuple[float, int]] = []
    sw.every_tick(lambda: seen.append((sw.now, item.fired)))
    sw.start()
    run_for(loop, 15 * TICK)
    sw.stop()
    assert item.fired == 1
    assert item.deadline == 0.0
    assert all(fired == 0 for now, fired in seen if now < deadline)
    assert all(fired == 1 for now, fired in seen if now >= deadline)
    assert any(now >= deadline for now, _ in seen)


def test_zero_deadline_never_fires(loop: asyncio.AbstractEventLoop) -> None:
    sw = Sweeper(loop, tick=TICK)
    idle = Item(deadline=0.0)
    future = Item(deadline=loop.time() + 3600.0)
    sw.add(idle)
    sw.add(future)
    sw.start()
    run_ticks(loop, sw, 5)
    sw.stop()
    assert idle.fired == 0
    assert future.fired == 0
    assert future.deadline > 0.0


def test_handler_may_rearm_its_deadline(loop: asyncio.AbstractEventLoop) -> None:
    sw = Sweeper(loop, tick=TICK)

    class Rearming(Item):
        def on_timeout(self) -> None:
            super().on_timeout()
            if self.fired < 3:
                self.deadline = sw.now  # already due at the next tick

    item = Rearming(deadline=loop.time() - 1.0)
    sw.add(item)
    sw.start()
    run_ticks(loop, sw, 6)
    sw.stop()
    assert item.fired == 3
    assert item.deadline == 0.0


def test_discarded_item_does_not_fire(loop: asyncio.AbstractEventLoop) -> None:
    sw = Sweeper(loop, tick=TICK)
    kept = Item(deadline=loop.time() - 1.0, name="kept")
    gone = Item(deadline=loop.time() - 1.0, name="gone")
    sw.add(kept)
    sw.add(gone)
    assert len(sw) == 2
    sw.discard(gone)
    sw.discard(gone)  # discarding twice is harmless
    assert len(sw) == 1
    sw.start()
    run_ticks(loop, sw, 2)
    sw.stop()
    assert (kept.fired, gone.fired) == (1, 0)


def test_every_tick_callbacks_run_each_tick(loop: asyncio.AbstractEventLoop) -> None:
    sw = Sweeper(loop, tick=TICK)
    calls: list[str] = []
    sw.every_tick(lambda: calls.append("a"))
    sw.every_tick(lambda: calls.append("b"))
    sw.start()
    ticks = run_ticks(loop, sw, 5)
    sw.stop()
    assert len(ticks) >= 5
    # Both callbacks, in registration order, once per tick.
    assert calls[: 2 * len(ticks)] == ["a", "b"] * len(ticks)
    assert len(calls) == 2 * len(ticks)


def test_now_is_refreshed_each_tick(loop: asyncio.AbstractEventLoop) -> None:
    sw = Sweeper(loop, tick=TICK)
    seen: list[float] = []
    sw.every_tick(lambda: seen.append(sw.now))
    sw.start()
    run_ticks(loop, sw, 4)
    sw.stop()
    assert len(seen) >= 3
    assert seen == sorted(seen) and seen[0] < seen[-1]
    assert seen[-1] <= loop.time()


def test_failing_handler_does_not_stop_the_others(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    sw = Sweeper(loop, tick=TICK)
    past = loop.time() - 1.0
    items = [Item(past, name=f"i{n}", fail=n % 2 == 0) for n in range(6)]
    for item in items:
        sw.add(item)
    late = Item(deadline=0.0, name="late")
    sw.add(late)
    with caplog.at_level(logging.ERROR, logger="ferryman.server.sweeper"):
        sw.start()
        run_ticks(loop, sw, 2)
        # The sweeper is still ticking: a deadline set now still fires.
        late.deadline = sw.now
        run_ticks(loop, sw, 2)
    sw.stop()
    assert [i.fired for i in items] == [1] * 6
    assert all(i.deadline == 0.0 for i in items)
    assert late.fired == 1
    failures = [r for r in caplog.records if "timeout handler failed" in r.getMessage()]
    assert len(failures) == 3
    assert all(r.exc_info is not None for r in failures)


def test_stop_stops_ticking(loop: asyncio.AbstractEventLoop) -> None:
    sw = Sweeper(loop, tick=TICK)
    calls: list[int] = []
    sw.every_tick(lambda: calls.append(1))
    sw.start()
    run_ticks(loop, sw, 3)
    sw.stop()
    count = len(calls)
    item = Item(deadline=loop.time() - 1.0)
    sw.add(item)
    run_for(loop, 10 * TICK)
    assert len(calls) == count
    assert item.fired == 0
    sw.stop()  # stopping twice is harmless


def test_not_started_does_not_tick(loop: asyncio.AbstractEventLoop) -> None:
    sw = Sweeper(loop, tick=TICK)
    item = Item(deadline=loop.time() - 1.0)
    sw.add(item)
    run_for(loop, 5 * TICK)
    assert item.fired == 0


def test_repr() -> None:
    lp = asyncio.new_event_loop()
    try:
        sw = Sweeper(lp, tick=0.25)
        sw.add(Item(0.0))
        assert repr(sw) == "Sweeper(tick=0.25s items=1)"
    finally:
        lp.close()
