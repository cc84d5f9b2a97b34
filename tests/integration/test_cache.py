"""The proxy cache against a real `ferryman run` and a real counting echo backend, over
raw sockets: hits, HEAD from a stored GET, revalidation with 304, stale-while-revalidate
with exactly one background refresh, stale-if-error with the backend stopped, Vary
variants, collapsed forwarding of 1,000 concurrent misses, no entry from a body cut
short, the disk tier across a restart, PURGE, and the Cache-Status values.

One proxy and backend serve most of the module; each test uses its own cache keys (the
`id` of the echo backend's /cache endpoint, which counts requests per id). Tests that
stop a process start their own.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from ferryman.echo import big_pattern
from support.memory import child_pids
from support.procs import (
    EchoBackend,
    ProxyProcess,
    free_port,
    proxy_config,
    start_echo,
    start_proxy,
)
from support.rawhttp import RawClient, RawResponse, http_get_json

SCALE = float(os.environ.get("FERRYMAN_SLOW_SCALE", "1"))

ROUTE = """cache:
  zone: disk
  lock: true
  lock_timeout: 20s
  purge: true
  bypass: [$http_x_bypass]
  use_stale: [error, timeout]
routes:
  - path: /truncate
    upstream: app
    cache: {zone: disk, valid: {any: 1m}}
  - path: /mem/
    upstream: app
    upstream_uri: /
    cache: {zone: mem}"""


def top(cache_dir: Path) -> str:
    return (
        "worker_connections: 4096\n"
        "cache_zones:\n"
        f"  - {{name: disk, path: {cache_dir}, max_size: 64m, memory_size: 8m}}\n"
        "  - {name: mem, memory_size: 8m}"
    )


@dataclass(frozen=True)
class Stack:
    backend: EchoBackend
    proxy: ProxyProcess
    cache_dir: Path

    @property
    def port(self) -> int:
        return self.proxy.port

    def count(self, key: str) -> int:
        return int(http_get_json(self.backend.port, f"/cache/count?id={key}")["requests"])

    def not_modified(self, key: str) -> int:
        return int(http_get_json(self.backend.port, f"/cache/count?id={key}")["not_modified"])


def start_stack(
    workdir: Path, cache_dir: Path, backend: EchoBackend | None = None, *, workers: int = 1
) -> Stack:
    backend = backend or start_echo(workdir / "logs")
    port = free_port()
    config = proxy_config(
        port, [backend.address], workers=workers, top=top(cache_dir), route_params=ROUTE
    )
    return Stack(backend, start_proxy(workdir / "proxy", config, port), cache_dir)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("cache")
    s = start_stack(workdir, workdir / "cache")
    try:
        yield s
    finally:
        s.proxy.stop()
        s.backend.stop()


def target(key: str, cc: str = "max-age=60", **params: str) -> bytes:
    query = f"id={key}&cc={quote(cc)}" + "".join(f"&{k}={quote(v)}" for k, v in params.items())
    return f"/cache?{query}".encode()


def get(
    port: int, path: bytes, *, method: bytes = b"GET", headers: tuple[bytes, ...] = ()
) -> RawResponse:
    with RawClient(port, timeout=15) as client:
        lines = b"".join(h + b"\r\n" for h in headers)
        client.send(b"%s %s HTTP/1.1\r\nHost: cache.test\r\n%s\r\n" % (method, path, lines))
        resp = client.read_response(head_request=method == b"HEAD")
        assert resp is not None, "connection closed without an answer"
        return resp


def status_of(resp: RawResponse) -> str:
    return (resp.header(b"cache-status") or b"").decode()


# ---- hits, HEAD, Age ----


def test_miss_then_hit_with_age(stack: Stack) -> None:
    path = target("hit1")
    first = get(stack.port, path)
    assert first.status == 200
    assert first.body == b"id=hit1 n=1 ae=\n"
    assert status_of(first) == "ferryman; fwd=uri-miss; stored"
    time.sleep(1.1)
    second = get(stack.port, path)
    assert second.status == 200
    assert second.body == first.body
    assert status_of(second).startswith("ferryman; hit; ttl=5")
    assert int(second.header(b"age") or b"-1") >= 1
    assert stack.count("hit1") == 1


# Over the tiered store's promotion limit (1 MiB): served from the disk file's mapping.
DISK_ONLY = 1_300_000
# Far more than the kernel's socket buffers hold (tcp_wmem's 4 MiB at most, and the
# client's 16 KiB): most of it is still in the mapping while the client waits.
HUGE = 24_000_000


@pytest.mark.parametrize(
    ("prefix", "size"),
    [(b"", 700_000), (b"/mem", 700_000), (b"", DISK_ONLY)],
    ids=["memory-tier", "memory-only", "disk-mapped"],
)
def test_large_hits_pipelined_to_a_slow_reader_arrive_whole_and_in_order(
    stack: Stack, prefix: bytes, size: int
) -> None:
    """A body well over one 64 KiB chunk, answered from memory or from the disk file's
    mapping, goes to an HTTP/1 client in one write: the hits queued behind it on the
    same connection must still follow it whole and in order while the client reads
    slowly (the transport above its high-water mark holds the next response back)."""
    key = f"big{len(prefix)}-{size}"
    path = prefix + target(key, bytes=str(size))
    assert "stored" in status_of(get(stack.port, path))
    small = prefix + target(key + "s")
    get(stack.port, small)
    expected = big_pattern(size)
    with RawClient(stack.port, timeout=15) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        one = b"GET %s HTTP/1.1\r\nHost: cache.test\r\n\r\n"
        client.send(one % path + one % small + one % path + one % small)
        time.sleep(0.3)  # the proxy writes into a full socket and must wait
        answers = []
        for _ in range(4):
            resp = client.read_response()
            assert resp is not None, "connection closed before all four answers"
            answers.append(resp)
    for i in (0, 2):
        assert answers[i].status == 200 and answers[i].complete
        assert "hit" in status_of(answers[i])
        assert answers[i].body == expected, f"answer {i}: the large body differs"
    for i in (1, 3):
        assert answers[i].body == f"id={key}s n=1 ae=\n".encode()
    assert stack.count(key) == 1


def _slow_hit(stack: Stack, path: bytes) -> RawClient:
    """A connection that asked for `path` and has read only the start of the answer."""
    client = RawClient(stack.port, timeout=15)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    client.send(b"GET %s HTTP/1.1\r\nHost: cache.test\r\n\r\n" % path)
    head = client.read_head()
    assert head is not None and "hit" in status_of(head)
    time.sleep(0.3)  # the proxy has written what the socket takes and waits
    return client


def _newest_entry_file(stack: Stack, size: int) -> Path:
    files = [p for p in stack.cache_dir.rglob("*") if p.is_file() and p.stat().st_size > size]
    assert files, "no entry file of that size"
    return max(files, key=lambda p: p.stat().st_mtime_ns)


def test_mapped_hit_outlives_a_purge_of_its_file(stack: Stack) -> None:
    """The entry's file is unlinked (PURGE) while a slow client is still being sent its
    mapping: the client still gets every byte, and the next request is a miss."""
    path = target("bigpurge", bytes=str(HUGE))
    get(stack.port, path)
    with _slow_hit(stack, path) as client:
        assert get(stack.port, path, method=b"PURGE").status == 200
        body, whole = client.read_exactly(HUGE)
    assert whole and body == big_pattern(HUGE)
    assert "uri-miss" in status_of(get(stack.port, path))
    assert stack.count("bigpurge") == 2


def test_mapped_hit_of_a_file_truncated_in_place_is_cut_short_not_fatal(stack: Stack) -> None:
    """Someone truncates a cache file in place while its mapping is being sent (the
    proxy never does: it renames new files over old ones). The kernel answers the
    write with EFAULT: the client's answer ends short of its Content-Length and the
    connection closes; the worker lives on and the torn entry is fetched again."""
    path = target("bigtrunc", bytes=str(HUGE))
    get(stack.port, path)
    children = child_pids(stack.proxy.pid)
    with _slow_hit(stack, path) as client:
        os.truncate(_newest_entry_file(stack, HUGE), 4096)
        body, whole = client.read_exactly(HUGE)
    assert not whole, "the client must see the truncation"
    assert body == big_pattern(HUGE)[: len(body)]
    again = get(stack.port, path)
    assert again.status == 200 and again.body == big_pattern(HUGE)
    assert "hit" not in status_of(again)
    assert child_pids(stack.proxy.pid) == children, "a worker died and was replaced"


def test_head_is_answered_from_a_stored_get(stack: Stack) -> None:
    path = target("head1")
    body = get(stack.port, path).body
    resp = get(stack.port, path, method=b"HEAD")
    assert resp.status == 200
    assert resp.header(b"content-length") == str(len(body)).encode()
    assert "hit" in status_of(resp)
    assert stack.count("head1") == 1


def test_client_validators_get_304_from_the_store(stack: Stack) -> None:
    path = target("inm1", etag='"e1"')
    get(stack.port, path)
    resp = get(stack.port, path, headers=(b'If-None-Match: "e1"',))
    assert resp.status == 304
    assert resp.header(b"etag") == b'"e1"'
    # Field names in any case; a validator that does not match gets the whole entry.
    assert get(stack.port, path, headers=(b'IF-NONE-MATCH: W/"e1"',)).status == 304
    other = get(stack.port, path, headers=(b'If-None-Match: "e2"',))
    assert other.status == 200 and other.body
    assert stack.count("inm1") == 1


def test_if_modified_since_gets_304_from_the_store(stack: Stack) -> None:
    lm = "Sun, 06 Nov 1994 08:49:37 GMT"
    path = target("ims1", lm=lm)
    body = get(stack.port, path).body
    later = get(stack.port, path, headers=(b"if-modified-since: Mon, 07 Nov 1994 08:49:37 GMT",))
    assert later.status == 304 and later.body == b""
    earlier = get(stack.port, path, headers=(b"If-Modified-Since: Sat, 05 Nov 1994 08:49:37 GMT",))
    assert earlier.status == 200 and earlier.body == body
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.1.3): no ETag stored, so
    # the entry does not match, whatever the date says.
    both = get(
        stack.port,
        path,
        headers=(b'If-None-Match: "x"', b"If-Modified-Since: Mon, 07 Nov 1994 08:49:37 GMT"),
    )
    assert both.status == 200
    assert stack.count("ims1") == 1


# ---- revalidation ----


def test_stale_entry_is_revalidated_and_304_merged(stack: Stack) -> None:
    path = target("reval1", cc="max-age=1", etag='"v1"')
    assert get(stack.port, path).body == b"id=reval1 n=1 ae=\n"
    time.sleep(1.2)
    resp = get(stack.port, path)
    assert resp.status == 200
    # The stored body, although the backend counted a second request (the 304).
    assert resp.body == b"id=reval1 n=1 ae=\n"
    assert status_of(resp).startswith("ferryman; fwd=stale; fwd-status=304")
    assert stack.count("reval1") == 2
    assert stack.not_modified("reval1") == 1
    again = get(stack.port, path)
    assert status_of(again).startswith("ferryman; hit")
    assert stack.count("reval1") == 2


def test_changed_response_replaces_the_stale_entry(stack: Stack) -> None:
    # Without a validator the revalidation is a plain fetch; the new answer replaces.
    path = target("reval2", cc="max-age=1")
    assert get(stack.port, path).body.startswith(b"id=reval2 n=1")
    time.sleep(1.2)
    resp = get(stack.port, path)
    assert resp.body.startswith(b"id=reval2 n=2")
    assert "fwd=stale" in status_of(resp) and "stored" in status_of(resp)
    assert get(stack.port, path).body.startswith(b"id=reval2 n=2")
    assert stack.count("reval2") == 2


# ---- stale-while-revalidate ----


def test_stale_while_revalidate_serves_at_once_and_refreshes_once(stack: Stack) -> None:
    # The backend takes 600 ms per answer; stale answers must not wait for it.
    path = target("swr1", cc="max-age=1, stale-while-revalidate=30", ms="600")
    assert get(stack.port, path).body.startswith(b"id=swr1 n=1")
    time.sleep(1.2)
    started = time.monotonic()
    stale = [get(stack.port, path) for _ in range(5)]
    elapsed = time.monotonic() - started
    assert elapsed < 0.5, f"stale answers waited for the backend ({elapsed:.2f}s)"
    for resp in stale:
        assert resp.body.startswith(b"id=swr1 n=1")
        assert "detail=stale-while-revalidate" in status_of(resp)
    deadline = time.monotonic() + 10
    while stack.count("swr1") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    # The refresh has reached the backend, which answers 600 ms later; then the proxy
    # stores it. Until then the stale entry is served (and must start no other refresh).
    fresh = get(stack.port, path)
    while not fresh.body.startswith(b"id=swr1 n=2") and time.monotonic() < deadline:
        time.sleep(0.1)
        fresh = get(stack.port, path)
    assert fresh.body.startswith(b"id=swr1 n=2")
    assert status_of(fresh).startswith("ferryman; hit")
    time.sleep(0.3)  # a second (wrong) refresh would have reached the backend by now
    assert stack.count("swr1") == 2, "exactly one background refresh"


# ---- Vary ----


def test_vary_keeps_variants_apart(stack: Stack) -> None:
    path = target("vary1", vary="Accept-Encoding")
    gzip = get(stack.port, path, headers=(b"Accept-Encoding: gzip",))
    assert gzip.body == b"id=vary1 n=1 ae=gzip\n"
    br = get(stack.port, path, headers=(b"Accept-Encoding: br",))
    assert br.body == b"id=vary1 n=2 ae=br\n"
    assert "fwd=vary-miss" in status_of(br)
    for value, n in ((b"gzip", 1), (b"br", 2), (b"GZIP", 1)):
        resp = get(stack.port, path, headers=(b"Accept-Encoding: " + value,))
        assert resp.body == b"id=vary1 n=%d ae=%s\n" % (n, value.lower()), value
        assert "hit" in status_of(resp)
    assert stack.count("vary1") == 2


def test_unkeyed_headers_do_not_select_or_poison(stack: Stack) -> None:
    path = target("poison1")
    first = get(stack.port, path, headers=(b"X-Forwarded-Host: evil.example", b"X-Evil: 1"))
    plain = get(stack.port, path)
    assert plain.body == first.body
    assert "hit" in status_of(plain)
    assert plain.header(b"x-forwarded-host") is None
    assert stack.count("poison1") == 1


# ---- collapsed forwarding ----


async def _fetch(port: int, path: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET %s HTTP/1.1\r\nHost: cache.test\r\nConnection: close\r\n\r\n" % path)
        data = await asyncio.wait_for(reader.read(-1), 30)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def _many(port: int, path: bytes, n: int) -> list[tuple[int, bytes]]:
    return await asyncio.gather(*(_fetch(port, path) for _ in range(n)))


def test_concurrent_misses_make_one_upstream_request(stack: Stack) -> None:
    n = max(50, int(1000 * min(SCALE, 1.0)))
    # The backend's answer takes 500 ms, so every request arrives while it is awaited.
    path = target("lock1", ms="500")
    results = asyncio.run(_many(stack.port, path, n))
    assert [status for status, _ in results] == [200] * n
    assert {body for _, body in results} == {b"id=lock1 n=1 ae=\n"}
    assert stack.count("lock1") == 1


def test_waiters_go_upstream_when_the_answer_is_not_storable(stack: Stack) -> None:
    path = target("lock2", cc="no-store", ms="300")
    results = asyncio.run(_many(stack.port, path, 5))
    assert [status for status, _ in results] == [200] * 5
    # The first answer could not be stored: each waiter fetched its own.
    assert stack.count("lock2") == 5


# ---- bodies cut short ----


def test_truncated_upstream_body_is_not_stored(stack: Stack) -> None:
    def fetch() -> RawResponse:
        with RawClient(stack.port, timeout=15) as client:
            client.send(b"GET /truncate?bytes=200000 HTTP/1.1\r\nHost: cache.test\r\n\r\n")
            resp = client.read_response()
            assert resp is not None
            return resp

    before = int(http_get_json(stack.backend.port, "/count")["requests"])
    first = fetch()
    assert not first.complete, "the client must see the truncation"
    second = fetch()
    assert not second.complete
    after = int(http_get_json(stack.backend.port, "/count")["requests"])
    # Both /truncate requests reached the backend (plus the two /count requests).
    assert after - before == 3
    assert "uri-miss" in status_of(second)
    leftovers = [p for p in stack.cache_dir.rglob("*") if p.is_file() and "tmp" in p.name]
    assert leftovers == []


# ---- PURGE ----


def test_purge_removes_a_key_and_a_prefix(stack: Stack) -> None:
    path = target("purge1")
    get(stack.port, path)
    assert "hit" in status_of(get(stack.port, path))
    resp = get(stack.port, path, method=b"PURGE")
    assert resp.status == 200 and resp.body == b"purged 1\n"
    assert "uri-miss" in status_of(get(stack.port, path))
    assert stack.count("purge1") == 2
    for key in ("purgeA", "purgeB"):
        get(stack.port, target(key))
    resp = get(stack.port, b"/cache?id=purge*", method=b"PURGE")
    assert resp.status == 200
    assert resp.body == b"purged 3\n"  # purge1 (stored again), purgeA, purgeB
    assert get(stack.port, b"/cache?id=purge*", method=b"PURGE").status == 404
    assert get(stack.port, path, method=b"PURGE").status == 404


# ---- Cache-Status values ----


def test_cache_status_values(stack: Stack) -> None:
    bypass = get(stack.port, target("cs1"), headers=(b"X-Bypass: 1",))
    assert status_of(bypass) == "ferryman; fwd=bypass; stored"
    assert "hit" in status_of(get(stack.port, target("cs1")))
    no_store = get(stack.port, target("cs2", cc="no-store"))
    assert status_of(no_store) == "ferryman; fwd=uri-miss; detail=no-store"
    private = get(stack.port, target("cs3", cc="private, max-age=60"))
    assert status_of(private) == "ferryman; fwd=uri-miss; detail=private"
    post = get(stack.port, target("cs4"), method=b"POST", headers=(b"Content-Length: 0",))
    assert status_of(post) == "ferryman; fwd=method"
    forced = get(stack.port, target("cs1"), headers=(b"Cache-Control: no-cache",))
    assert status_of(forced).startswith("ferryman; fwd=request")
    assert stack.count("cs1") == 2


def test_memory_only_zone(stack: Stack) -> None:
    path = b"/mem" + target("mem1")
    assert "stored" in status_of(get(stack.port, path))
    assert "hit" in status_of(get(stack.port, path))
    assert stack.count("mem1") == 1


# ---- processes stopped: their own stacks ----


def test_stale_if_error_when_the_backend_is_down(tmp_path: Path) -> None:
    s = start_stack(tmp_path, tmp_path / "cache")
    try:
        sie = target("sie1", cc="max-age=1, stale-if-error=60")
        plain = target("sie2", cc="max-age=1")  # proxy_cache_use_stale error covers it
        strict = target("sie3", cc="max-age=1, must-revalidate")
        for path in (sie, plain, strict):
            assert get(s.port, path).status == 200
        s.backend.stop()
        time.sleep(1.2)
        resp = get(s.port, sie)
        assert resp.status == 200 and resp.body == b"id=sie1 n=1 ae=\n"
        assert "detail=stale-if-error" in status_of(resp)
        assert get(s.port, plain).status == 200
        assert get(s.port, strict).status == 502  # must-revalidate forbids stale use
    finally:
        s.proxy.stop()
        s.backend.stop()


def test_workers_see_each_others_purge_and_replace_at_once(tmp_path: Path) -> None:
    """Each worker keeps hot entries in its own memory tier; a purge or a replace by one
    worker must not leave the other serving its old copy (the shared change stamps)."""
    s = start_stack(tmp_path, tmp_path / "cache", workers=2)
    try:
        path = target("mw1")
        # Fresh connections are spread over both workers (SO_REUSEPORT hashes the
        # client's port), so both end up holding the entry in memory.
        bodies = [get(s.port, path).body for _ in range(40)]
        assert set(bodies) == {b"id=mw1 n=1 ae=\n"}
        assert get(s.port, path, method=b"PURGE").status == 200
        bodies = [get(s.port, path).body for _ in range(40)]
        assert set(bodies) == {b"id=mw1 n=2 ae=\n"}  # one miss stored n=2; never n=1
        replaced = get(s.port, path, headers=(b"X-Bypass: 1",))  # fetched and stored anew
        assert replaced.body == b"id=mw1 n=3 ae=\n" and "stored" in status_of(replaced)
        bodies = [get(s.port, path).body for _ in range(40)]
        assert set(bodies) == {b"id=mw1 n=3 ae=\n"}
        assert s.count("mw1") == 3
    finally:
        s.proxy.stop()
        s.backend.stop()


def test_disk_cache_survives_a_restart(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    s = start_stack(tmp_path / "one", cache_dir)
    try:
        path = target("disk1", bytes="100000")
        first = get(s.port, path)
        assert len(first.body) == 100000
        s.proxy.stop()
        again = start_stack(tmp_path / "two", cache_dir, backend=s.backend)
        try:
            resp = get(again.port, path)
            assert resp.status == 200 and resp.body == first.body
            assert "hit" in status_of(resp)
            assert s.count("disk1") == 1
        finally:
            again.proxy.stop()
    finally:
        s.proxy.stop()
        s.backend.stop()
