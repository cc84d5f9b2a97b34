#!/usr/bin/env bash
# Instructions per request (`make bench-instructions`): valgrind's callgrind counts the
# instructions a Ferryman worker executes for a small proxied request, and which
# functions they are spent in. Unlike req/s on this VM (5-10% between runs of the same
# build), the count is deterministic: the same build under the same load gives the same
# figure to within about 0.1%, so a change worth 1-2% can be read off one A/B.
#
# Method: the target runs twice under callgrind (all its processes: --trace-children),
# each time loaded at c50 by wrk for SHORT, then LONG seconds. The difference in
# instructions over the difference in requests is what one request costs, without the
# start-up, the imports and the connections' set-up that both runs share. Under
# valgrind a worker serves 1,000-2,000 requests a second, so timer work (the sweeper's
# 0.1 s tick, the once-a-second flushes) weighs 30-50 times more per request than at full
# speed: compare builds with it, do not read it as a profile of full-speed time. The
# kernel's share (most of a request's time) is not counted at all.
#
#   bench/instructions.sh                         the project's own build (compiled)
#   SRC=/tmp/prev bench/instructions.sh           another checkout, compiled there
#                                                 (scripts/build-accel.sh with PY=...)
#
# Knobs (env): TARGET (ferryman-full: access log + metrics, as deployed; ferryman-limits,
# ferryman-queue: bench/targets.sh's; ferryman: the lean command line; ferryman-cache:
# bench/cache/target.sh's cache, where every request after the first is a hit), CONNS=50,
# SHORT=3, LONG=10, TOP=40 (functions listed),
# INCLUSIVE=1 (list by inclusive cost), PYTHON, OUT, SRC.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SRC=${SRC:-$ROOT}
TARGET=${TARGET:-ferryman-full}
CONNS=${CONNS:-50}
SHORT=${SHORT:-3}
LONG=${LONG:-10}
OUT=${OUT:-/tmp/ferryman-instructions.$(date +%Y%m%d-%H%M%S)}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BACKEND_PORT=${BACKEND_PORT:-9261}
PORT=${PORT:-8517}
export NBACKENDS=${NBACKENDS:-6}
BENCH=bench/instructions.sh

# shellcheck source=bench/tls_common.sh
source "$HERE/tls_common.sh"
require_tools wrk nginx taskset valgrind callgrind_annotate

write_backend_conf "ferryman-instructions-backend-0123456789ab"
start_group backend taskset -c 1 nginx -p "$OUT" -c "$OUT/backend.conf" -g 'daemon off;'
wait_port "$BACKEND_PORT"
backends=$(backend_list)

# run SECONDS: the target under callgrind, SECONDS of load, a graceful stop (callgrind
# writes its counts as each process exits); sets IR (instructions) and REQUESTS.
run() {
    local seconds=$1 dir="$OUT/cg-$1"
    rm -rf "$dir"; mkdir -p "$dir"
    # targets.sh runs $PYTHON: this wrapper puts valgrind in front of it.
    cat >"$dir/python" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --trace-children=yes --dump-instr=no \
    --callgrind-out-file="$dir/callgrind.%p" "$PYTHON" "\$@"
WRAP
    chmod +x "$dir/python"
    local target=("$SRC/bench/targets.sh" "$TARGET")
    case "$TARGET" in
    ferryman | ferryman-full | ferryman-limits | ferryman-queue) ;;
    ferryman-cache) target=("$SRC/bench/cache/target.sh" ferryman) ;;
    *) echo "$BENCH: TARGET is ferryman-full, -limits, -queue, -cache or ferryman, not $TARGET" >&2
        exit 2 ;;
    esac
    start_group "ferryman-$seconds" env WORK="$dir" PYTHON="$dir/python" taskset -c 0 \
        bash "${target[@]}" "$PORT" "$backends" 1
    local pgid=${PGIDS[-1]}
    # Start-up under valgrind takes tens of seconds.
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
        sleep 0.2
    done
    taskset -c 1 timeout $((seconds + 30)) wrk -t1 -c"$CONNS" -d"${seconds}s" \
        "http://127.0.0.1:$PORT/" >"$dir/wrk.txt" 2>&1
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 600); do
        pgrep -g "$pgid" >/dev/null || break
        sleep 0.2
    done
    REQUESTS=$(awk '/requests in/ { print $1 }' "$dir/wrk.txt")
    IR=$("$PYTHON" "$HERE/instructions_report.py" total "$dir")
}

echo "$BENCH: $TARGET from $SRC, c$CONNS, runs of ${SHORT}s and ${LONG}s under callgrind" >&2
run "$SHORT"; ir_short=$IR n_short=${REQUESTS:-0}
run "$LONG"; ir_long=$IR n_long=${REQUESTS:-0}
"$PYTHON" "$HERE/instructions_report.py" report "$OUT/cg-$SHORT" "$OUT/cg-$LONG" \
    "$ir_short" "$n_short" "$ir_long" "$n_long" "${TOP:-40}" "${INCLUSIVE:-0}" |
    tee "$OUT/summary.txt"
echo "$BENCH: $OUT (summary.txt; callgrind.* files for callgrind_annotate)" >&2
