#!/usr/bin/env python3
"""Where the time goes, from py-spy's collapsed stacks (`py-spy record --format raw`).

    python3 bench/profile_summary.py profile.collapsed [--top 25]

Each line of the input is `frame;frame;...;frame COUNT`, a frame being
`function (path:line)` (or a native symbol with --native). Prints the share of samples
by area, by the innermost frame's file (own time: ferryman's packages, asyncio, uvloop,
httptools, the standard library, native code), then the top functions by own time and
by inclusive time among ferryman's. Only what py-spy saw: samples while the thread was
idle in the event loop's poll are not recorded (py-spy's default), so shares are of
busy Python-visible time. A function's own time includes the C it calls without a
Python frame: `ClientConnection.write` includes transport.write and so the write system
call, `run_worker` includes uvloop's loop itself (epoll_wait, callback dispatch).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^():]*)(?::(?P<line>\d+))?\)$")
AREAS = (
    ("ferryman/http", "ferryman.http (parsing, serialising)"),
    ("ferryman/server", "ferryman.server (client connection)"),
    ("ferryman/proxy", "ferryman.proxy (exchange)"),
    ("ferryman/upstream", "ferryman.upstream (pool, connection)"),
    ("ferryman/observability", "ferryman.observability (access log, metrics)"),
    ("ferryman/", "ferryman (other)"),
    ("uvloop", "uvloop"),
    ("httptools", "httptools"),
    ("asyncio/", "asyncio"),
)


def area(path: str) -> str:
    for needle, name in AREAS:
        if needle in path:
            return name
    if not path or path.startswith("<") or ".so" in path or "/" not in path:
        return "native / other"
    return "standard library / other Python"


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def split(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    if m is None:
        return frame, ""
    return m["func"], m["path"]


def short(frame: str) -> str:
    func, path = split(frame)
    if not path:
        return func
    return f"{func} ({'/'.join(path.split('/')[-2:])})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collapsed", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    stacks = parse(args.collapsed)
    total = sum(n for _, n in stacks)
    if not total:
        print("profile_summary.py: no samples", file=sys.stderr)
        return 1
    areas: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in stacks:
        areas[area(split(frames[-1])[1])] += n
        own[short(frames[-1])] += n
        for frame in set(frames):
            if "ferryman/" in split(frame)[1]:
                inclusive[short(frame)] += n
    print(f"{total} samples; own time includes the C a function calls (system calls too)")
    print("\n## own time by area")
    for name, n in areas.most_common():
        print(f"{100 * n / total:5.1f}%  {name}")
    print(f"\n## top {args.top} functions by own time")
    for name, n in own.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {name}")
    print(f"\n## top {args.top} ferryman functions by inclusive time")
    for name, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
