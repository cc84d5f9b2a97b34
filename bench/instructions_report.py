"""What bench/instructions.sh prints: instructions per request, and by function.

instructions_report.py total DIR
    the instructions counted in DIR's callgrind.* files (every process of a run)
instructions_report.py report SHORT_DIR LONG_DIR IR_SHORT N_SHORT IR_LONG N_LONG TOP INCL
    (IR_LONG - IR_SHORT) / (N_LONG - N_SHORT), then the TOP functions by their share
    of it, from callgrind_annotate (exclusive; INCL=1: inclusive)
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"\s*([\d,]+)\s+\([^)]*\)\s+(\S.*)$")


def total(directory: Path) -> int:
    n = 0
    for path in directory.glob("callgrind.*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("summary:"):
                n += int(line.split()[1])
    return n


def by_function(directory: Path, inclusive: bool) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in directory.glob("callgrind.*"):
        args = ["callgrind_annotate", "--threshold=100", "--auto=no"]
        if inclusive:
            args.append("--inclusive=yes")
        out = subprocess.run([*args, str(path)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = _LINE.match(line)
            if m is None or "PROGRAM TOTALS" in line:
                continue
            # "file:function [object]" -> function
            name = m.group(2).split(" [")[0].rsplit(":", 1)[-1]
            counts[name] += int(m.group(1).replace(",", ""))
    return counts


def report(argv: list[str]) -> None:
    short, long_ = Path(argv[0]), Path(argv[1])
    ir_short, n_short, ir_long, n_long = (int(a) for a in argv[2:6])
    top, inclusive = int(argv[6]), argv[7] == "1"
    requests = n_long - n_short
    if requests <= 0:
        sys.exit(f"instructions_report: no more requests in the long run ({n_short}, {n_long})")
    per_request = (ir_long - ir_short) / requests
    print(f"instructions per request: {per_request:,.0f}")
    print(f"  (runs: {ir_short:,} for {n_short:,} requests, {ir_long:,} for {n_long:,})")
    a, b = by_function(short, inclusive), by_function(long_, inclusive)
    rows = sorted(((b[k] - a.get(k, 0)) / requests, k) for k in b)
    print(f"\nper request, by function ({'inclusive' if inclusive else 'exclusive'}):")
    for cost, name in reversed(rows[-top:]):
        print(f"{cost:9,.0f}  {name[:100]}")


def main() -> None:
    if sys.argv[1] == "total":
        print(total(Path(sys.argv[2])))
    else:
        report(sys.argv[2:])


if __name__ == "__main__":
    main()
