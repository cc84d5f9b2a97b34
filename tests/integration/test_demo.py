"""`ferryman demo` (what `make run` starts): six echo backend processes on
127.0.0.11-16:3000 behind the reference nginx.conf, published on 127.0.0.1:8080."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from ferryman.demo import PLAIN_EVERY, progress_line
from support.procs import start_process, wait_for_port

_PROGRESS = re.compile(r"ferryman demo: ([0-9.]+) req/s, (\d+) served \| (.*)")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def test_demo_serves_six_uuids_and_stops_cleanly(tmp_path: Path) -> None:
    ports = [("127.0.0.1", 8080), ("127.0.0.1", 9901)]
    ports += [(f"127.0.0.{10 + i}", 3000) for i in range(1, 7)]
    busy = [f"{h}:{p}" for h, p in ports if not _port_free(h, p)]
    if busy:  # not a skip: the demo's fixed ports must be ours to use
        pytest.fail(f"ports needed by the demo are in use: {busy}")
    proc = start_process([sys.executable, "-m", "ferryman", "demo"], tmp_path / "demo.log")
    try:
        wait_for_port("127.0.0.1", 8080, proc, timeout=20)
        seen = []
        for _ in range(24):
            c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=5)
            c.request("GET", "/")
            r = c.getresponse()
            assert r.status == 200
            seen.append(r.read().decode())
            c.close()
        assert len(set(seen)) == 6, seen
        assert all(len(u) == 36 for u in seen)
        # The dashboard's API sees the six peers of the reference upstream.
        wait_for_port("127.0.0.1", 9901, proc, timeout=20)
        c = http.client.HTTPConnection("127.0.0.1", 9901, timeout=5)
        c.request("GET", "/api/upstreams")
        r = c.getresponse()
        assert r.status == 200
        body = r.read().decode()
        c.close()
        assert all(f'"server{i}:3000"' in body for i in range(1, 7)), body
        out = proc.output()
        assert "dashboard and admin API on http://127.0.0.1:9901/" in out
        assert "for i in $(seq 12); do curl -s http://127.0.0.1:8080/" in out
        assert "nginx.conf" in out
        # Progress: stdout is a file here, so a plain line every PLAIN_EVERY seconds
        # once something was served, with what each of the six backends served.
        deadline = time.monotonic() + 3 * PLAIN_EVERY
        served = 0
        while served < 24 and time.monotonic() < deadline:
            time.sleep(0.5)
            lines = _PROGRESS.findall(proc.output())
            served = int(lines[-1][1]) if lines else 0
        assert served >= 24, proc.output()[-2000:]
        peers = dict(p.rsplit(" ", 1) for p in lines[-1][2].split("  "))
        assert sorted(peers) == [f"server{i}" for i in range(1, 7)]
        assert sum(int(n) for n in peers.values()) == served
        assert all(int(n) > 0 for n in peers.values())  # least_conn spread them
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        code = proc.popen.wait(timeout=20)
    assert code == 0, proc.output()[-2000:]
    assert all(_port_free(h, p) for h, p in ports), "a demo process outlived Ctrl-C"


def test_progress_line_rate_and_counts() -> None:
    before = {"server1": 10, "server2": 10}
    now = {"server2": 20, "server1": 15}
    line = progress_line(before, now, 2.0)
    assert line == "ferryman demo: 7.5 req/s, 35 served | server1 15  server2 20"
    # After a reload the counts start again: the rate is 0, not negative.
    assert progress_line(now, {"server1": 1, "server2": 0}, 1.0).startswith(
        "ferryman demo: 0.0 req/s, 1 served"
    )
