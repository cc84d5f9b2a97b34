"""Framing fuzz: hypothesis mutates valid requests (byte insertions, deletions and
replacements around the head and the framing fields, case changes, Content-Length and
Transfer-Encoding edits, pipelined and truncated messages) and sends each over a raw
socket to a real `ferryman run` in front of the recording backend.

Properties, for every example:
  * whatever the backend received parses, under the recorder's strict parser, as
    well-framed messages only (no error), and they are exactly the requests whose
    answers (the recorder numbers each one) the client got back: nothing extra;
  * the proxy answers only with statuses it may give for a client's bytes, then closes
    (the client half-closes after sending; an incomplete request is refused).
And over the whole run: the proxy still serves a valid request at the end, and its
worker's RSS grows by less than MEMORY_BOUND.

Bounded and reproducible: a fixed number of examples, derandomized, no example
database, no deadline; well under a minute on a shared machine.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.memory import RssSampler, rss_bytes, wait_for_children
from support.procs import ProxyProcess, free_port, start_proxy
from support.rawhttp import RawClient
from support.recorder import Recorder

SCALE = float(os.environ.get("FERRYMAN_SLOW_SCALE", "1"))
EXAMPLES = max(50, int(300 * min(SCALE, 3)))
# A worker holds at most one bounded head (64 KiB) and small buffers per connection;
# examples are sequential, so growth beyond this means something is kept per request.
MEMORY_BOUND = 40 * 1024 * 1024
TOP = "timeouts: {client_header: 2s, client_body: 2s, keepalive: 2s}"
# What the proxy may answer to a client's bytes with a healthy backend behind it.
ALLOWED = {100, 200, 400, 404, 405, 413, 414, 417, 431, 501, 505}
_STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.1 (\d{3}) ")
_SEQ = re.compile(rb"\r\nX-Recorder-Seq: (\d+)\r\n")


@dataclass(frozen=True)
class Stack:
    recorder: Recorder
    proxy: ProxyProcess
    worker_pid: int

    @property
    def port(self) -> int:
        return self.proxy.port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("fuzz-framing")
    with Recorder() as recorder:
        port = free_port()
        text = (
            f"workers: 1\n{TOP}\n"
            f'upstreams:\n  app:\n    servers:\n      - {{address: "{recorder.address}"}}\n'
            f'servers:\n  - listen: "127.0.0.1:{port}"\n    routes:\n'
            "      - {path: /small/, upstream: app, client_max_body_size: 8}\n"
            "      - {path: /, upstream: app}\n"
        )
        proxy = start_proxy(workdir, text, port)
        try:
            (worker,) = wait_for_children(proxy.pid, 1)
            yield Stack(recorder, proxy, worker)
        finally:
            proxy.stop()


BASES = [
    b"GET /f HTTP/1.1\r\nHost: a\r\nX-Id: 1\r\n\r\n",
    b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /small/ HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nhello world!",
    b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
    b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /c HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
]
FRAMING_LINES = [
    b"Content-Length: 5",
    b"Content-Length: 0",
    b"Content-Length: 40",
    b"Content-Length: 5, 5",
    b"Content-Length: +5",
    b"Content-Length: 99999999999999999999",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: xchunked",
    b"Transfer-Encoding:  chunked",
    b"Transfer-Encoding:\tchunked",
    b"Transfer-Encoding: chunked, identity",
    b"Transfer-Encoding: CHUNKED",
    b"Transfer-Encoding : chunked",
    b" Transfer-Encoding: chunked",
    b"Transfer_Encoding: chunked",
    b"Host: b",
    b"Connection: close",
    b"Connection: Upgrade",
    b"Upgrade: h2c",
    b"Upgrade: websocket",
    b"Expect: 100-continue",
]
SPECIAL = b" \t\r\n\x00\x0b\x7f\x80:;,-0123456789abcdefxX"
TAILS = [
    b"0\r\n\r\n",
    b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"\r\n",
]

byte_values = st.one_of(st.sampled_from(list(SPECIAL)), st.integers(0, 255))
position = st.floats(0, 1, allow_nan=False)
mutation = st.one_of(
    st.tuples(st.just("insert"), position, byte_values),
    st.tuples(st.just("replace"), position, byte_values),
    st.tuples(st.just("delete"), position, st.integers(1, 4)),
    st.tuples(st.just("case"), position, st.integers(1, 12)),
    st.tuples(st.just("field"), st.integers(0, 3), st.sampled_from(FRAMING_LINES)),
    st.tuples(st.just("append"), st.just(0.0), st.sampled_from(TAILS)),
    st.tuples(st.just("truncate"), position, st.just(0)),
)


def apply(data: bytes, op: tuple[str, float | int, object]) -> bytes:
    kind, where, arg = op
    at = int(float(where) * len(data)) if kind != "field" else 0
    if kind == "insert":
        assert isinstance(arg, int)
        return data[:at] + bytes([arg]) + data[at:]
    if kind == "replace":
        assert isinstance(arg, int)
        return data[:at] + bytes([arg]) + data[at + 1 :]
    if kind == "delete":
        assert isinstance(arg, int)
        return data[:at] + data[at + arg :]
    if kind == "case":
        assert isinstance(arg, int)
        return data[:at] + data[at : at + arg].swapcase() + data[at + arg :]
    if kind == "field":
        # After the request line or one of the first field lines of the first head.
        assert isinstance(arg, bytes) and isinstance(where, int)
        lines = data.split(b"\r\n")
        index = min(1 + where, max(1, len(lines) - 1))
        return b"\r\n".join([*lines[:index], arg, *lines[index:]])
    if kind == "append":
        assert isinstance(arg, bytes)
        return data + arg
    return data[: max(1, at)]  # truncate


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(BASES))
    for op in draw(st.lists(mutation, min_size=1, max_size=4)):
        data = apply(data, op)
    return data


def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, half-close, and read everything until the proxy closes."""
    with RawClient(port, timeout=5) as client:
        client.send(data)
        client.sock.shutdown(socket.SHUT_WR)
        return client.read_until_close()


