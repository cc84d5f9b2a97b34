"""The HTTP/2 libraries compiled: whether h2, hpack and hyperframe come from the Cython
build in build/libs/ or from their installed, pure-Python packages.

scripts/build-lib-accel.py (run by `make`) compiles copies of the installed packages,
unchanged, and records in build/libs/STAMP.json which installed sources they are copies
of. `select` runs once, from ferryman/__init__.py, before anything imports the
libraries, and puts build/libs/ first on sys.path only when:

- `FERRYMAN_PURE` is not 1 (the pure run is pure throughout);
- the stamp matches the packages installed now (a `pip install` of another h2 makes the
  build stale: the installed packages run, with a warning);
- none of them is imported yet (two copies of h2 in one process would not share classes).

A copy compiled from the same source behaves as the source does; what changes is speed
(docs/benchmarks.md, fifteenth look).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import sys
import warnings
from typing import Any

__all__ = [
    "LIBRARIES",
    "LIBS_DIR",
    "STAMP_NAME",
    "build_state",
    "installed_state",
    "libraries_implementation",
    "select",
]

LIBRARIES = ("h2", "hpack", "hyperframe")
STAMP_NAME = "STAMP.json"
# Beside a source checkout: <root>/build/libs for <root>/src/ferryman. An installed
# Ferryman has none there, and runs the installed libraries.
LIBS_DIR = os.path.abspath(
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "build", "libs")
)
_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def installed_state(exclude: str = "") -> dict[str, Any]:
    """What a build made now would be made from: each library's installed directory and
    a digest of its sources' names, sizes and modification times, and this Python's
    extension suffix. `exclude`: a sys.path entry not to find them in (the build's)."""
    path = [p for p in sys.path if os.path.abspath(p or ".") != exclude]
    packages: dict[str, dict[str, str]] = {}
    for name in LIBRARIES:
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        locations = list(spec.submodule_search_locations or ()) if spec is not None else []
        if not locations:
            raise ModuleNotFoundError(f"{name} is not installed")
        packages[name] = {"source": locations[0], "digest": _digest(locations[0])}
    return {"python": _SUFFIX, "packages": packages}


def _digest(directory: str) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(f for f in filenames if f.endswith(".py")):
            st = os.stat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), directory)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def build_state(libs_dir: str = LIBS_DIR) -> str:
    """'current' (a build of the libraries installed now), 'stale' (of other sources,
    or unreadable) or 'absent'. The one test of a build: the build script's, `select`'s
    and the tests'."""
    libs_dir = os.path.abspath(libs_dir)
    stamp = os.path.join(libs_dir, STAMP_NAME)
    if not os.path.exists(stamp):
        return "absent"
    try:
        with open(stamp, encoding="utf-8") as f:
            built = json.load(f)
        current = installed_state(exclude=libs_dir)
    except (OSError, ValueError, ModuleNotFoundError):
        return "stale"
    return "current" if built == current else "stale"


def select(libs_dir: str = LIBS_DIR) -> str:
    """'compiled' (the build is now first on sys.path), 'pure' (the installed packages,
    by choice), 'stale' (the installed packages, the build being of other sources) or
    'absent' (no build)."""
    libs_dir = os.path.abspath(libs_dir)
    if os.environ.get("FERRYMAN_PURE") == "1" or any(n in sys.modules for n in LIBRARIES):
        # Chosen without reading the stamp: no warning for a build nobody will run.
        return "pure" if os.path.exists(os.path.join(libs_dir, STAMP_NAME)) else "absent"
    state = build_state(libs_dir)
    if state == "absent":
        return "absent"
    if state == "stale":
        warnings.warn(
            "ferryman: the compiled HTTP/2 libraries in build/libs are of other sources "
            "than the installed ones; running the installed ones (rebuild with `make accel`)",
            RuntimeWarning,
            stacklevel=2,
        )
        return "stale"
    if libs_dir not in sys.path:
        sys.path.insert(0, libs_dir)
    return "compiled"


def libraries_implementation() -> str:
    """'compiled' or 'pure': which h2 this process runs ('not loaded' before any)."""
    mod = sys.modules.get("h2.connection")
    if mod is None:
        return "not loaded"
    return "compiled" if (mod.__file__ or "").endswith(_SUFFIX) else "pure"
