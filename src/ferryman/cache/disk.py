"""DiskStore: cache entries as files in one directory, shared by all workers and kept
across restarts, within a byte budget (least recently used evicted first).

Owns the directory layout, the file format, atomic commits, eviction and the
`inactive` sweep. Knows no HTTP rules (cache/policy.py) and nothing of other workers'
state beyond what the directory says: the filesystem is the only shared truth, and each
worker's index of it is a cache that `expire` rebuilds.

Layout under `path` (nginx proxy_cache_path levels=2 in spirit):
    .tmp/<pid>-<random>.tmp      entries being written (same filesystem: os.replace)
    <kh[:2]>/<kh>.<vh>           one entry: kh = sha256(key), vh = sha256(variant)[:32]
    <kh[:2]>/<kh>.k              the key and its current Vary fields (JSON)
    .stamps                      change stamps shared by the workers (cache/stamps.py)

Entry file: MAGIC, body, meta JSON (cache/entry.py), meta length (4 bytes, big-endian),
TAIL. The body comes first so it streams to disk before its size is known; the trailer
is checked on every open, so a torn or corrupt file is removed, never served. A commit
is write-to-temp then os.replace, so readers see the old file or the new one, never a
mix, and a reader holding the old file open keeps reading it. No fsync: a crash of the
process cannot tear a replaced file, and a power loss that does is caught by the trailer.

Calls are plain synchronous file operations on small files or bounded chunks, served
from the page cache when hot (nginx without `aio` does the same in its event loop).

Every replace or removal of a key's files is followed by a new stamp in the key's slot
of the shared table (cache/stamps.py), so workers' memory copies notice it without a
stat per hit.

Times: a file's atime is its last use (set explicitly, read with O_NOATIME so the
kernel does not move it); its mtime is its write time, part of its identity.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import TracebackType
from typing import BinaryIO, Final

from ferryman.cache.entry import EntryMeta, decode_meta, encode_meta
from ferryman.cache.stamps import ChangeStamps, open_stamps, slot_of
from ferryman.cache.store import CHUNK_SIZE, StoreError
from ferryman.file_views import MappedFiles

__all__ = ["DiskEntry", "DiskStore"]

log = logging.getLogger(__name__)

MAGIC: Final = b"FMCACHE1"
TAIL: Final = b"FMCEND01"
_LEN: Final = struct.Struct(">I")
_TRAILER: Final = _LEN.size + len(TAIL)
# A meta header larger than this is corrupt (the parsers bound response heads far lower).
_MAX_META: Final = 1024 * 1024
# A temp file untouched this long belongs to a writer that is gone (pid reused, or a
# process of another container); live writers touch theirs with every chunk.
_STALE_TEMP: Final = 3600.0
_O_NOATIME: Final = getattr(os, "O_NOATIME", 0)
_KEY_READ: Final = 16 * 1024

Identity = tuple[int, int, int, int]


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def _variant_hash(variant: bytes) -> str:
    return hashlib.sha256(variant).hexdigest()[:32]


def _identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _pid_alive(pid: int) -> bool:
    # pid 0 / negative would address process groups: never signal those.
    if pid <= 0 or pid > 2**22:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def _open_read(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | _O_NOATIME)
    except PermissionError:
        if not _O_NOATIME:
            raise
        return os.open(path, os.O_RDONLY)  # O_NOATIME needs ownership


def _unlink_if_old(path: str, age: float = 60.0) -> bool:
    with contextlib.suppress(OSError):
        if time.time() - os.stat(path).st_mtime > age:
            os.unlink(path)
            return True
    return False


class DiskEntry:
    """An open entry file; the body is read with pread in CHUNK_SIZE pieces, or mapped
    whole for a transport that sends a view without reading it (mapped_body)."""

    __slots__ = ("_fd", "ident", "meta")

    def __init__(self, meta: EntryMeta, fd: int, ident: Identity) -> None:
        self.meta = meta
        self._fd = fd
        self.ident = ident

    def chunks(self) -> Iterator[bytes]:
        try:
            offset, left = len(MAGIC), self.meta.body_size
            while left > 0:
                if self._fd < 0:
                    raise StoreError("entry closed while reading")
                data = os.pread(self._fd, min(CHUNK_SIZE, left), offset)
                if not data:
                    raise StoreError(f"{self.meta.key!r}: body ends {left} bytes early")
                offset += len(data)
                left -= len(data)
                yield data
        finally:
            self.close()

    def mapped_body(self, files: MappedFiles, now: float) -> memoryview | None:
        """The body as a view of the file's read-only mapping, one the worker keeps in
        `files` (file_views.py: only the kernel may read it), or None where it cannot
        be mapped (the entry is closed, or the process is out of mappings). Our own
        files never shrink under a mapping: an entry is replaced by renaming a new file
        over it, and an open mapping keeps the old one's pages."""
        if self._fd < 0:
            return None
        return files.region(self._fd, len(MAGIC), len(MAGIC) + self.meta.body_size, now)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> DiskEntry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DiskEntry({self.meta.key!r}, {self.meta.body_size} bytes)"


