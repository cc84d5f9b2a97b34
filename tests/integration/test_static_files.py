"""Static files from a native config, through a real `ferryman run` over raw sockets:
a large file whole, over keep-alive and by range; HEAD; a slow reader (the body is sent
as the client reads it, never buffered whole); paths that try to leave the root;
symbolic links followed (nginx's disable_symlinks off); `if` with a file test.

(The behaviour nginx defines, header by header, is compared with the real nginx in
tests/differential/static.conf; this module covers what that harness cannot.)
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.memory import rss_bytes, wait_for_children
from support.procs import ProxyProcess, free_port, start_proxy
from support.rawhttp import RawClient, RawResponse

BIG = 8 * 1024 * 1024
TIMEOUT = 10.0


def _big_bytes() -> bytes:
    return bytes(i % 251 for i in range(BIG))


@dataclass(frozen=True)
class Site:
    proxy: ProxyProcess
    root: Path
    outside: Path

    @property
    def port(self) -> int:
        return self.proxy.port


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("static")
    root = workdir / "www"
    (root / "dir").mkdir(parents=True)
    (root / "big.bin").write_bytes(_big_bytes())
    (root / "hello.txt").write_bytes(b"hello\n")
    (root / "dir" / "index.html").write_bytes(b"<p>index</p>\n")
    outside = workdir / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"outside the root\n")
    os.symlink(outside / "secret.txt", root / "link.txt")
    port = free_port()
    config = f"""
workers: 1
servers:
  - listen: "127.0.0.1:{port}"
    routes:
      - path: /
        static: {{root: "{root}"}}
      - path: /check/
        script:
          - if:
              operand: "{root}/$arg_f"
              operator: "-f"
              steps: [return: {{status: 200, text: "yes"}}]
          - return: {{status: 200, text: "no"}}
"""
    proxy = start_proxy(workdir / "proxy", config, port)
    try:
        yield Site(proxy, root, outside)
    finally:
        proxy.stop()


def get(port: int, target: str, headers: str = "", method: str = "GET") -> RawResponse:
    with RawClient(port, timeout=TIMEOUT) as client:
        client.send(
            f"{method} {target} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        resp = client.read_response(head_request=method == "HEAD")
    assert resp is not None
    return resp


def test_large_file_whole_and_by_range(site: Site) -> None:
    resp = get(site.port, "/big.bin")
    assert resp.status == 200
    assert resp.header(b"content-length") == str(BIG).encode()
    assert hashlib.sha256(resp.body).digest() == hashlib.sha256(_big_bytes()).digest()
    part = get(site.port, "/big.bin", "Range: bytes=1000000-1000099\r\n")
    assert part.status == 206
    assert part.body == _big_bytes()[1000000:1000100]
    assert part.header(b"content-range") == b"bytes 1000000-1000099/%d" % BIG


def test_large_range_from_an_unaligned_offset(site: Site) -> None:
    """A range over one 64 KiB chunk is sent from a mapping of the file, which starts
    on a page boundary: the bytes must still start at the range's first byte."""
    part = get(site.port, "/big.bin", "Range: bytes=100001-5000000\r\n")
    assert part.status == 206
    assert part.body == _big_bytes()[100001:5000001]


