#!/usr/bin/env bash
# Cache-hit throughput: Ferryman's proxy cache beside nginx's proxy_cache, in one
# interleaved run of the shared harness (../../shared/bench/run.sh), against the same
# backends, then the ratios:
#
#   ferryman-cache/nginx small req/s ratio   (test c50: 50 connections, GET / (36 bytes))
#   ferryman-cache/nginx 1MiB MB/s ratio     (test bulk: 4 connections, GET /big (1 MiB))
#
# Both proxies cache every 200 for 10 minutes (bench/cache/target.sh writes both
# configurations); after the warm-up every request is a hit, so this measures serving
# from the cache, not proxying.
#
#   bench/cache.sh          (make bench-cache)   QUICK=1 bench/cache.sh: a smoke run
#
# SNAPSHOT=1 runs a copy of the tree (in $OUT/tree, compiled there) instead of this
# checkout: the compiled build is then never rebuilt in place in a shared checkout.
#
# Knobs (env) as bench/run.sh: ROUNDS DURATION TESTS WORKERS PYTHON OUT QUICK, and the
# shared harness's own.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source=bench/harness_common.sh
source "$HERE/harness_common.sh"
export ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} TESTS=${TESTS:-"c50 bulk"}
export WORKERS=${WORKERS:-1} TAG=${TAG:-cache-w${WORKERS:-1}}
export OUT=${OUT:-/tmp/ferryman-bench-cache.$(date +%Y%m%d-%H%M%S)}

if [ "${SNAPSHOT:-0}" = 1 ]; then
    tree="$OUT/tree"
    rm -rf "$tree"; mkdir -p "$tree"
    (cd "$ROOT" && tar --exclude=./.venv --exclude=./.git --exclude='*.so' \
        --exclude=__pycache__ --exclude=.mypy_cache -cf - .) | tar -xf - -C "$tree"
    [ -e "$ROOT/.venv" ] && ln -s "$ROOT/.venv" "$tree/.venv"
    SNAPSHOT=0 SHARED_BENCH="$SHARED_RUN" exec bash "$tree/bench/cache.sh" "$@"
fi

bash "$ROOT/scripts/build-accel.sh" >&2 || echo "bench/cache.sh: no compiled build" >&2
target="bash '$HERE/cache/target.sh'"
targets=(
    "nginx-cache=exec $target nginx {port} {backends} {workers}"
    "ferryman-cache=exec $target ferryman {port} {backends} {workers}"
)
echo "bench/cache.sh: OUT=$OUT ROUNDS=$ROUNDS DURATION=$DURATION TESTS=\"$TESTS\" WORKERS=$WORKERS" >&2
run_harness ferryman-cache none "${targets[@]}" "$@"
