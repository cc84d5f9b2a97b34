#!/usr/bin/env bash
# A profile of the small-response hot path (`make profile`): py-spy samples one Ferryman
# worker (1 worker pinned to CPU 0) while wrk drives the c50 load (50 keep-alive
# connections, small response, on CPU 1) through it to a one-location nginx backend on
# six ports, then bench/profile_summary.py prints where the time goes: by area (ferryman's own
# packages, asyncio/uvloop, httptools, the rest) and the top functions by own time.
#
#   bench/profile.sh            (make profile)
#
# Saved in OUT: profile.collapsed (py-spy's raw collapsed stacks: feed it to
# flamegraph.pl or speedscope), profile.svg (a flame graph), summary.txt.
#
# The pure-Python sources are profiled by default (FERRYMAN_PURE=1): py-spy sees inside
# them; mypyc-compiled functions are C and show only with --native. ACCEL=1 profiles
# the compiled build with --native instead. TARGET=ferryman-full (default) has the
# access log and metrics on, as deployed; TARGET=ferryman is the lean command line;
# TARGET=ferryman-limits adds limit_req, limit_conn and an allow list (targets.sh).
# py-spy is pinned in pyproject.toml's `bench` extra and installed into the venv here
# if missing. py-spy attaches with ptrace (root, or kernel.yama.ptrace_scope=0).
#
# Knobs (env): DURATION=10 RATE=250 (samples/s) CONNS=50 TARGET ACCEL PYTHON OUT.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION=${DURATION:-10}
RATE=${RATE:-250}
CONNS=${CONNS:-50}
TARGET=${TARGET:-ferryman-full}
OUT=${OUT:-/tmp/ferryman-profile.$(date +%Y%m%d-%H%M%S)}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BACKEND_PORT=${BACKEND_PORT:-9241}
PORT=${PORT:-8497}
# Six backend ports, as the shared harness has: with one, 50 clients outgrow the
# 32 idle upstream connections kept per peer and every few requests pay a connect.
export NBACKENDS=${NBACKENDS:-6}
BENCH=bench/profile.sh
export WORK="$OUT"

PYSPY="$(dirname "$PYTHON")/py-spy"
if [ ! -x "$PYSPY" ]; then
    pin=$(grep -o '"py-spy==[^"]*"' "$ROOT/pyproject.toml" | tr -d '"')
    echo "$BENCH: installing ${pin:-py-spy} into $(dirname "$PYTHON")" >&2
    "$PYTHON" -m pip install -q "${pin:-py-spy}" >&2
fi

# shellcheck source=bench/tls_common.sh
source "$HERE/tls_common.sh"
require_tools wrk nginx taskset pgrep

if [ "${ACCEL:-0}" = 1 ]; then
    bash "$ROOT/scripts/build-accel.sh" >&2
    native=(--native); unset FERRYMAN_PURE
else
    native=(); export FERRYMAN_PURE=1
fi

write_backend_conf "ferryman-profile-bench-backend-012"
start_group backend taskset -c 1 nginx -p "$OUT" -c "$OUT/backend.conf" -g 'daemon off;'
wait_port "$BACKEND_PORT"
backends=$(backend_list)
case "$TARGET" in
ferryman-full | ferryman | ferryman-limits)
    start_group ferryman taskset -c 0 bash "$HERE/targets.sh" "$TARGET" "$PORT" "$backends" 1 ;;
*) echo "$BENCH: TARGET is ferryman-full, ferryman or ferryman-limits, not $TARGET" >&2; exit 2 ;;
esac
PGID=${PGIDS[-1]}
wait_port "$PORT"

load() { taskset -c 1 timeout $(( $1 + 10 )) wrk -t1 -c"$CONNS" -d"$1s" "http://127.0.0.1:$PORT/" 2>/dev/null; }
load 2 >/dev/null   # warm-up: upstream pool, imports, first buffers

# The worker is the process of the group that used the most CPU during the warm-up
# (the master and the admin process idle).
worker=$(for p in $(pgrep -g "$PGID"); do
    awk -v p="$p" '{ print $14 + $15, p }' "/proc/$p/stat" 2>/dev/null
done | sort -nr | awk 'NR == 1 { print $2 }')
echo "$BENCH: profiling worker $worker ($TARGET, $([ "${ACCEL:-0}" = 1 ] && echo compiled || echo pure sources)) for ${DURATION}s" >&2

load $(( DURATION + 2 )) >"$OUT/wrk.txt" &
wrk_pid=$!
sleep 1
"$PYSPY" record --pid "$worker" --duration "$DURATION" --rate "$RATE" "${native[@]}" \
    --format raw --output "$OUT/profile.collapsed" >"$OUT/py-spy.log" 2>&1
wait "$wrk_pid" || true
if command -v perl >/dev/null; then
    # A flame graph too, from a second short sample (py-spy writes one format per run).
    "$PYSPY" record --pid "$worker" --duration 3 --rate "$RATE" "${native[@]}" \
        --output "$OUT/profile.svg" >>"$OUT/py-spy.log" 2>&1 &
    spy=$!; load 4 >/dev/null; wait "$spy" || true
fi
rps=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$OUT/wrk.txt")
{
    echo "# $TARGET, 1 worker, c$CONNS small responses, ${rps:-?} req/s while sampled (py-spy slows it a little)"
    "$PYTHON" "$HERE/profile_summary.py" "$OUT/profile.collapsed"
} | tee "$OUT/summary.txt"
echo "$BENCH: $OUT (profile.collapsed, profile.svg, summary.txt)" >&2
