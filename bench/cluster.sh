#!/usr/bin/env bash
# The latency a shared zone adds to one request (cluster/, docs/cluster.md): p50 / p99 of
# sequential requests on ONE keep-alive connection (no concurrency, so this is the
# round trip each request pays, not throughput), for each pair:
#
#   limit_req   local zone            vs  the same zone `shared: true` (one Redis script)
#   cache hit   local memory tier     vs  a hit from the Redis tier (a local miss that
#                                          fetches the entry another instance stored)
#   (context)   no filter at all, and a cache miss that goes to the upstream
#
# Two instances (A fills the cache, B is measured) with one worker each, one echo
# backend and one redis-server (loopback, persistence off), all started here on free
# ports and stopped by PID at the end.
#
#   bench/cluster.sh        (make bench-cluster)     N=2000 requests per case (default)
#
# Knobs (env): N (requests per case), ROUNDS (turns the cases take, default 5), WARMUP
# (requests before measuring), PYTHON, OUT,
# PURE=0 to run the compiled modules if built (default: FERRYMAN_PURE=1, the sources).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
N=${N:-2000}
WARMUP=${WARMUP:-200}
OUT=${OUT:-/tmp/ferryman-bench-cluster.$(date +%Y%m%d-%H%M%S)}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
if [ "${PURE:-1}" = 1 ]; then export FERRYMAN_PURE=1; fi
command -v redis-server >/dev/null || {
    echo "bench/cluster.sh: redis-server missing (scripts/install-system-deps.sh)" >&2
    exit 1
}
mkdir -p "$OUT"
echo "bench/cluster.sh: OUT=$OUT N=$N WARMUP=$WARMUP FERRYMAN_PURE=${FERRYMAN_PURE:-0}" >&2

cd "$ROOT"
exec "$PYTHON" - "$OUT" "$N" "$WARMUP" <<'PY'
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

out, n, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pids: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], log: str, port: int) -> None:
    with open(os.path.join(out, log), "wb") as f:
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    pids.append(p)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{argv[0]} did not start; see {out}/{log}")
            time.sleep(0.05)


def config(port: int, redis: int, echo: int) -> str:
    return f"""
workers: 1
cluster: {{url: "redis://127.0.0.1:{redis}"}}
limit_zones:
  - {{name: local, kind: req, key: "all", rate: 100000r/s}}
  - {{name: shared, kind: req, key: "all", rate: 100000r/s, shared: true}}
cache_zones:
  - {{name: mem}}
  - {{name: tier, shared: true}}
upstreams:
  app:
    servers: [{{address: "127.0.0.1:{echo}"}}]
servers:
  - listen: "127.0.0.1:{port}"
    routes:
      - {{path: /echo/plain, upstream: app}}
      - path: /echo/limit-local
        upstream: app
        limit_req: [{{zone: local, burst: 100000, nodelay: true}}]
      - path: /echo/limit-shared
        upstream: app
        limit_req: [{{zone: shared, burst: 100000, nodelay: true}}]
      - path: /echo/cache-local
        upstream: app
        cache: {{zone: mem, valid: {{"200": 1h}}}}
      - path: /echo/cache-shared
        upstream: app
        cache: {{zone: tier, valid: {{"200": 1h}}}}
"""


unexpected: dict[str, int] = {}


def measure(port: int, targets: list[str], expect: str = "") -> list[float]:
    """Per-request seconds; with `expect`, the Cache-Status of each must contain it, so
    a hit is measured as a hit (the odd one that is not is counted and reported: a
    Redis call past its 50 ms bound on a busy machine goes upstream instead)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for target in targets:
        t0 = time.perf_counter()
        conn.request("GET", target)
        resp = conn.getresponse()
        resp.read()
        times.append(time.perf_counter() - t0)
        if resp.status != 200:
            raise SystemExit(f"{target}: {resp.status}")
        if expect and expect not in (resp.getheader("Cache-Status") or ""):
            unexpected[expect] = unexpected.get(expect, 0) + 1
    conn.close()
    return times


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1e6


try:
    redis_port, echo_port, a_port, b_port = (free_port() for _ in range(4))
    start(["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
           "--appendonly", "no", "--dir", out], "redis.log", redis_port)
    start([sys.executable, "-m", "ferryman", "echo", "--listen", f"127.0.0.1:{echo_port}"],
          "echo.log", echo_port)
    for name, port in (("a", a_port), ("b", b_port)):
        path = os.path.join(out, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(config(port, redis_port, echo_port))
        start([sys.executable, "-m", "ferryman", "run", "-c", path], f"{name}.log", port)
    time.sleep(1.5)  # both instances connect to Redis (their watcher pings every second)

    # The cases take turns, ROUNDS times, so a machine busy with something else for a
    # while (the CI box is shared) weighs on every case alike rather than on one.
    expect = {"cache hit, local memory": "hit", "cache hit, Redis tier": "hit",
              "cache miss, to upstream": "uri-miss"}
    cases = {
        "no filter (baseline)": lambda i: "/echo/plain",
        "limit_req, local zone": lambda i: "/echo/limit-local",
        "limit_req, shared zone": lambda i: "/echo/limit-shared",
        "cache hit, local memory": lambda i: "/echo/cache-local?k=1",
        # Distinct keys stored through A: each is a local miss on B, answered from Redis.
        "cache hit, Redis tier": lambda i: f"/echo/cache-shared?k={i}",
        "cache miss, to upstream": lambda i: f"/echo/cache-local?miss={i}",
    }
    measure(a_port, [f"/echo/cache-shared?k={i}" for i in range(n)])
    time.sleep(1.0)  # the write-behind publishes land
    for target in ("/echo/plain", "/echo/limit-local", "/echo/limit-shared",
                   "/echo/cache-local?k=1"):
        measure(b_port, [target] * warmup)
    samples: dict[str, list[float]] = {label: [] for label in cases}
    rounds = int(os.environ.get("ROUNDS", "5"))
    per = max(1, n // rounds)
    for r in range(rounds):
        print(f"bench/cluster.sh: round {r + 1}/{rounds}: {len(cases)} cases x {per}",
              file=sys.stderr, flush=True)
        for label, make in cases.items():
            targets = [make(r * per + i) for i in range(per)]
            samples[label] += measure(b_port, targets, expect.get(label, ""))
    rows = [(label, statistics.median(t) * 1e6, pct(t, 99), len(t))
            for label, t in samples.items()]

    lines = [f"{'case':28} {'p50 us':>9} {'p99 us':>9} {'n':>6}"]
    lines += [f"{label:28} {p50:9.0f} {p99:9.0f} {count:6d}" for label, p50, p99, count in rows]
    base = {label: (p50, p99) for label, p50, p99, _ in rows}
    def delta(a: str, b: str) -> str:
        return (f"{b} - {a}: p50 {base[b][0] - base[a][0]:+.0f} us, "
                f"p99 {base[b][1] - base[a][1]:+.0f} us")
    lines.append("")
    for what, count in unexpected.items():
        lines.append(f"note: {count} responses expected to be '{what}' were not")
    lines.append(delta("limit_req, local zone", "limit_req, shared zone"))
    lines.append(delta("cache hit, local memory", "cache hit, Redis tier"))
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out, "results.txt"), "w") as f:
        f.write(text + "\n")
finally:
    for p in reversed(pids):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(pids):
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
PY
