"""Compile the HTTP/2 libraries (h2, hpack, hyperframe) with Cython, unchanged.

An HTTP/2 stream spends about two thirds of a worker's time in these three pure-Python
libraries (docs/benchmarks.md, fifteenth look). Cython compiles plain Python as it is:
the same source, the same classes, so Ferryman's subclasses of h2's still work and the
installed packages stay the pure-Python fallback.

The installed packages are copied into build/libs/ at the project root and compiled
there, each module's .so beside its .py; build/libs/STAMP.json records which installed
sources they came from. ferryman/_lib_accel.py puts build/libs/ first on sys.path
only when those sources are still the installed ones (and not under FERRYMAN_PURE=1).

Not compiled: the packages' __init__ (run once), and hpack's Huffman tables (data that
gcc takes minutes over and that is read, not run).

    python scripts/build-lib-accel.py ROOT      (scripts/build-accel.sh runs it)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent).resolve()
sys.path.insert(0, str(ROOT / "src"))
# Importing ferryman runs its choice of builds; this script only reads what is installed,
# so choose nothing and warn of nothing (a stale build is what it is about to replace).
os.environ["FERRYMAN_PURE"] = "1"

# The project's own view of what the build is and whether it is current (one place).
from ferryman._lib_accel import (  # noqa: E402
    LIBRARIES,
    LIBS_DIR,
    STAMP_NAME,
    build_state,
    installed_state,
)

_DATA_ONLY = frozenset({"__init__.py", "huffman_table.py", "huffman_constants.py"})


def main() -> int:
    out = Path(LIBS_DIR)
    if build_state(LIBS_DIR) == "current":
        print("build-accel: HTTP/2 libraries up to date")
        return 0
    state = installed_state(exclude=LIBS_DIR)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sources: list[str] = []
    for name in LIBRARIES:
        src = Path(state["packages"][name]["source"])
        shutil.copytree(src, out / name, ignore=shutil.ignore_patterns("__pycache__"))
        sources += [
            str(p.relative_to(out))
            for p in sorted((out / name).rglob("*.py"))
            if p.name not in _DATA_ONLY
        ]
    print(f"build-accel: compiling {len(sources)} modules of {', '.join(LIBRARIES)} with Cython")
    try:
        _compile(out, sources)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    (out / STAMP_NAME).write_text(json.dumps(state, indent=1, sort_keys=True))
    return 0


def _compile(out: Path, sources: list[str]) -> None:
    from Cython.Build import cythonize
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext

    os.chdir(out)
    modules = cythonize(
        sources,
        # Plain Python, compiled as it is: annotations are not C types here (a
        # `x: int` must not start refusing an IntEnum), functions stay introspectable.
        compiler_directives={"language_level": 3, "annotation_typing": False, "binding": True},
        nthreads=os.cpu_count() or 1,
        quiet=True,
    )
    cmd = build_ext(Distribution({"ext_modules": modules}))
    cmd.inplace = True
    cmd.parallel = os.cpu_count() or 1
    cmd.build_temp = str(out / "tmp")
    cmd.build_lib = str(out / "tmp" / "lib")
    cmd.ensure_finalized()
    cmd.run()
    shutil.rmtree(out / "tmp", ignore_errors=True)
    for c in out.rglob("*.c"):
        c.unlink()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    missing = [s for s in sources if not (out / (s.removesuffix(".py") + suffix)).exists()]
    if missing:
        raise RuntimeError(f"not built: {missing}")


if __name__ == "__main__":
    sys.exit(main())
