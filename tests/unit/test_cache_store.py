"""Cache stores: memory (LRU by bytes), disk (atomic, persistent, shared), tiered."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ferryman.cache.disk import DiskEntry, DiskStore
from ferryman.cache.entry import EntryMeta, decode_meta, encode_meta
from ferryman.cache.memory import MemoryStore
from ferryman.cache.store import CHUNK_SIZE, Store, StoreError
from ferryman.cache.tiered import TieredStore, open_store
from ferryman.clock import ManualClock
from ferryman.config.schema import CacheZoneSpec
from ferryman.file_views import MappedFiles

T0 = 1_000_000.0


def meta(
    key: str, variant: bytes = b"", *, vary: tuple[bytes, ...] = (), lifetime: float = 60.0
) -> EntryMeta:
    return EntryMeta(
        key=key, variant=variant, status=200,
        headers=[(b"Content-Type", b"text/plain"), (b"X-Key", key.encode())],
        request_time=T0, response_time=T0, stored_at=T0, lifetime=lifetime, initial_age=0.0,
        etag=b'"e"', vary=vary,
    )  # fmt: skip


def put(store: Store, m: EntryMeta, body: bytes, chunk: int = 1000) -> None:
    w = store.begin(m)
    for i in range(0, len(body), chunk):
        w.write(body[i : i + chunk])
    w.commit(len(body))


def read(store: Store, key: str, variant: bytes = b"") -> bytes | None:
    entry = store.lookup(key, variant)
    if entry is None:
        return None
    return b"".join(entry.chunks())


def entry_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("??/*") if not p.name.endswith(".k"))


def temp_files(root: Path) -> list[Path]:
    return sorted((root / ".tmp").iterdir())


# -- entry meta encoding ---------------------------------------------------------------


def test_meta_round_trips_and_junk_is_refused() -> None:
    m = replace(meta("k\u00e9y", b"accept-encoding:gzip", vary=(b"accept-encoding",)), swr=5.0)
    m = replace(m, headers=[(b"X-Bin", bytes(range(128, 256)))], last_modified=b"x")
    assert decode_meta(encode_meta(m)) == m
    wrong_type = encode_meta(m).replace(b'"status":200', b'"status":"200"')
    for junk in (b"", b"{", b"[]", b'{"v":2}', b'{"v":1}', wrong_type, b"\xff\xfe"):
        with pytest.raises(ValueError):
            decode_meta(junk)


# -- memory ----------------------------------------------------------------------------


def test_memory_lru_eviction_by_bytes() -> None:
    clock = ManualClock(T0)
    store = MemoryStore(3 * 1500, clock=clock.now)
    for k in ("a", "b", "c"):
        put(store, meta(k), b"x" * 1000)
    assert len(store) == 3
    assert read(store, "a") == b"x" * 1000  # a is now the most recently used
    put(store, meta("d"), b"y" * 1000)
    assert read(store, "b") is None  # the least recently used went
    assert read(store, "a") is not None and read(store, "c") is not None
    assert read(store, "d") == b"y" * 1000
    assert store.bytes <= store.max_bytes
    # One large entry pushes out as many as needed.
    put(store, meta("big"), b"z" * 2900)
    assert read(store, "big") is not None
    assert len(store) == 2 and store.bytes <= store.max_bytes


def test_memory_entry_larger_than_budget_is_not_stored() -> None:
    store = MemoryStore(10_000)
    put(store, meta("small"), b"s")
    put(store, meta("huge"), b"h" * 20_000)
    assert read(store, "huge") is None
    assert read(store, "small") == b"s"  # nothing evicted for it


@pytest.mark.parametrize("kind", ["memory", "disk", "tiered"])
def test_only_committed_writes_become_visible(kind: str, tmp_path: Path) -> None:
    store = make(kind, tmp_path)
    put(store, meta("k"), b"old")
    w = store.begin(meta("k"))
    w.write(b"new body")
    assert read(store, "k") == b"old"  # uncommitted: invisible
    w.abort()
    assert read(store, "k") == b"old"
    w = store.begin(meta("k2"))
    w.write(b"abc")
    with pytest.raises(StoreError):
        w.commit(4)  # the size is checked
    assert store.lookup("k2", b"") is None
    w = store.begin(meta("k"))
    w.write(b"new")
    w.commit(3)
    assert read(store, "k") == b"new"
    entry = store.lookup("k", b"")
    assert entry is not None and entry.meta.body_size == 3
    entry.close()
    if kind != "memory":
        assert temp_files(tmp_path) == []  # nothing left behind


def make(kind: str, root: Path, clock: ManualClock | None = None, **kw: int) -> Store:
    now = (clock or ManualClock(T0)).now
    if kind == "memory":
        return MemoryStore(kw.get("max_bytes", 10**8), clock=now)
    disk = DiskStore(str(root), kw.get("max_bytes", 10**8), clock=now)
    if kind == "disk":
        return disk
    return TieredStore(MemoryStore(10**7, clock=now), disk)


@pytest.mark.parametrize("kind", ["memory", "disk", "tiered"])
def test_variants_remove_and_prefix(kind: str, tmp_path: Path) -> None:
    store = make(kind, tmp_path)
    vary = (b"accept-encoding",)
    assert store.vary_for("http://h/a/1") is None
    put(store, meta("http://h/a/1", b"gzip", vary=vary), b"zipped")
    put(store, meta("http://h/a/1", b"br", vary=vary), b"brotli")
    put(store, meta("http://h/a/2"), b"two")
    put(store, meta("http://h/b/1"), b"other")
    assert store.vary_for("http://h/a/1") == vary
    assert store.vary_for("http://h/a/2") == ()
    assert read(store, "http://h/a/1", b"gzip") == b"zipped"
    assert read(store, "http://h/a/1", b"br") == b"brotli"
    assert read(store, "http://h/a/1", b"") is None
    assert store.remove("http://h/a/1") == 2
    assert store.vary_for("http://h/a/1") is None
    put(store, meta("http://h/a/1", b"gzip", vary=vary), b"zipped")
    assert store.remove_prefix("http://h/a/") == 2
    assert read(store, "http://h/a/1", b"gzip") is None and read(store, "http://h/a/2") is None
    assert read(store, "http://h/b/1") == b"other"
    assert store.remove("http://h/nothing") == 0


@pytest.mark.parametrize("kind", ["memory", "disk", "tiered"])
def test_expire_removes_inactive_entries(kind: str, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    store = make(kind, tmp_path, clock)
    put(store, meta("used"), b"1")
    put(store, meta("idle"), b"2")
    clock.advance(400)
    assert read(store, "used") == b"1"
    clock.advance(300)  # idle: unused for 700 s > 600; used: 300 s
    assert store.expire(clock.now()) == 1
    assert read(store, "idle") is None
    assert read(store, "used") == b"1"
    if kind != "memory":  # the disk itself forgot it, not only this instance
        assert read(DiskStore(str(tmp_path), 10**8, clock=clock.now), "idle") is None


@pytest.mark.parametrize("kind", ["memory", "disk", "tiered"])
def test_update_meta_keeps_body(kind: str, tmp_path: Path) -> None:
    store = make(kind, tmp_path)
    body = os.urandom(3 * CHUNK_SIZE + 7)
    put(store, meta("k"), body, chunk=CHUNK_SIZE)
    store.update_meta("k", b"", replace(meta("k", lifetime=999.0), headers=[(b"X-New", b"1")]))
    entry = store.lookup("k", b"")
    assert entry is not None
    assert entry.meta.lifetime == 999.0 and entry.meta.headers == [(b"X-New", b"1")]
    assert entry.meta.body_size == len(body)
    assert b"".join(entry.chunks()) == body
    store.update_meta("gone", b"", meta("gone"))  # no entry: no-op
    assert store.lookup("gone", b"") is None


# -- disk ------------------------------------------------------------------------------


def test_disk_persists_across_restart(tmp_path: Path) -> None:
    a = DiskStore(str(tmp_path), 10**6)
    put(a, meta("k", b"v", vary=(b"x-v",)), b"persisted body")
    size = a.bytes
    del a
    b = DiskStore(str(tmp_path), 10**6)  # a new process would do the same
    assert b.bytes == size  # the index is rebuilt from the directory
    assert b.vary_for("k") == (b"x-v",)
    entry = b.lookup("k", b"v")
    assert entry is not None and entry.meta == replace(
        meta("k", b"v", vary=(b"x-v",)), body_size=14
    )
    assert b"".join(entry.chunks()) == b"persisted body"


def test_disk_entry_maps_its_body_and_the_mapping_outlives_file_and_descriptor(
    tmp_path: Path,
) -> None:
    store = DiskStore(str(tmp_path), 10**8)
    body = os.urandom(3 * CHUNK_SIZE + 7)
    put(store, meta("k"), body, chunk=CHUNK_SIZE)
    entry = store.lookup("k", b"")
    assert isinstance(entry, DiskEntry)
    files = MappedFiles()
    view = entry.mapped_body(files, 0.0)
    assert view is not None and view.readonly and bytes(view) == body
    entry.close()
    assert entry.mapped_body(files, 0.0) is None  # closed: nothing to map
    put(store, meta("k"), b"a new body", chunk=CHUNK_SIZE)  # renamed over the old file
    # The new file is another inode: its body, not the kept mapping of the old one.
    again = store.lookup("k", b"")
    assert isinstance(again, DiskEntry)
    new_view = again.mapped_body(files, 0.0)
    again.close()
    assert new_view is not None and bytes(new_view) == b"a new body"
    assert len(files) == 2
    assert store.remove("k") == 1
    assert bytes(view) == body  # the old file's pages, still mapped


def test_two_stores_on_one_directory_see_each_others_commits(tmp_path: Path) -> None:
    a = DiskStore(str(tmp_path), 10**6)
    b = DiskStore(str(tmp_path), 10**6)
    put(a, meta("k"), b"from a")
    assert read(b, "k") == b"from a"
    # A reader keeps its version while the other worker replaces the entry.
    reading = a.lookup("k", b"")
    assert reading is not None
    put(b, meta("k"), b"from b, longer")
    assert b"".join(reading.chunks()) == b"from a"
    assert read(a, "k") == b"from b, longer"
    put(b, meta("k2", b"gz", vary=(b"accept-encoding",)), b"2")
    assert a.vary_for("k2") == (b"accept-encoding",)
    assert b.remove("k") == 1
    assert read(a, "k") is None
    assert a.remove_prefix("k") == 1
    assert read(b, "k2", b"gz") is None


def test_aborted_and_dropped_writers_leave_no_files(tmp_path: Path) -> None:
    store = DiskStore(str(tmp_path), 10**6)
    w = store.begin(meta("k"))
    w.write(b"partial")
    assert len(temp_files(tmp_path)) == 1
    assert entry_files(tmp_path) == []  # nothing visible before commit
    assert DiskStore(str(tmp_path), 10**6).lookup("k", b"") is None
    w.abort()
    w.abort()  # idempotent
    assert temp_files(tmp_path) == []
    w = store.begin(meta("k"))
    w.write(b"dropped")
    del w  # never committed nor aborted
    assert temp_files(tmp_path) == []
    assert entry_files(tmp_path) == []


def test_temp_files_of_crashed_writers_are_cleaned_at_start(tmp_path: Path) -> None:
    DiskStore(str(tmp_path), 10**6)
    tmp = tmp_path / ".tmp"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, check=True, text=True).stdout.strip()  # fmt: skip
    (tmp / f"{dead}-crashed.tmp").write_bytes(b"FMCACHE1 half a body")
    (tmp / "junk").write_bytes(b"?")
    live = tmp / f"{os.getpid()}-writing.tmp"  # another worker's write in progress
    live.write_bytes(b"FMCACHE1 ...")
    old = tmp / f"{os.getpid()}-stalled.tmp"
    old.write_bytes(b"FMCACHE1 ...")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    store = DiskStore(str(tmp_path), 10**6)
    assert temp_files(tmp_path) == [live]
    assert store.bytes == 0 and entry_files(tmp_path) == []


@pytest.mark.parametrize(
    "damage",
    [
        "truncate",
        "truncate-trailer",
        "bad-magic",
        "meta-json",
        "meta-length",
        "body-longer",
        "empty",
    ],
)
def test_torn_or_corrupt_entries_are_removed_never_served(tmp_path: Path, damage: str) -> None:
    store = DiskStore(str(tmp_path), 10**6)
    put(store, meta("k"), b"b" * 5000)
    (path,) = entry_files(tmp_path)
    data = path.read_bytes()
    broken = {
        "truncate": data[:3000],  # a torn write: body cut short, no trailer
        "truncate-trailer": data[:-1],
        "bad-magic": b"X" + data[1:],
        "meta-json": data.replace(b'"status":200', b'"status":2}0'),
        "meta-length": data[:-12] + b"\xff\xff\xff\xff" + data[-8:],
        "body-longer": data[:8] + b"extra" + data[8:],
        "empty": b"",
    }[damage]
    path.write_bytes(broken)
    assert store.lookup("k", b"") is None
    assert not path.exists()
    assert DiskStore(str(tmp_path), 10**6).lookup("k", b"") is None


def test_disk_lru_eviction_by_bytes(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    store = DiskStore(str(tmp_path), 3 * 1700, clock=clock.now)
    for k in ("a", "b", "c"):
        put(store, meta(k), b"x" * 1000)
        clock.advance(2)
    assert len(entry_files(tmp_path)) == 3
    assert read(store, "a") is not None  # a: most recently used
    clock.advance(2)
    put(store, meta("d"), b"y" * 1000)
    assert read(store, "b") is None
    assert [read(store, k) is not None for k in "acd"] == [True, True, True]
    assert store.bytes <= store.max_bytes
    assert sum(p.stat().st_size for p in entry_files(tmp_path)) == store.bytes
    # The order survives a restart: it is kept in the files' access times.
    clock.advance(2)
    assert read(store, "d") is not None
    clock.advance(2)
    assert read(store, "c") is not None
    clock.advance(2)
    again = DiskStore(str(tmp_path), 3 * 1700, clock=clock.now)
    put(again, meta("e"), b"z" * 1000)
    assert read(again, "a") is None  # last used at +8, before d (+10) and c (+12)
    assert read(again, "c") is not None and read(again, "d") is not None


def test_disk_entry_larger_than_budget_is_refused(tmp_path: Path) -> None:
    store = DiskStore(str(tmp_path), 4000)
    w = store.begin(meta("big"))
    w.write(b"x" * 3000)
    w.write(b"x" * 3000)
    with pytest.raises(StoreError):
        w.commit(6000)
    assert temp_files(tmp_path) == [] and entry_files(tmp_path) == []


def test_streams_5_mib_in_bounded_chunks_without_holding_it(tmp_path: Path) -> None:
    store = DiskStore(str(tmp_path), 64 * 1024 * 1024)
    size = 5 * 1024 * 1024
    block = os.urandom(CHUNK_SIZE)
    expected = hashlib.sha256()
    tracemalloc.start()
    try:
        w = store.begin(meta("big"))
        for i in range(size // CHUNK_SIZE):
            chunk = block[i:] + block[:i]  # every chunk different
            expected.update(chunk)
            w.write(chunk)
        w.commit(size)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        entry = store.lookup("big", b"")
        assert entry is not None and entry.meta.body_size == size
        got, count, largest = hashlib.sha256(), 0, 0
        for chunk in entry.chunks():
            got.update(chunk)
            count += 1
            largest = max(largest, len(chunk))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.digest() == expected.digest()
    assert largest <= CHUNK_SIZE and count == size // CHUNK_SIZE
    # Never the whole body in memory: a few chunks at most, on either side.
    assert write_peak < 8 * CHUNK_SIZE, write_peak
    assert read_peak < 4 * CHUNK_SIZE, read_peak


def test_memory_chunks_are_bounded_too() -> None:
    store = MemoryStore(10**7)
    body = os.urandom(2 * CHUNK_SIZE + 1)
    put(store, meta("k"), body, chunk=CHUNK_SIZE)
    entry = store.lookup("k", b"")
    assert entry is not None
    sizes = [len(c) for c in entry.chunks()]
    assert sizes == [CHUNK_SIZE, CHUNK_SIZE, 1]


# -- tiered ----------------------------------------------------------------------------


def test_tiered_promotes_small_hits_and_follows_the_disk(tmp_path: Path) -> None:
    memory = MemoryStore(10**6)
    tiered = TieredStore(memory, DiskStore(str(tmp_path), 10**7), promote_max=10_000)
    other = DiskStore(str(tmp_path), 10**7)  # another worker
    put(other, meta("small"), b"s" * 100)
    put(other, meta("large"), b"l" * 20_000)
    assert read(tiered, "small") == b"s" * 100
    assert memory.lookup("small", b"") is not None  # promoted
    assert read(tiered, "large") == b"l" * 20_000
    assert memory.lookup("large", b"") is None  # too large: disk only
    # The other worker replaces the entry: the memory copy is stale and not served.
    put(other, meta("small"), b"S" * 100)
    assert read(tiered, "small") == b"S" * 100
    # ... or purges it.
    assert other.remove("small") == 1
    assert read(tiered, "small") is None
    assert memory.lookup("small", b"") is None
    # Own writes land in both tiers; own removal clears both.
    put(tiered, meta("mine"), b"m" * 10)
    assert memory.lookup("mine", b"") is not None and read(other, "mine") == b"m" * 10
    assert tiered.remove("mine") == 1
    assert memory.lookup("mine", b"") is None and read(other, "mine") is None


def test_tiered_memory_hits_count_as_disk_use(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    disk = DiskStore(str(tmp_path), 10**7, clock=clock.now)
    tiered = TieredStore(MemoryStore(10**6, clock=clock.now), disk)
    put(tiered, meta("hot"), b"h")
    put(tiered, meta("cold"), b"c")
    for _ in range(7):
        clock.advance(100)
        assert read(tiered, "hot") == b"h"  # served from memory
    assert tiered.expire(clock.now()) == 1
    assert read(DiskStore(str(tmp_path), 10**7, clock=clock.now), "cold") is None
    assert read(tiered, "hot") == b"h"


def _count_disk_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for name in ("stat", "open", "utime", "fstat", "pread"):
        real = getattr(os, name)

        def counting(*args: object, _real: Any = real, _name: str = name, **kw: object) -> object:
            calls.append(_name)
            return _real(*args, **kw)

        monkeypatch.setattr(os, name, counting)
    return calls


def test_tiered_memory_hits_touch_no_file_until_another_worker_changes_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock(T0)
    mine = TieredStore(
        MemoryStore(10**6, clock=clock.now), DiskStore(str(tmp_path), 10**7, clock=clock.now)
    )
    other = TieredStore(MemoryStore(10**6), DiskStore(str(tmp_path), 10**7))  # another worker
    vary = (b"accept-encoding",)
    put(other, meta("k", b"gz", vary=vary), b"v1")
    assert mine.vary_for("k") == vary and read(mine, "k", b"gz") == b"v1"  # promoted
    calls = _count_disk_calls(monkeypatch)
    for _ in range(50):
        assert mine.vary_for("k") == vary and read(mine, "k", b"gz") == b"v1"
    assert calls == []  # Vary and body from memory, coherence from the shared stamps
    clock.advance(5)
    assert read(mine, "k", b"gz") == b"v1"
    assert calls.count("utime") == 1  # the use reaches the disk, lazily
    monkeypatch.undo()
    # Every change by the other worker is seen by the very next lookup:
    put(other, meta("k", b"gz", vary=vary), b"v2")  # a replace
    assert read(mine, "k", b"gz") == b"v2"
    put(other, meta("k", b"", vary=()), b"plain")  # a new Vary for the key
    assert mine.vary_for("k") == () and read(mine, "k") == b"plain"
    assert other.remove("k") == 2  # a purge
    assert mine.vary_for("k") is None and read(mine, "k") is None
    assert read(mine, "k", b"gz") is None
    # An eviction by the other worker's budget.
    put(mine, meta("e"), b"e" * 100)
    assert read(mine, "e") == b"e" * 100
    tight = DiskStore(str(tmp_path), 10)
    assert tight.bytes == 0 and read(mine, "e") is None


def test_tiered_bookkeeping_stays_bounded_by_the_memory_tier(tmp_path: Path) -> None:
    memory = MemoryStore(20 * 1024)  # room for a few dozen small entries
    tiered = TieredStore(memory, DiskStore(str(tmp_path), 10**8))
    for i in range(5000):
        put(tiered, meta(f"k{i}"), b"x" * 100)
        assert tiered.vary_for(f"k{i}") == ()
    assert len(memory) < 100
    assert len(tiered._hot) <= 2 * len(memory) + 1025
    assert read(tiered, "k4999") == b"x" * 100 and read(tiered, "k0") == b"x" * 100


def test_a_purge_in_another_process_is_seen_by_the_next_memory_hit(tmp_path: Path) -> None:
    mine = TieredStore(MemoryStore(10**6), DiskStore(str(tmp_path), 10**7))
    put(mine, meta("k"), b"body")
    assert read(mine, "k") == b"body" and read(mine, "k") == b"body"  # checked, from memory
    code = (
        "import sys; from ferryman.cache.disk import DiskStore; "
        "sys.exit(DiskStore(sys.argv[1], 10**7).remove('k') != 1)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=30)
    assert read(mine, "k") is None


def test_tiered_without_shared_stamps_checks_the_disk_on_every_hit(tmp_path: Path) -> None:
    disk = DiskStore(str(tmp_path), 10**7)
    assert disk.stamps is not None
    disk.stamps = None  # a directory that cannot be mapped
    mine = TieredStore(MemoryStore(10**6), disk)
    other = DiskStore(str(tmp_path), 10**7)
    put(other, meta("k"), b"v1")
    assert read(mine, "k") == b"v1" and read(mine, "k") == b"v1"
    put(other, meta("k"), b"v2, longer")
    assert read(mine, "k") == b"v2, longer"
    assert other.remove("k") == 1
    assert read(mine, "k") is None and mine.vary_for("k") is None


def test_open_store_follows_the_zone(tmp_path: Path) -> None:
    assert isinstance(open_store(CacheZoneSpec(name="m")), MemoryStore)
    store = open_store(CacheZoneSpec(name="d", path=str(tmp_path / "zone"), max_size=10**6))
    assert isinstance(store, TieredStore)
    put(store, meta("k"), b"body")
    assert len(entry_files(tmp_path / "zone")) == 1
