"""The Store interface: where cached responses live, one implementation per module
(memory.py, disk.py, tiered.py).

Owns the protocol, the streaming writer / reader contracts and StoreError. Knows no
HTTP caching rules (cache/policy.py decides what to store and whether it is fresh) and
no keys' meaning: a key is an opaque string, a variant opaque bytes.

Contract for every implementation:
- an entry becomes visible only on `EntryWriter.commit`; an aborted, failed or never
  committed writer leaves nothing visible (and, on disk, nothing behind once aborted);
- `write` never raises (failures are recorded) and `abort` never raises; `commit`
  raises StoreError when the body size differs from what was written or a write
  failed, and then nothing becomes visible;
- a CachedEntry's body is read in bounded chunks and never held whole by the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Protocol

from ferryman.cache.entry import EntryMeta

__all__ = ["CHUNK_SIZE", "BytesEntry", "CachedEntry", "EntryWriter", "Store", "StoreError"]

# Body read size: large enough to amortise syscalls, small enough to bound memory per
# concurrent reader (nginx's proxy_buffer_size family is 4-64 KiB).
CHUNK_SIZE = 64 * 1024


class StoreError(Exception):
    """A write to the cache could not complete (size mismatch, I/O failure): our side,
    never the client's or the upstream's fault; the response is simply not stored."""


class CachedEntry(Protocol):
    meta: EntryMeta

    def chunks(self) -> Iterator[bytes]:
        """The body in chunks of at most CHUNK_SIZE bytes; closes the entry at the end."""
        ...

    def close(self) -> None:
        """Release the entry (an open file) when not reading it to the end; idempotent."""
        ...

    def __enter__(self) -> CachedEntry: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class EntryWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self, body_size: int) -> None:
        """Make the entry visible, replacing any entry of the same key and variant."""
        ...

    def abort(self) -> None: ...


class Store(Protocol):
    def lookup(self, key: str, variant: bytes) -> CachedEntry | None: ...

    def vary_for(self, key: str) -> tuple[bytes, ...] | None:
        """The Vary fields of the key's latest stored response; None if none stored."""
        ...

    def begin(self, meta: EntryMeta) -> EntryWriter: ...

    def update_meta(self, key: str, variant: bytes, meta: EntryMeta) -> None:
        """Replace an entry's meta, body unchanged (after a 304); no-op if it is gone."""
        ...

    def remove(self, key: str) -> int:
        """Remove every variant of `key`; how many entries were removed."""
        ...

    def remove_prefix(self, prefix: str) -> int: ...

    def expire(self, now: float) -> int:
        """Remove entries not used for `inactive` seconds; how many were removed."""
        ...


class BytesEntry:
    """A CachedEntry over a body already in memory (the memory store's entries)."""

    __slots__ = ("_body", "meta", "rendered", "tag")

    def __init__(self, meta: EntryMeta, body: bytes, tag: object = None) -> None:
        self.meta = meta
        self._body = body
        # Which version of a backing entry this copies (the tiered store's disk identity).
        self.tag = tag
        # A user's rendering of the meta, kept with it (the cache handler's response
        # head fields for one route): (whose, bytes, bytes). A new meta is a new entry.
        self.rendered: tuple[object, bytes, bytes] | None = None

    @property
    def body(self) -> bytes:
        return self._body

    def chunks(self) -> Iterator[bytes]:
        if len(self._body) <= CHUNK_SIZE:
            if self._body:
                yield self._body
            return
        body = memoryview(self._body)
        for start in range(0, len(body), CHUNK_SIZE):
            yield bytes(body[start : start + CHUNK_SIZE])

    def close(self) -> None:
        pass

    def __enter__(self) -> BytesEntry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BytesEntry({self.meta.key!r}, {len(self._body)} bytes)"
