# Sourced by the scripts that run the shared harness with targets of their own
# (bench/cache.sh, bench/static.sh), once HERE and ROOT are set: SHARED_RUN (the shared
# harness, or SHARED_BENCH), QUICK=1's defaults (1 round of 3 s, 1 s warm-up) and
# PYTHON (the project's venv if there is one).
SHARED_RUN="${SHARED_BENCH:-$ROOT/../shared/bench/run.sh}"
if [ ! -f "$SHARED_RUN" ]; then
    echo "${0##*/}: the shared harness is missing: $SHARED_RUN (set SHARED_BENCH)" >&2
    exit 1
fi
if [ "${QUICK:-0}" = 1 ]; then
    export ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-3} WARMUP=${WARMUP:-1}
fi
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
PYTHON="$(command -v "$PYTHON")"
export PYTHON

# run_harness OURS ALSO TARGET... [HARNESS ARGS]: the shared harness over the targets,
# then ratios.py's ratios of OURS (and ALSO, "none" for nothing more) against the
# run's nginx, into $OUT/ratios.txt; exits with the harness's status.
run_harness() {
    local ours=$1 also=$2 status=0
    shift 2
    bash "$SHARED_RUN" "$@" || status=$?
    if [ -f "$OUT/results.tsv" ]; then
        "$PYTHON" "$HERE/ratios.py" "$OUT/results.tsv" --target "$ours" --also "$also" \
            | tee "$OUT/ratios.txt"
    fi
    exit "$status"
}
