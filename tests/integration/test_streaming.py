"""Large bodies stream through the proxy in bounded memory, both ways.

Uploads are generated on the fly and hashed as they are sent; the echo backend hashes
what it receives. Downloads from /big are read slowly first (the proxy must stop
reading from the backend rather than buffer: backpressure), then fast, and every byte
is checked against `big_pattern`. Throughout, the RSS of the proxy's worker process is
sampled from /proc.

The default suite runs 64 MiB variants; the 1 GiB ones are marked slow and scaled by
FERRYMAN_SLOW_SCALE (`make test-slow`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from ferryman.echo import big_pattern
from support.memory import RssSampler, rss_bytes, wait_for_children
from support.procs import EchoBackend, EchoFactory, ProxyProcess, free_port, proxy_config
from support.rawhttp import BodyReader, RawClient

ProxyFactory = Callable[..., ProxyProcess]

MiB = 1 << 20
GiB = 1 << 30
SCALE = float(os.environ.get("FERRYMAN_SLOW_SCALE", "1"))
# The worker's resident size may never pass this, and may not grow by more than
# MAX_GROWTH over its size before the transfer: a proxy that buffered a body instead
# of streaming it would blow through both (even the 64 MiB variants would show).
RSS_LIMIT = 120 * MiB
MAX_GROWTH = 32 * MiB
_BASE = hashlib.shake_256(b"ferryman streaming test").digest(MiB)


def scaled(size: int) -> int:
    return max(MiB, int(size * SCALE) // MiB * MiB)


@dataclass(frozen=True)
class Stack:
    backend: EchoBackend
    proxy: ProxyProcess
    workers: list[int]

    @property
    def port(self) -> int:
        return self.proxy.port

    def baseline(self) -> int:
        return max(rss_bytes(pid) for pid in self.workers)


@pytest.fixture
def stack(echo_server: EchoFactory, proxy: ProxyFactory) -> Iterator[Stack]:
    (backend,) = echo_server(1)
    port = free_port()
    p = proxy(proxy_config(port, [backend.address], top="access_log: off"), port)
    workers = wait_for_children(p.pid, 1)
    # Warm the worker up (imports, pools) so the baseline is its steady state.
    with RawClient(port) as client:
        client.send(b"GET /big?bytes=1048576 HTTP/1.1\r\nHost: t\r\n\r\n")
        resp = client.read_response()
        assert resp is not None and resp.status == 200 and len(resp.body) == MiB
    yield Stack(backend, p, workers)
    assert "Traceback" not in p.output(), p.output()


def assert_bounded(stack: Stack, sampler: RssSampler, baseline: int) -> None:
    assert sampler.samples >= 5, "too few RSS samples to mean anything"
    assert sampler.peak < RSS_LIMIT, f"worker RSS peaked at {sampler.peak / MiB:.1f} MiB"
    growth = sampler.peak - baseline
    assert growth < MAX_GROWTH, f"worker RSS grew by {growth / MiB:.1f} MiB while streaming"


# ---------------------------------------------------------------- uploads


def _pieces(size: int, chunked: bool) -> Iterator[bytes]:
    """`size` bytes in pieces, each different (a counter in front), so that a dropped,
    repeated or reordered piece changes the hash. Chunked uploads vary the sizes."""
    sizes = (MiB, 65537, MiB - 3, 4093) if chunked else (MiB,)
    sent = i = 0
    while sent < size:
        n = min(sizes[i % len(sizes)], size - sent)
        yield (i.to_bytes(8, "big") + _BASE[8:n])[:n]
        sent += n
        i += 1


def upload(stack: Stack, size: int, *, chunked: bool) -> None:
    baseline = stack.baseline()
    sha = hashlib.sha256()
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
    with RssSampler(stack.workers) as sampler, RawClient(stack.port, timeout=30) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\n%s\r\n\r\n" % framing)
        for piece in _pieces(size, chunked):
            sha.update(piece)
            if chunked:
                client.sock.sendmsg([b"%x\r\n" % len(piece), piece, b"\r\n"])
            else:
                client.send(piece)
        if chunked:
            client.send(b"0\r\n\r\n")
        resp = client.read_response()
    assert resp is not None and resp.status == 200, resp
    echoed = json.loads(resp.body)
    assert echoed["body_length"] == size
    assert echoed["body_sha256"] == sha.hexdigest()
    # The backend saw the framing the proxy chose, not the client's.
    sent_framing = {n.lower(): v for n, v in echoed["headers"]}
    if chunked:
        assert sent_framing.get("transfer-encoding") == "chunked"
    else:
        assert sent_framing.get("content-length") == str(size)
    assert_bounded(stack, sampler, baseline)


def test_upload_64mib_content_length(stack: Stack) -> None:
    upload(stack, 64 * MiB, chunked=False)


def test_upload_64mib_chunked(stack: Stack) -> None:
    upload(stack, 64 * MiB, chunked=True)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_upload_1gib_content_length(stack: Stack) -> None:
    upload(stack, scaled(GiB), chunked=False)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_upload_256mib_chunked(stack: Stack) -> None:
    upload(stack, scaled(256 * MiB), chunked=True)


# ---------------------------------------------------------------- downloads

_REF = big_pattern(MiB + 251)


def _check(data: bytes, offset: int, samples: tuple[int, ...] = ()) -> None:
    """Every byte against a reference cut from big_pattern; the pieces that hold one of
    the `samples` offsets also against big_pattern itself."""
    if any(offset <= s < offset + len(data) for s in samples):
        assert data == big_pattern(len(data), offset), f"sampled window at {offset} differs"
    start = offset % 251
    if data != _REF[start : start + len(data)]:
        expected = big_pattern(len(data), offset)
        first = next(i for i, (a, b) in enumerate(zip(data, expected, strict=True)) if a != b)
        raise AssertionError(f"body differs from big_pattern at byte {offset + first}")


def download(stack: Stack, size: int, *, chunked: bool, slow_seconds: float) -> None:
    """Read slowly (2 MiB/s) for `slow_seconds`, then as fast as possible."""
    baseline = stack.baseline()
    target = b"/big?bytes=%d%s" % (size, b"&chunked=1" if chunked else b"")
    offset = 0
    samples = (0, size // 3 + 7, size - 1)
    with RssSampler(stack.workers) as sampler, RawClient(stack.port, timeout=30) as client:
        client.send(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target)
        head = client.read_head()
        assert head is not None and head.status == 200
        if chunked:
            assert head.header(b"transfer-encoding") == b"chunked"
        else:
            assert head.header(b"content-length") == str(size).encode()
        body = BodyReader(client, head)
        # Slow: 64 KiB every 1/32 s. The proxy's buffers fill, it must pause the backend.
        slow_until = time.monotonic() + slow_seconds
        while time.monotonic() < slow_until:
            data = body.read(64 * 1024)
            assert data, "body ended during the slow phase"
            _check(data, offset, samples)
            offset += len(data)
            time.sleep(1 / 32)
        slow_peak = sampler.peak
        assert offset < size // 2, "the slow phase read too much to show backpressure"
        # Fast: the rest.
        while data := body.read(MiB):
            _check(data, offset, samples)
            offset += len(data)
        assert body.complete
    assert offset == size
    assert slow_peak - baseline < MAX_GROWTH, "the worker buffered while the client was slow"
    assert_bounded(stack, sampler, baseline)


def test_download_64mib_slow_then_fast(stack: Stack) -> None:
    download(stack, 64 * MiB, chunked=False, slow_seconds=1.0)


def test_download_64mib_chunked_slow_then_fast(stack: Stack) -> None:
    download(stack, 64 * MiB, chunked=True, slow_seconds=1.0)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_download_1gib_slow_then_fast(stack: Stack) -> None:
    download(stack, scaled(GiB), chunked=False, slow_seconds=2.0)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_download_1gib_chunked_slow_then_fast(stack: Stack) -> None:
    download(stack, scaled(GiB), chunked=True, slow_seconds=2.0)
