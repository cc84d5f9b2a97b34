#!/usr/bin/env bash
# Compile the hot-path modules with mypyc, in place (the .so lands beside each .py).
# The list lives in src/ferryman/_accel.py. Skips the build when every .so is newer than
# its source. FERRYMAN_NO_ACCEL=1 skips it altogether (pure Python everywhere).
set -euo pipefail
cd "$(dirname "$0")/../src"
PY=${PY:-../.venv/bin/python}
[ "${FERRYMAN_NO_ACCEL:-0}" = 1 ] && { echo "build-accel: skipped (FERRYMAN_NO_ACCEL=1)"; exit 0; }
mapfile -t files < <("$PY" -c '
from ferryman._accel import ACCEL_MODULES
for m in ACCEL_MODULES: print(m.replace(".", "/") + ".py")')
fresh=1
for f in "${files[@]}"; do
    so=$(ls "${f%.py}".*.so 2>/dev/null | head -n 1 || true)
    if [ -z "$so" ] || [ "$f" -nt "$so" ]; then fresh=0; break; fi
done
# The list itself: a module taken off it must not stay compiled into the shared library.
lib=$(ls ./*__mypyc*.so 2>/dev/null | head -n 1 || true)
if [ -z "$lib" ] || [ ferryman/_accel.py -nt "$lib" ]; then fresh=0; fi
if [ "$fresh" = 1 ]; then echo "build-accel: up to date"; exit 0; fi
echo "build-accel: compiling ${#files[@]} modules with mypyc"
rm -f ./*__mypyc*.so
find ferryman -name '*.so' -delete
log=$(mktemp)
if ! "$PY" -m mypyc "${files[@]}" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    find ferryman -name '*.so' -delete
    echo "build-accel: mypyc failed; Ferryman will run its pure-Python sources" >&2
    exit 1
fi
rm -rf build "$log"
echo "build-accel: done ($("$PY" -c 'import ferryman.proxy.exchange, ferryman._accel as a; print(a.implementation())'))"
