#!/usr/bin/env python3
"""The combined table of `make bench`: one Markdown table of ratios from every phase of
bench/all.sh, then the harness's medians per target.

    python3 bench/table.py OUT        (OUT: the directory bench/all.sh wrote)

Reads OUT/results.tsv (shared-harness rows, tags `main`, `variants` and `tuned`),
OUT/cache/results.tsv (tag `cache`), OUT/cache-disk/results.tsv (tag `cache-disk`: 4 MiB
bodies, served from the disk tier), OUT/static/results.tsv (tag `static`: a 4 MiB file),
OUT/tls/results.tsv and OUT/h2/results.tsv.
Every figure is the median over rounds; every ratio is ours / theirs from the same
run, so machine drift cancels. A figure that is missing (phase skipped or failed)
prints as n/a. The `goal` column is the performance issue's bar (docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

Medians = dict[tuple[str, str], dict[str, float]]
# Harness runs of their own, each in OUT/TAG with its rows tagged TAG.
SUBDIR_TAGS = ("cache", "cache-disk", "static")


@dataclass(frozen=True)
class Row:
    label: str
    source: str  # a harness tag (main, variants, tuned, or one of SUBDIR_TAGS), tls or h2
    test: str  # harness test (c50, bulk, ...) or "" for tls/h2
    metric: str  # a column, or "mb_per_cpu_s" (derived)
    ours: str
    theirs: str
    goal: str = ""
    lower_is_better: bool = False


# nginx-log and nginx-pool keep up to 1,024 idle upstream connections; the shared
# harness's nginx (nginx-w1, "keepalive 32") closes and reopens some at 50 clients and
# more at 1,000 (bench/targets.sh). The rows against nginx-w1 say so in their label.
FULL, LEAN, NGINX, NGINX_POOL, NGINX_LOG, HAPROXY = (
    "ferryman-full",
    "ferryman",
    "nginx-w1",
    "nginx-pool",
    "nginx-log",
    "haproxy-w1",
)
K32 = "the harness's nginx, keepalive 32"
ROWS = [
    Row("small, 50 conns: req/s (log+metrics on)", "main", "c50", "rps", FULL, NGINX_LOG, ">= 1.2"),
    Row("small, 50 conns: req/s (logs off)", "main", "c50", "rps", LEAN, NGINX_POOL, ">= 1.2"),
    Row(f"small, 50 conns: req/s (logs off) vs {K32}", "main", "c50", "rps", LEAN, NGINX),
    Row("small, 50 conns: req/s vs HAProxy", "main", "c50", "rps", FULL, HAPROXY, ">= 0.85"),
    Row("small, 50 conns: req/s vs proxy.py", "main", "c50", "rps", FULL, "proxypy", ">= 10"),
    Row("small, 50 conns: bare relay vs nginx", "main", "c50", "rps", "relay", NGINX_POOL),
    Row(f"small, 50 conns: bare relay vs {K32}", "main", "c50", "rps", "relay", NGINX),
    Row("small, 50 conns: req per proxy CPU-s", "main", "c50", "req_per_cpu_s", FULL, NGINX_LOG),
    Row(
        "small, 1000 conns: req/s (log+metrics on)",
        "main",
        "c1000",
        "rps",
        FULL,
        NGINX_LOG,
        ">= 1.5",
    ),
    Row("small, 1000 conns: req/s (logs off)", "main", "c1000", "rps", LEAN, NGINX_POOL, ">= 1.5"),
    Row(f"small, 1000 conns: req/s (logs off) vs {K32}", "main", "c1000", "rps", LEAN, NGINX),
    Row("small, 1000 conns: req/s vs HAProxy", "main", "c1000", "rps", FULL, HAPROXY),
    Row("1 conn: latency p50 ms (lower better)", "main", "c1", "p50_ms", FULL, NGINX_LOG, "", True),
    Row(
        "1 conn: latency p99 ms (lower better)",
        "main",
        "c1",
        "p99_ms",
        FULL,
        NGINX_LOG,
        "<= 1.0",
        True,
    ),
    Row("1 MiB bodies: MB/s", "main", "bulk", "mbps", FULL, NGINX_LOG, ">= 1.0"),
    Row(
        "1 MiB bodies: MB per proxy CPU-s",
        "main",
        "bulk",
        "mb_per_cpu_s",
        FULL,
        NGINX_LOG,
        ">= 1.0",
    ),
    Row("1 MiB bodies: MB/s vs HAProxy", "main", "bulk", "mbps", FULL, HAPROXY),
    Row(
        "stock asyncio loop (--no-uvloop): req/s",
        "variants",
        "c50",
        "rps",
        "ferryman-asyncio",
        "nginx-pool-w1",
        ">= 0.9",
    ),
    Row(
        f"stock asyncio loop (--no-uvloop): req/s vs {K32}",
        "variants",
        "c50",
        "rps",
        "ferryman-asyncio",
        NGINX,
    ),
    Row(
        "pure sources (no mypyc): req/s", "variants", "c50", "rps", "ferryman-pure", "nginx-pool-w1"
    ),
    Row(
        "2 workers against 1 (one CPU): Ferryman",
        "variants",
        "c50",
        "rps",
        "ferryman-w2",
        "ferryman-w1",
        ">= 0.95",
    ),
    Row(
        "2 workers against 1 (one CPU): nginx",
        "variants",
        "c50",
        "rps",
        "nginx-pool-w2",
        "nginx-pool-w1",
    ),
    Row(f"2 workers against 1 (one CPU): {K32}", "variants", "c50", "rps", "nginx-w2", NGINX),
    Row(
        "limit_req + limit_conn + allow list, log+metrics: req/s",
        "variants",
        "c50",
        "rps",
        "ferryman-limits",
        "nginx-limits",
    ),
    Row(
        "1000 conns, max_conns 8 + queue (tuned), log+metrics: req/s",
        "tuned",
        "c1000",
        "rps",
        "ferryman-queue",
        NGINX_LOG,
    ),
    Row(
        "1000 conns, max_conns 8 + queue against without: req/s",
        "tuned",
        "c1000",
        "rps",
        "ferryman-queue",
        FULL,
    ),
    Row(
        "1000 conns, max_conns 8 + queue against without: p99 ms (lower better)",
        "tuned",
        "c1000",
        "p99_ms",
        "ferryman-queue",
        FULL,
        "",
        True,
    ),
    Row("HTTPS keep-alive, 50 conns: req/s", "tls", "", "https_keepalive_rps", "ferryman", "nginx"),
    Row("TLS full handshakes/s", "tls", "", "handshakes_per_s", "ferryman", "nginx"),
    Row("HTTP/2, 4 conns x 100 streams: req/s", "h2", "", "h2_rps", "ferryman", "nginx"),
    Row(
        "cache hits, small, 50 conns: req/s", "cache", "c50", "rps", "ferryman-cache", "nginx-cache"
    ),
    Row("cache hits, 1 MiB: MB/s", "cache", "bulk", "mbps", "ferryman-cache", "nginx-cache"),
    Row(
        "cache hits, 4 MiB (disk tier): MB/s",
        "cache-disk",
        "bulk",
        "mbps",
        "ferryman-cache",
        "nginx-cache",
    ),
    Row("static file, 4 MiB: MB/s", "static", "bulk", "mbps", "ferryman", "nginx"),
    Row(
        "static file, 4 MiB: MB/s vs nginx sendfile on",
        "static",
        "bulk",
        "mbps",
        "ferryman",
        "nginx-sendfile",
    ),
]


def _read(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f, delimiter="\t"))
    except OSError:
        return []


def _median_by(rows: list[dict[str, str]], key: tuple[str, ...]) -> Medians:
    """(test, target) -> {column: median}; `key` names the two columns making the key
    (a missing column reads as "")."""
    values: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        k = (row.get(key[0], ""), row.get(key[1], ""))
        for column, text in row.items():
            try:
                value = float(text)
            except (TypeError, ValueError):
                continue
            values[k][column].append(value)
    out: Medians = {}
    for k, columns in values.items():
        out[k] = {c: statistics.median(v) for c, v in columns.items()}
        rps, mbps, per_cpu = (out[k].get(c) for c in ("rps", "mbps", "req_per_cpu_s"))
        if rps and mbps is not None and per_cpu:
            out[k]["mb_per_cpu_s"] = per_cpu * mbps / rps  # MB per request x requests per CPU-s
    return out


def load(out: Path) -> dict[str, Medians]:
    harness = _read(out / "results.tsv")
    for sub in SUBDIR_TAGS:
        harness += _read(out / sub / "results.tsv")
    by_tag: dict[str, Medians] = {}
    for tag in ("main", "variants", "tuned", *SUBDIR_TAGS):
        by_tag[tag] = _median_by([r for r in harness if r.get("tag") == tag], ("test", "target"))
    for name in ("tls", "h2"):
        by_tag[name] = _median_by(_read(out / name / "results.tsv"), ("test", "target"))
    return by_tag


def _fmt(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def render(data: dict[str, Medians]) -> list[str]:
    lines = [
        "| measure | ours | value | against | value | ratio | goal | errors (ours/theirs) |",
        "|---|---|---:|---|---:|---:|---|---|",
    ]
    for row in ROWS:
        med = data.get(row.source, {})
        ours = med.get((row.test, row.ours), {})
        theirs = med.get((row.test, row.theirs), {})
        a, b = ours.get(row.metric), theirs.get(row.metric)
        ratio = a / b if a is not None and b else None
        digits = 3 if row.metric.endswith("_ms") else 0 if a is None or a >= 100 else 1
        errors = f"{_fmt(ours.get('errors'), 0)}/{_fmt(theirs.get('errors'), 0)}"
        lines.append(
            f"| {row.label} | {row.ours} | {_fmt(a, digits)} | {row.theirs} | {_fmt(b, digits)}"
            f" | {_fmt(ratio, 2)} | {row.goal} | {errors} |"
        )
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    data = load(out)
    print(f"# Ferryman benchmark: {out}\n")
    print("Ratios are ours/theirs (medians over rounds, one run); for latency, lower is better.\n")
    print("\n".join(render(data)))
    for summary in (out / "summary.md", *(out / sub / "summary.md" for sub in SUBDIR_TAGS)):
        if summary.exists():
            print(f"\n## Medians per target ({summary.relative_to(out)})\n")
            print(summary.read_text().rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
