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
import os
from typing import Final

__all__ = ["VIEW_TRANSPORTS", "MappedFiles", "map_region"]

# A worker's mappings kept for reuse: at most this many files, this many bytes mapped
# (address space and, while mapped, the page cache's pages counted in its VmRSS) and
# this long unused. A file bigger than the byte bound is mapped per request.
KEEP_FILES: Final = 64
KEEP_BYTES: Final = 128 * 1024 * 1024
KEEP_IDLE: Final = 10.0


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


class _Kept:
    __slots__ = ("mapping", "size", "used")

    def __init__(self, mapping: mmap.mmap, size: int, used: float) -> None:
        self.mapping = mapping
        self.size = size
        self.used = used


class MappedFiles:
    """A worker's mappings of whole files, reused from one request to the next.

    Mapping a region per response, faulting its pages in as the kernel copies them, and
    unmapping it after costs about a third of what serving a 1-4 MiB body costs; a
    mapping kept for the next request has its pages mapped already (nginx's
    open_file_cache keeps descriptors for the same reason). A file is known by its
    device and inode: a shared mapping always shows the file's current bytes, so only
    its size can make a kept mapping wrong, and a different size maps it afresh. A file
    replaced by renaming another over it (how the cache replaces its entries) is a new
    inode. What is kept is bounded (KEEP_FILES, KEEP_BYTES) and let go after KEEP_IDLE
    unused (`expire`, on the worker's sweeper), so that a deleted file's blocks are not
    held for long. The views are for the kernel only, as map_region's."""

    __slots__ = ("_bytes", "_kept", "max_bytes", "max_files", "max_idle")

    def __init__(
        self, max_files: int = KEEP_FILES, max_bytes: int = KEEP_BYTES, max_idle: float = KEEP_IDLE
    ) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.max_idle = max_idle
        # Oldest use first (a dict keeps insertion order; a use moves its entry last).
        self._kept: dict[tuple[int, int], _Kept] = {}
        self._bytes = 0

    def region(self, fd: int, start: int, end: int, now: float) -> memoryview | None:
        """Bytes [start, end) of the open file `fd`, from a kept mapping of the whole
        file if there is one of its current size, else mapped (and kept, within the
        bounds); None where it cannot be mapped, as map_region."""
        try:
            st = os.fstat(fd)
        except OSError:
            return None
        size = st.st_size
        if end > size or start > end:
            return None  # the file is shorter than the region asked for
        key = (st.st_dev, st.st_ino)
        kept = self._kept.pop(key, None)
        if kept is not None:
            if kept.size == size:
                kept.used = now
                self._kept[key] = kept
                return memoryview(kept.mapping)[start:end]
            self._bytes -= kept.size  # the file grew or shrank: its mapping is stale
        if size > self.max_bytes:
            return map_region(fd, start, end)
        try:
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        except (OSError, ValueError, OverflowError):
            return None
        while self._kept and (
            len(self._kept) >= self.max_files or self._bytes + size > self.max_bytes
        ):
            self._drop(next(iter(self._kept)))
        self._kept[key] = _Kept(mapping, size, now)
        self._bytes += size
        return memoryview(mapping)[start:end]

    def expire(self, now: float) -> None:
        """Let go of the mappings unused for max_idle (oldest first, so the scan stops
        at the first one still in use)."""
        while self._kept:
            key = next(iter(self._kept))
            if now - self._kept[key].used < self.max_idle:
                return
            self._drop(key)

    def _drop(self, key: tuple[int, int]) -> None:
        # Dropped, not closed: a view still being sent keeps the mapping alive until the
        # transport lets go of it (closing it under an exported view raises).
        kept = self._kept.pop(key)
        self._bytes -= kept.size

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def mapped_bytes(self) -> int:
        return self._bytes