def test_file_truncated_in_place_while_sent_is_cut_short_not_fatal(site: Site) -> None:
    """A file shrinks in place (an editor, `cp` over it) while a slow client is being
    sent it from its mapping: the kernel answers the write with EFAULT, the client's
    body ends short of its Content-Length and the connection closes. The worker lives
    on and serves the file as it now is."""
    size = 24_000_000  # far more than the socket buffers take while the client stalls
    path = site.root / "shrinks.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    (worker,) = wait_for_children(site.proxy.proc.pid, 1)
    with RawClient(site.port, timeout=TIMEOUT) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        client.send(b"GET /shrinks.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        head = client.read_head()
        assert head is not None and head.status == 200
        time.sleep(0.3)
        os.truncate(path, 4096)
        body, whole = client.read_exactly(size)
    assert not whole, "the client must see the truncation"
    assert body == data[: len(body)]
    assert wait_for_children(site.proxy.proc.pid, 1) == [worker], "the worker was replaced"
    after = get(site.port, "/shrinks.bin")
    assert after.status == 200 and len(after.body) == 4096


def _mappings_of(pid: int, path: Path) -> int:
    return Path(f"/proc/{pid}/maps").read_text().count(str(path))


def test_kept_mapping_serves_the_file_as_it_now_is(site: Site) -> None:
    """A large file's mapping is kept for the next request (file_views.MappedFiles):
    it stays mapped in the worker after the response, is not mapped a second time, and
    a rewrite in place, a change of size or a file renamed over it is served as the
    file now is."""
    path = site.root / "kept.bin"
    first = os.urandom(300_000)
    path.write_bytes(first)
    (worker,) = wait_for_children(site.proxy.proc.pid, 1)
    assert get(site.port, "/kept.bin").body == first
    assert _mappings_of(worker, path) == 1  # kept after the response
    assert get(site.port, "/kept.bin").body == first
    assert _mappings_of(worker, path) == 1  # the same one, reused
    rewritten = os.urandom(300_000)
    with open(path, "r+b") as f:  # same inode, same size, new bytes
        f.write(rewritten)
    assert get(site.port, "/kept.bin").body == rewritten
    grown = rewritten + os.urandom(100_000)
    path.write_bytes(grown)  # truncated and written again: another size
    assert get(site.port, "/kept.bin").body == grown
    other = site.root / "kept.new"
    replaced = os.urandom(400_000)
    other.write_bytes(replaced)
    os.rename(other, path)  # another inode, the same size as the last
    assert get(site.port, "/kept.bin").body == replaced


def test_keep_alive_serves_files_in_turn(site: Site) -> None:
    with RawClient(site.port, timeout=TIMEOUT) as client:
        for _ in range(3):
            client.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            resp = client.read_response()
            assert resp is not None and resp.status == 200 and resp.body == b"hello\n"
            assert resp.header(b"connection") == b"keep-alive"
        client.send(b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        head = client.read_response(head_request=True)
        assert head is not None and head.header(b"content-length") == str(BIG).encode()
        client.send(b"GET /dir/ HTTP/1.1\r\nHost: t\r\n\r\n")
        index = client.read_response()
        assert index is not None and index.body == b"<p>index</p>\n"


def test_slow_reader_gets_the_file_as_it_reads(site: Site) -> None:
    """The proxy stops reading the file while the client does not read: while the client
    stalls, the worker's memory does not grow by anything like the file's size, and the
    whole file still arrives intact. Its own memory (RssAnon): the file's pages the
    kernel sends from a mapping of it are the page cache's, shared and reclaimable."""
    (worker,) = wait_for_children(site.proxy.proc.pid, 1)
    # Warm up with one fast read of the same file: a fresh worker's first request grows
    # its heap and faults in code whatever it serves (the master trims its heap before
    # forking), and that is not what this test measures.
    with RawClient(site.port, timeout=TIMEOUT) as client:
        client.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        warm = client.read_response()
        assert warm is not None and len(warm.body) == BIG
    before = rss_bytes(worker, "RssAnon")
    sock = socket.create_connection(("127.0.0.1", site.port), timeout=TIMEOUT)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        time.sleep(1.0)
        # An 8 MiB file held whole would show; a few CHUNKs in flight do not.
        assert rss_bytes(worker, "RssAnon") - before < BIG // 2
        received = bytearray()
        # Whatever the kernel buffered while we slept is bounded by the socket buffers
        # and the transport's high-water mark, not by the file.
        sock.settimeout(0.5)
        try:
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                received += chunk
                if len(received) > BIG // 2:
                    break
        except TimeoutError:
            pass
        assert len(received) < BIG
        sock.settimeout(TIMEOUT)
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == _big_bytes()


@pytest.mark.parametrize(
    "target",
    ["/../outside/secret.txt", "/%2e%2e/outside/secret.txt", "/dir/..%2f..%2foutside/secret.txt"],
)
def test_paths_never_leave_the_root(site: Site, target: str) -> None:
    resp = get(site.port, target)
    assert resp.status in (400, 404)
    assert b"outside the root" not in resp.body


def test_symbolic_links_are_followed_as_nginx(site: Site) -> None:
    resp = get(site.port, "/link.txt")
    assert resp.status == 200 and resp.body == b"outside the root\n"


def test_directory_and_missing_names(site: Site) -> None:
    moved = get(site.port, "/dir?x=1")
    assert moved.status == 301
    assert moved.header(b"location") == b"http://t:%d/dir/?x=1" % site.port
    assert get(site.port, "/nothing").status == 404
    assert get(site.port, "/hello.txt", method="PUT").status == 405


def test_if_file_test(site: Site) -> None:
    assert get(site.port, "/check/?f=hello.txt").body == b"yes"
    assert get(site.port, "/check/?f=dir").body == b"no"
    assert get(site.port, "/check/?f=missing").body == b"no"
