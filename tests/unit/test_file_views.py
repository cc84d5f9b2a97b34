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

from ferryman.file_views import VIEW_TRANSPORTS, map_region


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
