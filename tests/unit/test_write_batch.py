"""write_batch.py over a real socket pair and a real event loop (uvloop and the
stock asyncio loop): held writes reach the wire only after the loop's pass, together
and in order; a connection's own flush hands them over at once; a closed transport's
held bytes are dropped without an error."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
import uvloop

from ferryman.write_batch import HeldWrites, WriteBatch

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def _pending(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_held_writes_go_out_after_the_pass_in_order(kind: str) -> None:
    loop = LOOPS[kind]()
    ours, theirs = socket.socketpair()

    async def run() -> tuple[bytes, bytes, bytes]:
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        batch = WriteBatch(loop)
        a, b = HeldWrites(transport), HeldWrites(transport)  # type: ignore[arg-type]
        batch.hold(a, b"one ")
        batch.hold(b, b"two ")
        batch.hold(a, b"three ")
        before = _pending(theirs)
        await asyncio.sleep(0)  # one pass: the batch's callback runs
        await asyncio.sleep(0.05)
        after = _pending(theirs)
        # A connection's own flush (before a close, a large write) does not wait.
        batch.hold(b, b"four")
        b.flush()
        mine = _pending(theirs)
        await asyncio.sleep(0.05)  # the batch's later callback finds nothing to write
        transport.close()
        return before, after, mine + _pending(theirs)

    try:
        before, after, rest = loop.run_until_complete(run())
    finally:
        loop.close()
        theirs.close()
    assert before == b""
    assert after == b"one three two "  # per connection in order, connections as held
    assert rest == b"four"


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_held_writes_of_a_closed_transport_are_dropped(kind: str) -> None:
    loop = LOOPS[kind]()
    ours, theirs = socket.socketpair()

    async def run() -> None:
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        batch = WriteBatch(loop)
        held = HeldWrites(transport)  # type: ignore[arg-type]
        batch.hold(held, b"late")
        transport.abort()
        await asyncio.sleep(0.05)  # the flush must neither raise nor write

    errors: list[object] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
    assert errors == []
    assert theirs.recv(100) == b""  # closed with nothing sent
    theirs.close()
