#!/usr/bin/env bash
# The whole benchmark suite in one run (`make bench`), then one table of ratios:
#
#   1. main      the shared harness (../../shared/bench/run.sh), targets interleaved:
#                direct, nginx (the harness's: keepalive 32), nginx-pool (the same with a
#                pool that does not run out: targets.sh), nginx with its access log (and
#                that pool), HAProxy, Ferryman (lean), Ferryman as deployed (access log +
#                metrics/admin: bench/targets.sh), the bare relay and proxy.py; tests c50,
#                c1000, c1 (latency), bulk (1 MiB)
#   2. variants  the harness again, c50 only: nginx (both pools) and Ferryman with 1 and
#                2 workers,
#                Ferryman on the stock asyncio loop (--no-uvloop), the pure sources, and
#                both with limit_req, limit_conn and an allow list on (targets.sh *-limits)
#   3. tuned     the harness again, c1000 only: Ferryman as deployed, and the same with
#                max_conns 8 per backend and a queue (targets.sh ferryman-queue), beside
#                nginx with its access log
#   4. tls       bench/tls.sh: HTTPS keep-alive req/s (and handshakes/s) beside nginx
#   5. h2        bench/h2.sh: HTTP/2 req/s beside nginx
#   6. cache     bench/cache.sh: cache hits beside nginx proxy_cache (1 MiB from the
#                memory tier, then 4 MiB from the disk tier)
#   7. static    bench/static.sh: a 4 MiB static file beside nginx, sendfile off and on
#   then bench/table.py OUT -> OUT/table.md (also printed).
#
#   bench/all.sh                   3 rounds x 10 s: about 37 minutes (docs/benchmarks.md)
#   QUICK=1 bench/all.sh           1 round x 3 s: about 4 minutes, a smoke run
#
# Knobs (env): ROUNDS DURATION WARMUP OUT PYTHON; PHASES (default "main variants tuned
# tls h2 cache static"); MAIN_TESTS (default "c50 c1000 c1 bulk"); PROXYPY=0 skips proxy.py;
# PROXYPY_VERSION (2.4.10); every knob of the shared harness (PIN, PROXY_CPUS, ...).
# Loopback only; every load run is time-bounded; each phase stops what it started.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SHARED_RUN="${SHARED_BENCH:-$ROOT/../shared/bench/run.sh}"
RELAY="${RELAY:-$ROOT/../shared/reference/relay_sketch.py}"
[ -f "$SHARED_RUN" ] || { echo "bench/all.sh: no shared harness at $SHARED_RUN (SHARED_BENCH)" >&2; exit 1; }

if [ "${QUICK:-0}" = 1 ]; then
    export ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-3} WARMUP=${WARMUP:-1}
fi
export ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} WORKERS=${WORKERS:-1}
export OUT=${OUT:-/tmp/ferryman-bench.$(date +%Y%m%d-%H%M%S)}
PHASES=${PHASES:-"main variants tuned tls h2 cache static"}
MAIN_TESTS=${MAIN_TESTS:-"c50 c1000 c1 bulk"}
PROXYPY_VERSION=${PROXYPY_VERSION:-2.4.10}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHON="$(command -v "$PYTHON")"
mkdir -p "$OUT"
started=$(date +%s)
log() { echo "bench/all.sh [$(( $(date +%s) - started ))s]: $*" >&2; }

# The harness's backends and proxies, then tls.sh's and h2.sh's: a port someone else
# holds would be measured in place of ours.
bp=${BACKEND_PORT:-9001} pp=${PROXY_PORT_BASE:-8081}
bash "$HERE/ports_free.sh" "$bp-$((bp + 5))" "$pp-$((pp + 19))" 9201 9211 8461-8462 8471-8472

bash "$ROOT/scripts/build-accel.sh" >&2 || log "no compiled build; Ferryman runs the pure sources"

# proxy.py in a venv of its own (never in the project's): pinned, made once per OUT.
proxypy_target=()
if [ "${PROXYPY:-1}" = 1 ]; then
    export PROXYPY_VENV="$OUT/proxypy-venv"
    if [ ! -x "$PROXYPY_VENV/bin/proxy" ]; then
        log "installing proxy.py==$PROXYPY_VERSION into $PROXYPY_VENV"
        if python3 -m venv "$PROXYPY_VENV" >&2 \
            && "$PROXYPY_VENV/bin/pip" install -q "proxy.py==$PROXYPY_VERSION" >"$OUT/proxypy-pip.log" 2>&1; then
            :
        else
            log "proxy.py could not be installed (see $OUT/proxypy-pip.log); running without it"
        fi
    fi
    if [ -x "$PROXYPY_VENV/bin/proxy" ]; then
        proxypy_target=("proxypy=exec bash '$HERE/targets.sh' proxypy {port} {backends} {workers}")
    fi