def check_one(stack: Stack, data: bytes) -> set[int]:
    recorder = stack.recorder
    mark = recorder.mark()
    answer = exchange(stack.port, data)
    statuses = {int(s) for s in _STATUS.findall(answer)}
    assert statuses <= ALLOWED, (statuses, data, answer[:300])
    answered = {int(s) for s in _SEQ.findall(answer)}
    forwarded = {m.seq for m in recorder.messages_since(mark)}
    assert recorder.errors() == [], data
    assert forwarded == answered, (data, forwarded, answered)
    return answered


def test_mutated_requests_never_desynchronise(stack: Stack) -> None:
    seen: set[int] = set()
    before = rss_bytes(stack.worker_pid)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated())
    def run(data: bytes) -> None:
        seen.update(check_one(stack, data))

    with RssSampler([stack.worker_pid], interval=0.05) as sampler:
        run()
    # Still serving, and every message the backend ever framed was answered.
    answer = exchange(stack.port, b"GET /final HTTP/1.1\r\nHost: a\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert stack.proxy.proc.is_running()
    assert stack.recorder.errors() == []
    assert len(seen) > 10, "almost nothing was forwarded: the corpus is not exercising much"
    growth = sampler.peak - before
    assert growth < MEMORY_BOUND, f"worker RSS grew by {growth / 2**20:.1f} MiB"


def test_apply_mutations() -> None:
    # The mutation operators do what the strategy claims.
    base = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert apply(base, ("insert", 0.0, ord("X"))) == b"X" + base
    assert apply(base, ("delete", 0.0, 4)) == base[4:]
    assert apply(base, ("replace", 0.0, ord("P"))) == b"P" + base[1:]
    assert apply(base, ("case", 0.0, 3)) == b"get" + base[3:]
    assert apply(base, ("field", 0, b"X: y")) == b"GET / HTTP/1.1\r\nX: y\r\nHost: a\r\n\r\n"
    assert apply(base, ("truncate", 0.5, 0)) == base[: len(base) // 2]
