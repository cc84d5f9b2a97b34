"""Limit zones: a fixed-size table of per-key state shared by every worker of the machine,
as nginx's limit_req_zone / limit_conn_zone shared memory.

Owns the memory layout, the hashing of keys, the cross-process lock and eviction. Knows
nothing about what the state means: a limit's arithmetic comes in as a `change`
function (filters/rate_limit.py, filters/conn_limit.py), which runs with the entry
locked and must not await (DESIGN.md rule 8); nothing else runs under the lock.

The table lives in a memfd (an anonymous file), mapped MAP_SHARED and created by the
master before it forks, so every worker maps the same pages; a process that calls
`build_worker` directly gets a table nobody else sees, behind the same interface.

Layout: a 64-byte header (magic, group count, the hash key, the mutex count), the
mutexes (64 bytes each; none with fcntl), then groups of `WAYS` entries
(set-associative: a key may sit only in the group its hash picks):

    8 x uint64  key hashes (0: free)
    8 x (int64 a, int64 b, int64 used)   the state (a, b) and the last touch, in ms

A key is stored as its 64-bit keyed BLAKE2b hash (the key is random per zone, so a
client cannot choose keys that collide in one group and push others out). A group is
locked for one read-modify-write only, with one of up to 256 robust process-shared
mutexes kept between the header and the groups (filters/shared_locks.py: no system call
unless two workers meet), or, where the C library has none, with fcntl.lockf on one
byte of the file at the group's index. Either way a crashed worker cannot wedge the
others (nginx's shmtx recovers the same way, by pid).
When a group is full, a zone that allows it evicts its least recently used entry (nginx
limit_req frees the oldest node when its slab is full); a zone that does not (limit_conn:
an entry there counts requests still in flight) refuses with `ZoneFull`.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import secrets
import struct
import tempfile
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from mypy_extensions import mypyc_attr

from ferryman.config.schema import LimitZoneSpec
from ferryman.filters.shared_locks import SLOT, FileLocks, GroupLocks, MutexArray
from ferryman.proxy.variables import Template, compile_template

__all__ = ["WAYS", "LimitZone", "State", "ZoneFull", "ZoneTable", "open_zones"]

T = TypeVar("T")
# The state of one key: two integers whose meaning the zone's limit gives.
State = tuple[int, int]

WAYS: Final = 8
_MAGIC: Final = b"FMZONE02"
_HEADER: Final = struct.Struct("=8sQ16sQ")  # magic, groups, hash key, mutexes
_HEADER_SIZE: Final = 64
# Groups share mutexes beyond this many: with a handful of workers, two meeting on one
# is rare already, and the mutexes stay within 16 KiB.
_MAX_MUTEXES: Final = 256
# Keys whose hash a table remembers (ZoneTable.hash): at most about 100 KiB a worker.
_KNOWN_HASHES: Final = 1024
_BINARY_ADDR: Final = re.compile(r"\$(\{?)binary_remote_addr(?![A-Za-z0-9_])")
# Sizes in 8-byte words: the table is read and written through views of the mapping as
# arrays of uint64 (the hashes) and int64 (the entries), not with struct.
_ENTRY_WORDS: Final = 3  # a, b, used
_GROUP_WORDS: Final = WAYS + WAYS * _ENTRY_WORDS
_GROUP_SIZE: Final = _GROUP_WORDS * 8  # 256 bytes


class ZoneFull(Exception):
    """No room for a new key in its group, and the zone may not evict."""


@mypyc_attr(native_class=False)
class _Descriptor:
    """A table's file descriptor, closed at `close()` or with the last handle that holds
    it (a reload drops old zones). A plain Python class in the compiled build too:
    weakref.finalize needs a weak reference, which compiled classes do not take."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.close = weakref.finalize(self, os.close, fd)


