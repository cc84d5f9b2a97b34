#!/usr/bin/env bash
# Static files: Ferryman serving a file from disk beside nginx, with `sendfile off` (its
# default) and `sendfile on` (most distributions' setting), in one interleaved run of
# the shared harness (../../shared/bench/run.sh), then the ratios:
#
#   ferryman/nginx <size> MB/s ratio   (test bulk: 4 connections, GET /big, BIG_KB=4096)
#
#   bench/static.sh          (make bench-static)   QUICK=1 bench/static.sh: a smoke run
#
# Knobs (env) as bench/run.sh: ROUNDS DURATION WORKERS PYTHON OUT QUICK BIG_KB, and the
# shared harness's own.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source=bench/harness_common.sh
source "$HERE/harness_common.sh"
export ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} TESTS=bulk BIG_KB=${BIG_KB:-4096}
export WORKERS=${WORKERS:-1} TAG=${TAG:-static}
export OUT=${OUT:-/tmp/ferryman-bench-static.$(date +%Y%m%d-%H%M%S)}

bash "$ROOT/scripts/build-accel.sh" >&2 || echo "bench/static.sh: no compiled build" >&2
target="bash '$HERE/static/target.sh'"
targets=(
    "nginx=exec $target nginx {port} {backends} {workers}"
    "nginx-sendfile=exec $target nginx-sendfile {port} {backends} {workers}"
    "ferryman=exec $target ferryman {port} {backends} {workers}"
)
echo "bench/static.sh: OUT=$OUT ROUNDS=$ROUNDS DURATION=$DURATION BIG_KB=$BIG_KB WORKERS=$WORKERS" >&2
run_harness ferryman nginx-sendfile "${targets[@]}" "$@"