fi

# Ferryman's lean rows: bench/targets.sh's `ferryman` (its flags are explained there).
ferryman_cmd() {  # ferryman_cmd WORKERS [FLAGS...]
    local w=$1; shift
    echo "FERRYMAN_EXTRA='$*' exec bash '$HERE/targets.sh' ferryman {port} {backends} $w"
}
relay_target=()
if [ -f "$RELAY" ]; then
    relay_target=("relay=exec '$PYTHON' '$RELAY' --port {port} --backends {backends} --workers {workers}")
else
    log "no relay baseline ($RELAY); running without it"
fi

status=0
phase_main() {
    TAG=main TESTS="$MAIN_TESTS" bash "$SHARED_RUN" direct nginx \
        "nginx-pool=exec bash '$HERE/targets.sh' nginx-pool {port} {backends} {workers}" \
        "nginx-log=exec bash '$HERE/targets.sh' nginx-log {port} {backends} {workers}" \
        haproxy \
        "ferryman=$(ferryman_cmd '{workers}')" \
        "ferryman-full=exec bash '$HERE/targets.sh' ferryman-full {port} {backends} {workers}" \
        "${relay_target[@]}" "${proxypy_target[@]}"
}
phase_variants() {
    # 2 workers against 1, both pinned to the one proxy CPU: on 2 cores this shows what
    # a second worker costs (accept balancing, two event loops), not what it gains.
    TAG=variants TESTS=c50 bash "$SHARED_RUN" nginx:1 nginx:2 \
        "nginx-pool-w1=exec bash '$HERE/targets.sh' nginx-pool {port} {backends} 1" \
        "nginx-pool-w2=exec bash '$HERE/targets.sh' nginx-pool {port} {backends} 2" \
        "ferryman-w1=$(ferryman_cmd 1)" "ferryman-w2=$(ferryman_cmd 2)" \
        "ferryman-asyncio=$(ferryman_cmd 1 --no-uvloop)" \
        "ferryman-pure=export FERRYMAN_PURE=1; $(ferryman_cmd 1)" \
        "nginx-limits=exec bash '$HERE/targets.sh' nginx-limits {port} {backends} 1" \
        "ferryman-limits=exec bash '$HERE/targets.sh' ferryman-limits {port} {backends} 1"
}
phase_tuned() {
    TAG=tuned TESTS=c1000 bash "$SHARED_RUN" \
        "nginx-log=exec bash '$HERE/targets.sh' nginx-log {port} {backends} 1" \
        "ferryman-full=exec bash '$HERE/targets.sh' ferryman-full {port} {backends} 1" \
        "ferryman-queue=exec bash '$HERE/targets.sh' ferryman-queue {port} {backends} 1"
}
phase_tls() { OUT="$OUT/tls" bash "$HERE/tls.sh"; }
phase_h2() { OUT="$OUT/h2" bash "$HERE/h2.sh"; }
phase_cache() {
    OUT="$OUT/cache" TAG=cache bash "$HERE/cache.sh"
    # 4 MiB bodies: over the memory tier's 1 MiB promotion limit, so every hit is
    # served from the disk tier (its file's mapping), as nginx serves its files.
    OUT="$OUT/cache-disk" TAG=cache-disk TESTS=bulk BIG_KB=4096 bash "$HERE/cache.sh"
}
phase_static() { OUT="$OUT/static" TAG=static bash "$HERE/static.sh"; }

log "OUT=$OUT ROUNDS=$ROUNDS DURATION=${DURATION}s PHASES=\"$PHASES\""
for phase in $PHASES; do
    log "phase $phase"
    "phase_$phase" >"$OUT/$phase.log" 2>&1 || { status=$?; log "phase $phase failed ($status): $OUT/$phase.log"; }
done
log "done"
"$PYTHON" "$HERE/table.py" "$OUT" | tee "$OUT/table.md"
exit "$status"
