#!/usr/bin/env bash
# Compile the hot-path modules with mypyc, in place (the .so lands beside each .py), the
# limit zones' lock calls (filters/_mutex_calls.c) with the same compiler, and copies of
# the HTTP/2 libraries with Cython.
# The list lives in src/ferryman/_accel.py. Skips the build when every .so is newer than
# its source. FERRYMAN_NO_ACCEL=1 skips it altogether (pure Python everywhere).
set -euo pipefail
cd "$(dirname "$0")/../src"
PY=${PY:-../.venv/bin/python}
[ "${FERRYMAN_NO_ACCEL:-0}" = 1 ] && { echo "build-accel: skipped (FERRYMAN_NO_ACCEL=1)"; exit 0; }

# filters/_mutex_calls.c: three C wrappers the limit zones' locks call instead of ctypes
# (filters/shared_locks.py, which falls back to ctypes without them). Built with the
# compiler and flags setuptools gives any extension, as mypyc's modules are.
shim=ferryman/filters/_mutex_calls
# This interpreter's build only (one for another Python is not ours to load).
shim_so=$shim$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
if [ ! -e "$shim_so" ] || [ "$shim.c" -nt "$shim_so" ]; then
    log=$(mktemp)
    if "$PY" - >"$log" 2>&1 <<'BUILD'
from setuptools import Distribution, Extension
from setuptools.command.build_ext import build_ext

ext = Extension("ferryman.filters._mutex_calls", ["ferryman/filters/_mutex_calls.c"])
cmd = build_ext(Distribution({"ext_modules": [ext]}))
cmd.inplace = True
cmd.build_temp = "build/mutex_calls"
cmd.ensure_finalized()
cmd.run()
BUILD
    then
        echo "build-accel: built filters/_mutex_calls"
    else
        cat "$log" >&2
        rm -f "$shim".*.so
        echo "build-accel: filters/_mutex_calls.c did not build; the zones' locks use ctypes" >&2
    fi
    rm -rf "$log" build/mutex_calls
fi

# The HTTP/2 libraries (h2, hpack, hyperframe), compiled unchanged with Cython into
# ../build/libs (scripts/build-lib-accel.py; ferryman/_lib_accel.py decides at import).
"$PY" ../scripts/build-lib-accel.py ..

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
find ferryman -name '*.so' ! -name '_mutex_calls.*' -delete
log=$(mktemp)
if ! "$PY" -m mypyc "${files[@]}" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    find ferryman -name '*.so' ! -name '_mutex_calls.*' -delete
    echo "build-accel: mypyc failed; Ferryman will run its pure-Python sources" >&2
    exit 1
fi
rm -rf build "$log"
echo "build-accel: done ($("$PY" -c 'import ferryman.proxy.exchange, ferryman._accel as a; print(a.implementation())'))"
