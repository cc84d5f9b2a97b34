#!/usr/bin/env python3
"""Print Ferryman's throughput ratios to nginx from a shared-harness results.tsv.

    python3 bench/ratios.py OUT/results.tsv [--tag TAG] [--target ferryman] [--also relay]

Reads the columns the shared harness documents (tag, round, test, target, rps, mbps, ...),
takes the median over rounds per (test, target) within one tag (default: the last tag in
the file, i.e. the latest run), and prints

    ferryman/nginx small req/s ratio: X     (test c50, or the first cN test present)
    ferryman/nginx 1MiB MB/s ratio: Y       (test bulk)

then the same for each `--also` target (default: relay), as context. The baseline is the
first target whose name starts with "nginx", as in the harness's own summary.
A missing figure prints as n/a; the exit code is 0 unless the file cannot be read.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

SMALL_TEST = "c50"
BULK_TEST = "bulk"
# The bulk body's size, as the shared harness reads it (BIG_KB, default 1024).
_BIG_KB = int(os.environ.get("BIG_KB", "1024"))
BIG_LABEL = f"{_BIG_KB // 1024}MiB" if _BIG_KB % 1024 == 0 else f"{_BIG_KB}KiB"


def load(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def medians(rows: list[dict[str, str]], tag: str) -> dict[tuple[str, str], dict[str, float]]:
    """(test, target) -> {column: median over rounds} for the rps and mbps columns."""
    values: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["tag"] != tag:
            continue
        for column in ("rps", "mbps"):
            if row.get(column):
                values[row["test"], row["target"]][column].append(float(row[column]))
    return {
        key: {column: statistics.median(v) for column, v in cols.items() if v}
        for key, cols in values.items()
    }


def small_test(tests: list[str]) -> str | None:
    if SMALL_TEST in tests:
        return SMALL_TEST
    return next((t for t in tests if t.startswith("c") and t[1:].isdigit()), None)


def ratio_line(
    med: dict[tuple[str, str], dict[str, float]],
    target: str,
    baseline: str | None,
    test: str | None,
    column: str,
    label: str,
) -> list[str]:
    name = f"{target}/nginx {label} ratio:"
    mine = med.get((test, target), {}).get(column) if test else None
    base = med.get((test, baseline), {}).get(column) if test and baseline else None
    if mine is None or not base:
        return [f"{name} n/a"]
    unit = "req/s" if column == "rps" else "MB/s"
    return [
        f"{name} {mine / base:.2f}",
        f"  ({test}: {target} {mine:.0f} {unit}, {baseline} {base:.0f} {unit}, medians)",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--tag", help="rows of this tag (default: the last tag in the file)")
    parser.add_argument("--target", default="ferryman")
    parser.add_argument("--also", action="append", help="more targets to compare (default: relay)")
    args = parser.parse_args(argv)
    try:
        rows = load(args.results)
    except (OSError, csv.Error, KeyError) as exc:
        print(f"ratios.py: cannot read {args.results}: {exc}", file=sys.stderr)
        return 1
    if not rows:
        print(f"ratios.py: no rows in {args.results}", file=sys.stderr)
        return 1
    tag = args.tag or rows[-1]["tag"]
    med = medians(rows, tag)
    tests = list(dict.fromkeys(test for test, _ in med))
    targets = list(dict.fromkeys(target for _, target in med))
    baseline = next((t for t in targets if t.startswith("nginx")), None)
    small = small_test(tests)
    bulk = BULK_TEST if BULK_TEST in tests else None
    lines = [f"# {tag}: baseline {baseline or 'missing'}"]
    for target in [args.target, *(args.also if args.also is not None else ["relay"])]:
        if target != args.target and target not in targets:
            continue
        lines += ratio_line(med, target, baseline, small, "rps", "small req/s")
        lines += ratio_line(med, target, baseline, bulk, "mbps", f"{BIG_LABEL} MB/s")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
