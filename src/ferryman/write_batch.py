"""Small writes held to the end of the event loop's pass, then handed to their
transports together.

Why: a write whose reader sleeps on another CPU wakes that CPU, and waking an idle CPU
costs the writer an interrupt (through the hypervisor on a VM). A proxy writes to the
same few readers (the clients' load, the backends) many times in one pass of its loop;
written as they come, its writes kept finding those readers asleep again and again.
Held until the pass's I/O callbacks are done, one pass's writes go out back to back and
wake each reader about once (docs/benchmarks.md, twelfth look). Redis writes its
replies just before it sleeps for the same reason.

Order is kept per connection (one list each). A connection hands over what it holds
before anything that must follow its data on the wire (close, abort, write_eof, a
mapped view) and before a large write, so flow control (pause_writing) still sees a
large body as it is written.
"""

from __future__ import annotations

import asyncio
from typing import Final

__all__ = ["HOLD_MAX", "HeldWrites", "WriteBatch"]

# Writes up to this size are held; a larger one goes at once (after what is held):
# bodies streamed in chunks keep their pacing by pause_writing.
HOLD_MAX: Final = 16 * 1024


class HeldWrites:
    """One connection's writes held in this pass, in order."""

    __slots__ = ("chunks", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.chunks: list[bytes] = []

    def flush(self) -> None:
        chunks = self.chunks
        if not chunks:
            return
        self.chunks = []
        transport = self.transport
        if transport.is_closing():
            return  # closed since (by the peer): what it would have sent is moot
        if len(chunks) == 1:
            transport.write(chunks[0])
        else:
            # One system call for the pass's writes (uvloop: a writev of the list).
            transport.writelines(chunks)

    def drop(self) -> None:
        """Forget what is held: for a connection aborted mid-message, none of it may go."""
        self.chunks = []


class WriteBatch:
    """The worker's held writes, handed over by one callback at the end of the pass."""

    __slots__ = ("_held", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._held: list[HeldWrites] = []
        self._scheduled = False

    def write(self, held: HeldWrites, data: bytes) -> None:
        """`data` for `held`'s transport: held to the end of the pass when it is small;
        a larger write goes at once, after what is held."""
        if len(data) <= HOLD_MAX:
            self.hold(held, data)
        else:
            held.flush()
            held.transport.write(data)

    def hold(self, held: HeldWrites, data: bytes) -> None:
        chunks = held.chunks
        if not chunks:
            # call_soon runs after this pass's I/O callbacks (uvloop: in the next pass's
            # idle phase, before it polls again), so the whole pass's writes go together.
            self._held.append(held)
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self.flush)
        chunks.append(data)

    def flush(self) -> None:
        self._scheduled = False
        held = self._held
        if not held:
            return
        self._held = []
        for h in held:
            h.flush()