class ZoneTable:
    """One zone's table. `create` makes a new one; `attach` maps an existing one again
    (another handle on the same memory, as a second worker has)."""

    __slots__ = (
        "_fd",
        "_first_word",
        "_groups",
        "_hasher",
        "_hashes",
        "_ints",
        "_locks",
        "_map",
        "_ways",
        "_words",
        "evicts",
        "name",
    )

    def __init__(self, fd: int, name: str, evicts: bool) -> None:
        self._fd = _Descriptor(fd)
        self.name = name
        self.evicts = evicts
        self._map = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED)
        magic, groups, key, mutexes = _HEADER.unpack_from(self._map, 0)
        if magic != _MAGIC:
            raise ValueError(f"zone {name!r}: not a zone table")
        self._groups: int = groups
        self._hasher = hashlib.blake2b(digest_size=8, key=key)
        self._hashes: dict[bytes, int] = {}
        self._ways: dict[int, int] = {}  # key hash -> where this table last saw it
        # Both views cover the whole mapping; the groups start on a word boundary.
        self._words = memoryview(self._map).cast("Q")
        self._ints = memoryview(self._map).cast("q")
        # Typed: `mutexes` comes out of struct untyped, and an untyped first word would
        # make every index computed from it in `update` a generic (boxed) addition.
        self._first_word: int = (_HEADER_SIZE + mutexes * SLOT) // 8
        self._locks: GroupLocks = (
            MutexArray.attach(self._map, _HEADER_SIZE, mutexes) if mutexes else FileLocks(fd)
        )

    @classmethod
    def create(cls, name: str, size: int, *, evicts: bool, mutexes: bool = True) -> ZoneTable:
        """A new, empty table of about `size` bytes (at least one group), locked with
        shared mutexes where the C library has them, else (or `mutexes=False`) fcntl."""
        groups = max(1, (size - _HEADER_SIZE) // _GROUP_SIZE)
        count = min(groups, _MAX_MUTEXES) if mutexes else 0
        fd = _anonymous_file(name)
        length = _HEADER_SIZE + count * SLOT + groups * _GROUP_SIZE
        os.ftruncate(fd, length)
        with mmap.mmap(fd, length, mmap.MAP_SHARED) as fresh:
            made = MutexArray.create(fresh, _HEADER_SIZE, count) if count else None
            if made is not None:
                made.detach()
            else:
                count = 0  # fcntl locks: the groups start after the header
            _HEADER.pack_into(fresh, 0, _MAGIC, groups, secrets.token_bytes(16), count)
        return cls(fd, name, evicts)

    def attach(self) -> ZoneTable:
        """Another handle on the same table (its own mapping of the same file)."""
        return ZoneTable(os.dup(self._fd.fd), self.name, self.evicts)

    @property
    def capacity(self) -> int:
        return self._groups * WAYS

    def hash(self, key: bytes) -> int:
        """The key's 64-bit hash, never 0 (0 marks a free entry)."""
        # Remembered: the same client's requests (a keep-alive connection's) ask again
        # and again, and a keyed BLAKE2b costs 0.4 us. Forgotten all at once when full,
        # so a flood of distinct keys bounds it.
        known = self._hashes.get(key)
        if known is not None:
            return known
        # A copy of the keyed hasher skips hashing the key block again.
        hasher = self._hasher.copy()
        hasher.update(key)
        value = int.from_bytes(hasher.digest(), "little") or 1
        if len(self._hashes) >= _KNOWN_HASHES:
            self._hashes.clear()
        self._hashes[key] = value
        return value

    def update(
        self, key_hash: int, now_ms: int, change: Callable[[State | None], tuple[T, State | None]]
    ) -> T:
        """Runs `change` on the key's state (None: no entry) with the entry locked, and
        stores what it returns: a state, or None to drop the entry (or not create it).
        Returns `change`'s result. Raises ZoneFull when a new entry finds no room."""
        group = key_hash % self._groups
        first = self._first_word + group * _GROUP_WORDS
        self._locks.lock(group)
        try:
            words = self._words
            ints = self._ints
            way = self._find(words, first, key_hash)
            old: State | None = None
            if way >= 0:
                entry = first + WAYS + way * _ENTRY_WORDS
                old = (ints[entry], ints[entry + 1])
            result, new = change(old)
            if new is None:
                if way >= 0:
                    words[first + way] = 0
                return result
            if way < 0:
                way = self._free_way(first)
                words[first + way] = key_hash
                self._remember_way(key_hash, way)
            entry = first + WAYS + way * _ENTRY_WORDS
            ints[entry] = new[0]
            ints[entry + 1] = new[1]
            ints[entry + 2] = now_ms
            return result
        finally:
            self._locks.unlock(group)

    def _find(self, words: memoryview, first: int, key_hash: int) -> int:
        """The key's way in its group, or -1. Where this table last saw the key is tried
        first: it is nearly always still there (entries move only when one is dropped
        and the key comes back), and one read beats scanning the group."""
        hint = self._ways.get(key_hash)
        if hint is not None and words[first + hint] == key_hash:
            return hint
        for way in range(WAYS):
            if words[first + way] == key_hash:
                self._remember_way(key_hash, way)
                return way
        return -1

    def _remember_way(self, key_hash: int, way: int) -> None:
        if len(self._ways) >= _KNOWN_HASHES:
            self._ways.clear()
        self._ways[key_hash] = way

    def _free_way(self, first: int) -> int:
        words = self._words
        for way in range(WAYS):
            if words[first + way] == 0:
                return way
        if not self.evicts:
            raise ZoneFull(self.name)
        # The least recently touched entry of the group goes.
        used = [self._ints[first + WAYS + w * _ENTRY_WORDS + 2] for w in range(WAYS)]
        return used.index(min(used))

    def peek(self, key_hash: int) -> State | None:
        """The key's state, read under the lock without touching it (tests, admin)."""
        group = key_hash % self._groups
        first = self._first_word + group * _GROUP_WORDS
        self._locks.lock(group)
        try:
            way = self._find(self._words, first, key_hash)
            if way < 0:
                return None
            entry = first + WAYS + way * _ENTRY_WORDS
            return (self._ints[entry], self._ints[entry + 1])
        finally:
            self._locks.unlock(group)

    def entries(self) -> int:
        """How many keys the table holds (walks the whole table: tests, admin)."""
        words = self._words
        total = 0
        for g in range(self._groups):
            first = self._first_word + g * _GROUP_WORDS
            total += sum(1 for w in range(WAYS) if words[first + w] != 0)
        return total

    def close(self) -> None:
        self._locks.detach()
        # The mapping cannot close while views of it are held.
        self._words.release()
        self._ints.release()
        self._map.close()
        self._fd.close()

    def __repr__(self) -> str:
        kind = "evicting" if self.evicts else "non-evicting"
        mutexes = self._locks.count if isinstance(self._locks, MutexArray) else 0
        return (
            f"ZoneTable({self.name!r}, {self._groups} groups x {WAYS}, {kind}, mutexes={mutexes})"
        )


def _anonymous_file(name: str) -> int:
    # A memfd lives in memory only; elsewhere an unlinked temporary file does the job.
    if hasattr(os, "memfd_create"):
        return os.memfd_create(f"ferryman-zone-{name}", 0)  # no MFD_CLOEXEC: never exec'd
    fd, path = tempfile.mkstemp(prefix="ferryman-zone-")
    os.unlink(path)
    return fd


@dataclass(slots=True, eq=False)
class LimitZone:
    """A configured zone: its spec, its table, and where it was configured (for errors
    in its key template)."""

    spec: LimitZoneSpec
    table: ZoneTable
    where: str

    def compile_key(self, user_vars: frozenset[str]) -> Template:
        """The key template, compiled. `$binary_remote_addr` (nginx's packed address,
        the usual key) names the same client as `$remote_addr`, so it keys by that."""
        text = _BINARY_ADDR.sub(r"$\g<1>remote_addr", self.spec.key)
        return compile_template(text, f"{self.where}.key", user_vars)

    def __repr__(self) -> str:
        return f"LimitZone({self.spec.name!r}, {self.spec.kind}, key={self.spec.key!r})"


def open_zones(
    specs: tuple[LimitZoneSpec, ...],
    source: str,
    previous: Mapping[str, object] | None = None,
) -> dict[str, LimitZone]:
    """The zones of a configuration, by name. A zone of `previous` (the running
    configuration's) with the same name, kind, size and key is kept with its state, as
    nginx keeps a shared zone across reloads; any other zone starts empty."""
    zones: dict[str, LimitZone] = {}
    for i, spec in enumerate(specs):
        where = f"{source}: limit_zones[{i}]"
        old = previous.get(spec.name) if previous is not None else None
        if isinstance(old, LimitZone) and _same_table(old.spec, spec):
            zones[spec.name] = LimitZone(spec, old.table, where)
            continue
        table = ZoneTable.create(spec.name, spec.size, evicts=spec.kind == "req")
        zones[spec.name] = LimitZone(spec, table, where)
    return zones


def _same_table(a: LimitZoneSpec, b: LimitZoneSpec) -> bool:
    # The rate may change (it is applied per request); what the state means may not.
    return (a.kind, a.size, a.key) == (b.kind, b.size, b.key)
