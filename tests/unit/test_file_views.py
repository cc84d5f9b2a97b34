"""file_views: regions of a file as views of its mapping, and which transports may be
given one."""

from __future__ import annotations

import asyncio
import mmap
import os
from pathlib import Path

import pytest
import uvloop
from uvloop import loop as uvloop_loop

from ferryman.file_views import VIEW_TRANSPORTS, MappedFiles, map_region


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, 10), (1, 70_000), (mmap.ALLOCATIONGRANULARITY + 3, 3 * mmap.ALLOCATIONGRANULARITY)],
)
def test_region_is_the_files_bytes_and_outlives_the_descriptor(
    tmp_path: Path, start: int, end: int
) -> None:
    data = os.urandom(100_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    view = map_region(fd, start, end)
    os.close(fd)
    assert view is not None and view.readonly
    assert bytes(view) == data[start:end]


def test_a_descriptor_or_region_that_cannot_be_mapped_gives_none(tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        assert map_region(r, 0, 10) is None
    finally:
        os.close(r)
        os.close(w)
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        # Past the end (the file shrank after it was measured): the caller reads instead.
        assert map_region(fd, 0, 1001) is None
    finally:
        os.close(fd)


def test_only_uvloops_plain_stream_transports_take_views() -> None:
    """TLS encrypts in this process and the stock loop copies the unsent rest: neither
    may be given a view of a mapping."""

    async def plain_transport_type() -> type:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        transport.close()
        server.close()
        return type(transport)

    assert uvloop.run(plain_transport_type()) in VIEW_TRANSPORTS
    assert asyncio.run(plain_transport_type()) not in VIEW_TRANSPORTS
    tls = getattr(uvloop_loop, "_SSLProtocolTransport")  # noqa: B009 (not in the stubs)
    assert tls not in VIEW_TRANSPORTS


def _open(path: Path) -> int:
    return os.open(path, os.O_RDONLY)


def test_mapped_files_reuses_a_files_mapping_across_descriptors(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    files = MappedFiles()
    fd = _open(path)
    first = files.region(fd, 10, 150_000, 1.0)
    os.close(fd)
    fd = _open(path)  # the next request opens the file again
    second = files.region(fd, 0, 200_000, 2.0)
    os.close(fd)
    assert first is not None and second is not None
    assert first.readonly and bytes(first) == data[10:150_000]
    assert bytes(second) == data
    assert first.obj is second.obj  # one mapping of the whole file, kept
    assert len(files) == 1 and files.mapped_bytes == len(data)


def test_mapped_files_maps_afresh_a_file_that_changed_size_or_was_replaced(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 100_000)
    files = MappedFiles()
    fd = _open(path)
    old = files.region(fd, 0, 100_000, 1.0)
    with open(path, "ab") as f:  # grown in place: same inode, another size
        f.write(b"b" * 50_000)
    grown = files.region(fd, 0, 150_000, 2.0)
    os.close(fd)
    assert old is not None and grown is not None and grown.obj is not old.obj
    assert bytes(grown) == b"a" * 100_000 + b"b" * 50_000
    assert files.mapped_bytes == 150_000
    # Replaced by renaming another file over it (how the cache replaces an entry).
    other = tmp_path / "g"
    other.write_bytes(b"c" * 150_000)
    os.rename(other, path)
    fd = _open(path)
    replaced = files.region(fd, 0, 150_000, 3.0)
    os.close(fd)
    assert replaced is not None and bytes(replaced) == b"c" * 150_000
    assert bytes(grown) == b"a" * 100_000 + b"b" * 50_000  # the old inode's, still mapped
    # A region past the file's end is refused, whatever is kept.
    fd = _open(path)
    assert files.region(fd, 0, 150_001, 4.0) is None
    os.close(fd)


def test_mapped_files_is_bounded_and_lets_idle_mappings_go(tmp_path: Path) -> None:
    files = MappedFiles(max_files=2, max_bytes=250_000, max_idle=5.0)
    fds = []
    for i, size in enumerate((100_000, 100_000, 100_000, 400_000)):
        path = tmp_path / f"f{i}"
        path.write_bytes(bytes([i]) * size)
        fds.append(_open(path))
    try:
        for i, fd in enumerate(fds[:3]):
            assert files.region(fd, 0, 100_000, float(i)) is not None
        assert len(files) == 2  # the first, least recently used, let go
        assert files.mapped_bytes == 200_000
        # Over the byte bound: mapped for this request, not kept.
        big = files.region(fds[3], 0, 400_000, 3.0)
        assert big is not None and bytes(big[:1]) == b"\x03"
        assert len(files) == 2 and files.mapped_bytes == 200_000
        files.region(fds[1], 0, 10, 4.0)  # used again: now the newest
        files.expire(7.5)  # the third was last used at 2.0, the second at 4.0
        assert len(files) == 1 and files.mapped_bytes == 100_000
        files.expire(9.5)
        assert len(files) == 0 and files.mapped_bytes == 0
    finally:
        for fd in fds:
            os.close(fd)
