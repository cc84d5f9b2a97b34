#!/usr/bin/env bash
# Ferryman beside nginx (and the throwaway relay baseline) in one interleaved run of the
# shared harness (../../shared/bench/run.sh), then the two ratios that matter:
#
#   ferryman/nginx small req/s ratio   (test c50: 50 keep-alive connections, 36-byte body)
#   ferryman/nginx 1MiB MB/s ratio     (test bulk: 4 connections fetching a 1 MiB file)
#
#   bench/run.sh [EXTRA_TARGET...]       e.g. haproxy, nginx:2, 'mine=COMMAND'
#
# Knobs (env): ROUNDS=3 DURATION=10 TESTS="c50 bulk"; QUICK=1 makes the defaults
# ROUNDS=1 DURATION=3 WARMUP=1; WORKERS (passed as {workers}); LB=roundrobin|leastconn
# (mapped to Ferryman's --balance); NO_UVLOOP=1; PYTHON (default: the repo's .venv);
# OUT (results dir, shared with the harness); every other knob of the shared harness.
# See bench/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SHARED_RUN="${SHARED_BENCH:-$(dirname "$0")/../../shared/bench/run.sh}"
RELAY="${RELAY:-$ROOT/../shared/reference/relay_sketch.py}"

if [ ! -f "$SHARED_RUN" ]; then
    echo "bench/run.sh: the shared harness is missing: $SHARED_RUN" >&2
    echo "  (expected shared/ beside the repository; set SHARED_BENCH=/path/to/run.sh)" >&2
    exit 1
fi

if [ "${QUICK:-0}" = 1 ]; then
    export ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-3} WARMUP=${WARMUP:-1}
fi
export ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} TESTS=${TESTS:-"c50 bulk"}
export WORKERS=${WORKERS:-1} LB=${LB:-roundrobin}
export OUT=${OUT:-/tmp/ferryman-bench.$(date +%Y%m%d-%H%M%S)}

if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
PYTHON="$(command -v "$PYTHON")"

case "$LB" in
    leastconn) balance=least_conn ;;
    roundrobin) balance=round_robin ;;
    *) echo "bench/run.sh: LB must be roundrobin or leastconn, not $LB" >&2; exit 2 ;;
esac
extra=""
if [ "${NO_UVLOOP:-0}" = 1 ]; then extra=" --no-uvloop"; fi

# Run from src/ so that `-m ferryman` is this checkout even without an editable install.
ferryman="cd '$ROOT/src' && exec '$PYTHON' -m ferryman proxy --listen 127.0.0.1:{port}"
# --no-forwarded-headers: the harness's nginx adds no X-Forwarded-* either, so both proxies
# send the upstream the same request (the extra 80 bytes cost the backend, which shares a
# CPU with wrk, enough to move the ratio).
ferryman+=" --backends {backends} --workers {workers} --balance $balance --access-log off"
# --keepalive-requests: the harness's nginx sets keepalive_requests 10000000 upstream.
ferryman+=" --no-forwarded-headers --keepalive-requests 10000000 --worker-connections 65536$extra"

bp=${BACKEND_PORT:-9001} pp=${PROXY_PORT_BASE:-8081}
bash "$HERE/ports_free.sh" "$bp-$((bp + ${NBACKENDS:-6} - 1))" "$pp-$((pp + 9))"

# The compiled hot path (mypyc, built by `make`) and the pure-Python sources, side by side.
bash "$ROOT/scripts/build-accel.sh" >&2 || echo "bench/run.sh: no compiled build" >&2
targets=(direct nginx "ferryman=$ferryman" "ferryman-pure=export FERRYMAN_PURE=1; $ferryman")
if [ -f "$RELAY" ]; then
    # The relay forks {workers}-1 children itself; exec keeps it in the harness's group.
    targets+=("relay=exec '$PYTHON' '$RELAY' --port {port} --backends {backends} --workers {workers}")
else
    echo "bench/run.sh: no relay baseline ($RELAY not found); running without it" >&2
fi
targets+=("$@")

echo "bench/run.sh: OUT=$OUT ROUNDS=$ROUNDS DURATION=$DURATION TESTS=\"$TESTS\" WORKERS=$WORKERS LB=$LB" >&2
status=0
bash "$SHARED_RUN" "${targets[@]}" || status=$?

if [ -f "$OUT/results.tsv" ]; then
    "$PYTHON" "$HERE/ratios.py" "$OUT/results.tsv" --also ferryman-pure --also relay \
        | tee "$OUT/ratios.txt"
fi
exit "$status"