class _FileInfo:
    __slots__ = ("last_used", "size")

    def __init__(self, size: int, last_used: float) -> None:
        self.size = size
        self.last_used = last_used


class DiskStore:
    """Entries in files under `path`; `max_bytes` bounds the sum of entry file sizes."""

    def __init__(
        self,
        path: str,
        max_bytes: int,
        *,
        inactive: float = 600.0,
        clock: Callable[[], float] = time.time,
        touch_interval: float = 1.0,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.inactive = inactive
        self._clock = clock
        # Last-use times are written at most this often per entry: one utime per hit
        # would be a metadata write per request.
        self._touch_interval = touch_interval
        self._tmp = os.path.join(path, ".tmp")
        os.makedirs(self._tmp, exist_ok=True)
        # Shared with every worker on this directory; None where it cannot be mapped.
        self.stamps: ChangeStamps | None = open_stamps(path)
        # This worker's view: entry file name (relative) -> size and last use, least
        # recently used first. Other workers' commits join it on lookup or rescan.
        self._index: OrderedDict[str, _FileInfo] = OrderedDict()
        self.bytes = 0
        self.clean_temps()
        self.rescan(self._clock())

    # -- paths --

    def _rel(self, key: str, variant: bytes) -> str:
        kh = _key_hash(key)
        return os.path.join(kh[:2], kh + "." + _variant_hash(variant))

    def _key_file(self, key: str) -> str:
        kh = _key_hash(key)
        return os.path.join(self.path, kh[:2], kh + ".k")

    def slot(self, key: str) -> int:
        """The key's slot in the change-stamp table."""
        return slot_of(_key_hash(key))

    def _changed(self, rel_or_hash: str) -> None:
        """A key's files were replaced or removed: stamp its slot (after the change)."""
        stamps = self.stamps
        if stamps is not None:
            stamps.bump(slot_of(os.path.basename(rel_or_hash)))

    def _temp_path(self) -> str:
        return os.path.join(self._tmp, f"{os.getpid()}-{secrets.token_hex(8)}.tmp")

    # -- reading --

    def lookup(self, key: str, variant: bytes) -> DiskEntry | None:
        rel = self._rel(key, variant)
        entry = self._open_entry(rel)
        if entry is None:
            self._forget(rel)
            return None
        if entry.meta.key != key or entry.meta.variant != variant:
            entry.close()
            return None  # a sha256 collision: practically never, but never serve it
        self._note_use(rel, entry.ident[2])
        return entry

    def identity(self, key: str, variant: bytes) -> Identity | None:
        """Which version of the entry is on disk (None: none), without reading it."""
        try:
            return _identity(os.stat(os.path.join(self.path, self._rel(key, variant))))
        except OSError:
            return None

    def touch(self, key: str, variant: bytes, size: int) -> None:
        """Record a use served from elsewhere (the tiered memory copy of a `size`-byte
        entry file), so that disk eviction and `inactive` see it as used."""
        self._note_use(self._rel(key, variant), size)

    def vary_for(self, key: str) -> tuple[bytes, ...] | None:
        doc = self._read_key_file(self._key_file(key))
        if doc is None or doc[0] != key:
            return None
        return doc[1]

    def _open_entry(self, rel: str) -> DiskEntry | None:
        path = os.path.join(self.path, rel)
        try:
            fd = _open_read(path)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            meta = self._read_meta(fd, st.st_size)
        except (OSError, ValueError) as exc:
            log.warning("cache: removing corrupt entry %s: %s", path, exc)
            self._remove_if_same(path, fd)
            os.close(fd)
            self._changed(rel)
            return None
        return DiskEntry(meta, fd, _identity(st))

    @staticmethod
    def _read_meta(fd: int, size: int) -> EntryMeta:
        if size < len(MAGIC) + _TRAILER or os.pread(fd, len(MAGIC), 0) != MAGIC:
            raise ValueError("no header")
        trailer = os.pread(fd, _TRAILER, size - _TRAILER)
        if len(trailer) != _TRAILER or trailer[_LEN.size :] != TAIL:
            raise ValueError("torn or truncated")
        (meta_len,) = _LEN.unpack(trailer[: _LEN.size])
        body_size = size - len(MAGIC) - _TRAILER - meta_len
        if meta_len > _MAX_META or body_size < 0:
            raise ValueError("bad meta length")
        raw = os.pread(fd, meta_len, size - _TRAILER - meta_len)
        meta = decode_meta(raw)
        if meta.body_size != body_size:
            raise ValueError(f"body is {body_size} bytes, meta says {meta.body_size}")
        return meta

    def _remove_if_same(self, path: str, fd: int) -> None:
        # Another worker may have replaced the corrupt file meanwhile: keep that one.
        with contextlib.suppress(OSError):
            if _identity(os.stat(path))[:2] == _identity(os.fstat(fd))[:2]:
                os.unlink(path)

    # -- writing --

    def begin(self, meta: EntryMeta) -> DiskWriter:
        return DiskWriter(self, meta)

    def update_meta(self, key: str, variant: bytes, meta: EntryMeta) -> None:
        """Rewrite the entry with new meta: its body copied to a temp file, then the
        same atomic replace as a commit (in-place rewrites could be read torn)."""
        entry = self.lookup(key, variant)
        if entry is None:
            return
        with entry:
            writer = self.begin(meta)
            try:
                for chunk in entry.chunks():
                    writer.write(chunk)
                writer.commit(entry.meta.body_size)
            except StoreError as exc:
                writer.abort()
                log.warning("cache: could not update %r: %s", key, exc)

    def _publish(self, temp: str, meta: EntryMeta, size: int) -> Identity:
        """Called by a writer: make its temp file the entry for (key, variant). Returns
        its identity, taken before the rename (after it, the name may be another's)."""
        rel = self._rel(meta.key, meta.variant)
        path = os.path.join(self.path, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # The key file first: an entry is never reachable without its Vary fields.
        self._write_key_file(meta.key, meta.vary)
        now = self._clock()
        os.utime(temp, ns=(int(now * 1e9), time.time_ns()))
        ident = _identity(os.stat(temp))
        os.replace(temp, path)
        self._changed(rel)
        self._forget(rel)
        self._index[rel] = _FileInfo(size, now)
        self.bytes += size
        self._evict()
        return ident

    def _write_key_file(self, key: str, vary: tuple[bytes, ...]) -> None:
        path = self._key_file(key)
        if self._read_key_file(path) == (key, vary):
            return
        doc = {"key": key, "vary": [f.decode("latin-1") for f in vary]}
        temp = self._temp_path()
        with open(temp, "wb") as f:
            f.write(json.dumps(doc, separators=(",", ":")).encode("utf-8"))
        os.replace(temp, path)
        self._changed(os.path.basename(path))

    @staticmethod
    def _read_key_file(path: str) -> tuple[str, tuple[bytes, ...]] | None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                # Key files are small: one read; never a 1 MiB buffer per call.
                data = os.read(fd, _KEY_READ)
                if len(data) == _KEY_READ:
                    data += os.read(fd, _MAX_META)
            finally:
                os.close(fd)
            doc = json.loads(data)
            key, vary = doc["key"], doc["vary"]
            if (
                isinstance(key, str)
                and isinstance(vary, list)
                and all(isinstance(v, str) for v in vary)
            ):
                return key, tuple(v.encode("latin-1") for v in vary)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    # -- removing --

    def remove(self, key: str) -> int:
        """Every variant of `key`, and its key file."""
        kh = _key_hash(key)
        sub = os.path.join(self.path, kh[:2])
        try:
            names = [n for n in os.listdir(sub) if n.startswith(kh + ".")]
        except OSError:
            return 0
        count = 0
        for name in names:
            rel = os.path.join(kh[:2], name)
            try:
                os.unlink(os.path.join(self.path, rel))
            except OSError:
                continue
            if not name.endswith(".k"):
                count += 1
            self._forget(rel)
        if names:
            self._changed(kh)
        return count

    def remove_prefix(self, prefix: str) -> int:
        """Every entry whose key starts with `prefix` (a scan of the key files: PURGE by
        prefix is rare, and keys are not recoverable from file names)."""
        count = 0
        for key in [k for k in self._keys() if k.startswith(prefix)]:
            count += self.remove(key)
        return count

    def _keys(self) -> Iterator[str]:
        for sub in self._subdirs():
            with contextlib.suppress(OSError), os.scandir(sub) as it:
                for de in it:
                    if de.name.endswith(".k"):
                        doc = self._read_key_file(de.path)
                        if doc is not None:
                            yield doc[0]

    def expire(self, now: float) -> int:
        """Remove entries unused for `inactive` seconds (by any worker), then rebuild
        this worker's index from the directory and evict over budget."""
        removed = self.rescan(now)
        self.clean_temps()
        return removed

    def _evict(self) -> int:
        removed = 0
        while self.bytes > self.max_bytes and self._index:
            rel = next(iter(self._index))
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.path, rel))
                removed += 1
            self._changed(rel)
            self._forget(rel)
        return removed

    def _forget(self, rel: str) -> None:
        info = self._index.pop(rel, None)
        if info is not None:
            self.bytes -= info.size

    def _note_use(self, rel: str, size: int) -> None:
        now = self._clock()
        info = self._index.get(rel)
        if info is None:
            self._index[rel] = _FileInfo(size, now)
            self.bytes += size
        elif now - info.last_used >= self._touch_interval:
            info.last_used = now
            self._index.move_to_end(rel)
        else:
            return
        with contextlib.suppress(OSError):
            path = os.path.join(self.path, rel)
            os.utime(path, ns=(int(now * 1e9), os.stat(path).st_mtime_ns))

    # -- start-up and sweeps --

    def _subdirs(self) -> list[str]:
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        return [os.path.join(self.path, n) for n in sorted(names) if len(n) == 2]

    def rescan(self, now: float) -> int:
        """Rebuild the index from the directory; remove inactive entries, and entries
        and key files without each other. Returns how many entries were removed."""
        found, key_files, removed = self._scan(now)
        # An entry without a key file is unreachable (a commit raced a remove), a key
        # file without entries is left over: drop both, unless young enough to be a
        # commit in progress in another worker (the scan is not a snapshot).
        entry_keys = {os.path.basename(rel).partition(".")[0] for _, rel, _ in found}
        for kh, path in key_files.items():
            if kh not in entry_keys and _unlink_if_old(path):
                self._changed(kh)
        self._index.clear()
        self.bytes = 0
        for atime, rel, size in sorted(found):
            if os.path.basename(rel).partition(".")[0] in key_files:
                self._index[rel] = _FileInfo(size, atime)
                self.bytes += size
            elif _unlink_if_old(os.path.join(self.path, rel)):
                self._changed(rel)
        return removed + self._evict()

    def _scan(self, now: float) -> tuple[list[tuple[float, str, int]], dict[str, str], int]:
        """(last use, relative name, size) of live entries, key hash -> key file path,
        and how many inactive entries were removed on the way."""
        found: list[tuple[float, str, int]] = []
        key_files: dict[str, str] = {}
        removed = 0
        for sub in self._subdirs():
            with contextlib.suppress(OSError), os.scandir(sub) as it:
                for de in it:
                    kh, _, kind = de.name.partition(".")
                    if kind == "k":
                        key_files[kh] = de.path
                        continue
                    try:
                        st = de.stat()
                    except OSError:
                        continue
                    if now - st.st_atime < self.inactive:
                        found.append((st.st_atime, os.path.join(sub[-2:], de.name), st.st_size))
                        continue
                    with contextlib.suppress(OSError):
                        os.unlink(de.path)
                        removed += 1
                        self._changed(kh)
        return found, key_files, removed

    def clean_temps(self) -> int:
        """Remove temp files left by writers that crashed (their process is gone) or
        stalled for an hour. Live writers' files are kept: workers share the directory."""
        removed = 0
        try:
            entries = list(os.scandir(self._tmp))
        except OSError:
            return 0
        for de in entries:
            pid_text = de.name.partition("-")[0]
            pid = int(pid_text) if pid_text.isascii() and pid_text.isdigit() else -1
            try:
                age = time.time() - de.stat().st_mtime
            except OSError:
                continue
            if len(pid_text) > 7 or not _pid_alive(pid) or age > _STALE_TEMP:
                with contextlib.suppress(OSError):
                    os.unlink(de.path)
                    removed += 1
        return removed

    def __repr__(self) -> str:
        return (
            f"DiskStore({self.path!r}, {len(self._index)} entries, "
            f"{self.bytes}/{self.max_bytes} bytes)"
        )


