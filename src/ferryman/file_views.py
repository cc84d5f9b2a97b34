"""Read-only views of file regions, written to a client whole: the kernel copies the
page cache's pages into the socket, and no body is read into the worker (what nginx
gets from sendfile(2); uvloop has none for its transports).

The rule that makes a view of a mapping safe: only the kernel may read it. If the file
shrinks under the mapping, a read of a page it no longer has is SIGBUS in Python,
fatal to the worker, but an EFAULT from a system call, which closes one connection
with its body cut short. So a view goes only to a transport that hands it to writev
unread (`VIEW_TRANSPORTS`), and nothing in the worker looks at its bytes.
"""

from __future__ import annotations

import mmap
from typing import Final

__all__ = ["VIEW_TRANSPORTS", "map_region"]


def _view_transports() -> frozenset[type]:
    """uvloop's plain TCP and Unix stream transports: they write a view through its
    buffer pointer and keep the unsent rest as a view. Not TLS (the bytes are encrypted
    in this process), not the stock loop's (on Python 3.11 it copies what the socket did
    not take into its own buffer)."""
    try:
        from uvloop import loop
    except ImportError:
        return frozenset()
    # Not in uvloop's type stubs: the classes of the transports it makes.
    return frozenset({getattr(loop, "TCPTransport"), getattr(loop, "UnixTransport")})  # noqa: B009


VIEW_TRANSPORTS: Final = _view_transports()


def map_region(fd: int, start: int, end: int) -> memoryview | None:
    """Bytes [start, end) of the open file `fd`, as a view of a read-only shared
    mapping (it outlives the descriptor), or None where the region cannot be mapped
    (the process is out of mappings, or the file is not a mappable one)."""
    base = start - start % mmap.ALLOCATIONGRANULARITY
    try:
        mapping = mmap.mmap(fd, end - base, mmap.MAP_SHARED, mmap.PROT_READ, offset=base)
    except (OSError, ValueError, OverflowError):
        return None
    return memoryview(mapping)[start - base : end - base]
