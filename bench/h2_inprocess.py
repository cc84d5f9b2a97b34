"""HTTP/2 in one process, without sockets: what the server connection costs a request,
with Ferryman's HPACK codec (http/hpack_codec.py) and with the hpack library's put back
on the same connection class, interleaved; and each codec's encode and decode alone.

    .venv/bin/python bench/h2_inprocess.py

A request is h2load's: its HEADERS (seven fields) into `receive_data`, then a
five-field response head and a 40-byte body out through `data_to_send`. The figures are
per request, in microseconds, the best of ROUNDS runs of REQUESTS. Runs whatever
build `import ferryman` selects (compiled, or the sources under FERRYMAN_PURE=1); it
prints which. Not a timed test: numbers to read, not to assert.
"""

from __future__ import annotations

import os
import time
import timeit
from collections.abc import Callable
from pathlib import Path

# ferryman first: importing it selects the build of h2 (ferryman/_lib_accel.py).
from ferryman.http import hpack_codec
from ferryman.server.h2_connection import _CONFIG, _H2

import h2.config  # isort: skip
import h2.connection  # isort: skip
import hpack  # isort: skip

REQUESTS = int(os.environ.get("REQUESTS", "20000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"127.0.0.1:8471"),
    (b":path", b"/"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
]
RESPONSE = [
    (b":status", b"200"),
    (b"server", b"nginx/1.22.1"),
    (b"date", b"Sat, 28 Nov 2026 20:10:00 GMT"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"40"),
]
BODY = b"x" * 40


def ours() -> _H2:
    return _H2(config=_CONFIG)


def librarys() -> _H2:
    conn = _H2(config=_CONFIG)
    conn.encoder = hpack.Encoder()
    conn.decoder = hpack.Decoder()
    conn.decoder.max_header_list_size = conn.DEFAULT_MAX_HEADER_LIST_SIZE
    return conn


def per_request(make: Callable[[], _H2], count: int) -> float:
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    server = make()
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    # The client never reads the answers: open its connection window all the way.
    client.increment_flow_control_window(2**31 - 1 - 65535)
    server.receive_data(client.data_to_send())
    blocks = []
    for _ in range(count):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, REQUEST, end_stream=True)
        blocks.append((sid, client.data_to_send()))
        del client.streams[sid]
    start = time.perf_counter()
    for sid, data in blocks:
        server.receive_data(data)
        server.send_headers(sid, RESPONSE)
        server.send_data(sid, BODY, end_stream=True)
        server.data_to_send()
    return (time.perf_counter() - start) / count * 1e6


def codec_alone() -> None:
    block = hpack.Encoder()
    first, again = block.encode(REQUEST), block.encode(REQUEST)
    n = 100_000
    for name, decode, encode in (
        ("ours", hpack_codec.Decoder().decode, hpack_codec.Encoder().encode),
        ("hpack", hpack.Decoder().decode, hpack.Encoder().encode),
    ):
        decode(first, raw=True)
        encode(RESPONSE)
        dec = min(timeit.repeat(lambda d=decode: d(again, raw=True), number=n, repeat=3))
        enc = min(timeit.repeat(lambda e=encode: e(RESPONSE), number=n, repeat=3))
        print(f"{name:5}  decode {dec / n * 1e6:6.2f} us  encode {enc / n * 1e6:6.2f} us")


def main() -> None:
    print(
        f"ferryman: {'compiled' if hpack_codec.__file__.endswith('.so') else 'sources'}; "
        f"h2 from {Path(h2.__file__).parent}"
    )
    codec_alone()
    for round_ in range(1, ROUNDS + 1):
        a = per_request(ours, REQUESTS)
        b = per_request(librarys, REQUESTS)
        print(f"round {round_}: a request {a:6.1f} us with ours, {b:6.1f} us with hpack's")


if __name__ == "__main__":
    main()