class DiskWriter:
    """Streams a body into a temp file; commit adds the trailer and publishes it."""

    __slots__ = ("_failed", "_file", "_size", "_store", "_temp", "committed", "meta")

    def __init__(self, store: DiskStore, meta: EntryMeta) -> None:
        self._store = store
        self.meta = meta
        self._size = 0
        self._failed: str | None = None
        self._temp = store._temp_path()
        self._file: BinaryIO | None = None
        # After commit: the stored meta and the file's identity (for the memory tier).
        self.committed: tuple[EntryMeta, Identity] | None = None
        try:
            self._file = open(self._temp, "xb", buffering=CHUNK_SIZE)  # noqa: SIM115
            self._file.write(MAGIC)
        except OSError as exc:
            self._fail(f"open: {exc}")

    def write(self, data: bytes) -> None:
        self._size += len(data)
        if self._file is None:
            return
        if self._size > self._store.max_bytes:
            self._fail("larger than the whole cache")
            return
        try:
            self._file.write(data)
        except OSError as exc:
            self._fail(f"write: {exc}")

    def commit(self, body_size: int) -> None:
        if self._failed is not None:
            raise StoreError(self._failed)
        if self._file is None:
            raise StoreError("writer already finished")
        if body_size != self._size:
            self._fail("size mismatch")
            raise StoreError(f"body is {self._size} bytes, expected {body_size}")
        meta = replace(self.meta, body_size=body_size)
        raw = encode_meta(meta)
        f, self._file = self._file, None
        try:
            f.write(raw + _LEN.pack(len(raw)) + TAIL)
            f.close()
            size = len(MAGIC) + body_size + len(raw) + _TRAILER
            self.committed = (meta, self._store._publish(self._temp, meta, size))
        except OSError as exc:
            f.close()
            self._unlink()
            self._failed = "commit failed"
            raise StoreError(f"commit: {exc}") from exc
        self._failed = "already committed"  # later commit raises, abort is a no-op

    def abort(self) -> None:
        if self._file is not None or self._failed is None:
            self._fail("aborted")

    def _fail(self, reason: str) -> None:
        self._failed = reason
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
        self._unlink()

    def _unlink(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._temp)

    def __del__(self) -> None:
        # A writer dropped without commit or abort leaves no temp file behind.
        if self._file is not None:
            self._fail("abandoned")

    def __repr__(self) -> str:
        return f"DiskWriter({self.meta.key!r}, {self._size} bytes, failed={self._failed})"
