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
_HASHES: Final = struct.Struct(f"={WAYS}Q")
_ENTRY: Final = struct.Struct("=qqq")  # a, b, used
_HASH: Final = struct.Struct("=Q")
_BINARY_ADDR: Final = re.compile(r"\$(\{?)binary_remote_addr(?![A-Za-z0-9_])")
_HASH_BYTES: Final = WAYS * 8
_GROUP_SIZE: Final = _HASH_BYTES + WAYS * _ENTRY.size  # 256 bytes


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
        "_groups",
        "_groups_at",
        "_hasher",
        "_hashes",
        "_locks",
        "_map",
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
        self._groups_at = _HEADER_SIZE + mutexes * SLOT
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
        base = self._groups_at + group * _GROUP_SIZE
        self._locks.lock(group)
        try:
            buf = self._map
            hashes = _HASHES.unpack_from(buf, base)
            way = hashes.index(key_hash) if key_hash in hashes else -1
            old: State | None = None
            if way >= 0:
                a, b, _ = _ENTRY.unpack_from(buf, base + _HASH_BYTES + way * _ENTRY.size)
                old = (a, b)
            result, new = change(old)
            if new is None:
                if way >= 0:
                    _HASH.pack_into(buf, base + way * 8, 0)
                return result
            if way < 0:
                way = self._free_way(hashes, base)
                _HASH.pack_into(buf, base + way * 8, key_hash)
            _ENTRY.pack_into(buf, base + _HASH_BYTES + way * _ENTRY.size, new[0], new[1], now_ms)
            return result
        finally:
            self._locks.unlock(group)

    def _free_way(self, hashes: tuple[int, ...], base: int) -> int:
        if 0 in hashes:
            return hashes.index(0)
        if not self.evicts:
            raise ZoneFull(self.name)
        # The least recently touched entry of the group goes.
        entry = base + _HASH_BYTES
        used = [_ENTRY.unpack_from(self._map, entry + w * _ENTRY.size)[2] for w in range(WAYS)]
        return used.index(min(used))

    def peek(self, key_hash: int) -> State | None:
        """The key's state, read under the lock without touching it (tests, admin)."""
        group = key_hash % self._groups
        base = self._groups_at + group * _GROUP_SIZE
        self._locks.lock(group)
        try:
            hashes = _HASHES.unpack_from(self._map, base)
            if key_hash not in hashes:
                return None
            offset = base + _HASH_BYTES + hashes.index(key_hash) * _ENTRY.size
            a, b, _ = _ENTRY.unpack_from(self._map, offset)
            return (a, b)
        finally:
            self._locks.unlock(group)

    def entries(self) -> int:
        """How many keys the table holds (walks the whole table: tests, admin)."""
        total = 0
        for g in range(self._groups):
            total += WAYS - _HASHES.unpack_from(self._map, self._groups_at + g * _GROUP_SIZE).count(
                0
            )
        return total

    def close(self) -> None:
        self._locks.detach()
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
