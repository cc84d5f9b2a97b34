"""_lib_accel: whether h2, hpack and hyperframe come from the Cython build or from
their installed packages. Fake packages in a temporary directory stand in for the
installed ones, so the decision is tested without compiling anything; the last tests
check the real build in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import ferryman
from ferryman import _lib_accel
from ferryman._lib_accel import (
    LIBRARIES,
    LIBS_DIR,
    STAMP_NAME,
    build_state,
    installed_state,
    select,
)

BUILD = Path(LIBS_DIR)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of fake installed libraries, alone on sys.path, none of them imported;
    sys.path and sys.modules are restored after."""
    packages = tmp_path / "site"
    for name in LIBRARIES:
        (packages / name).mkdir(parents=True)
        (packages / name / "__init__.py").write_text(f"NAME = {name!r}\n")
        (packages / name / "core.py").write_text("X = 1\n")
    monkeypatch.setattr(sys, "path", [str(packages)])
    for name in [m for m in sys.modules if m.partition(".")[0] in LIBRARIES]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delenv("FERRYMAN_PURE", raising=False)
    return packages


def built(tmp_path: Path, state: dict[str, object]) -> Path:
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / STAMP_NAME).write_text(json.dumps(state))
    return libs


def test_the_state_names_each_installed_package(site: Path) -> None:
    state = installed_state()
    assert set(state["packages"]) == set(LIBRARIES)
    assert state["packages"]["h2"]["source"] == str(site / "h2")


def test_the_state_changes_with_a_source_and_not_with_bytecode(site: Path) -> None:
    before = installed_state()
    (site / "h2" / "__pycache__").mkdir()
    (site / "h2" / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"x")
    assert installed_state() == before
    (site / "hpack" / "core.py").write_text("X = 2  # another release\n")
    after = installed_state()
    assert after["packages"]["hpack"] != before["packages"]["hpack"]
    assert after["packages"]["h2"] == before["packages"]["h2"]


def test_a_missing_library_is_an_error(site: Path) -> None:
    (site / "hyperframe" / "__init__.py").unlink()
    (site / "hyperframe" / "core.py").unlink()
    (site / "hyperframe").rmdir()
    with pytest.raises(ModuleNotFoundError, match="hyperframe"):
        installed_state()


def test_no_build_is_absent_and_changes_nothing(site: Path, tmp_path: Path) -> None:
    assert select(str(tmp_path / "libs")) == "absent"
    assert sys.path == [str(site)]


def test_a_current_build_goes_first_on_the_path(site: Path, tmp_path: Path) -> None:
    libs = built(tmp_path, installed_state())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select(str(libs)) == "compiled"
    assert sys.path == [str(libs), str(site)]
    assert select(str(libs)) == "compiled"  # again, before any import: not added twice
    assert sys.path == [str(libs), str(site)]


def test_a_build_of_other_sources_is_stale_and_not_used(site: Path, tmp_path: Path) -> None:
    libs = built(tmp_path, installed_state())
    (site / "h2" / "core.py").write_text("X = 3  # pip installed another h2\n")
    with pytest.warns(RuntimeWarning, match="other sources"):
        assert select(str(libs)) == "stale"
    assert sys.path == [str(site)]


def test_a_build_for_another_python_is_stale(site: Path, tmp_path: Path) -> None:
    state = installed_state()
    state["python"] = ".cpython-399-x86_64-linux-gnu.so"
    libs = built(tmp_path, state)
    with pytest.warns(RuntimeWarning):
        assert select(str(libs)) == "stale"
    assert sys.path == [str(site)]


def test_an_unreadable_stamp_is_stale(site: Path, tmp_path: Path) -> None:
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / STAMP_NAME).write_text("{not json")
    with pytest.warns(RuntimeWarning):
        assert select(str(libs)) == "stale"
    assert sys.path == [str(site)]


@pytest.mark.parametrize("why", ["FERRYMAN_PURE=1", "a library already imported"])
def test_no_build_is_chosen_for_a_pure_run_or_too_late(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    libs = built(tmp_path, installed_state())
    if why == "FERRYMAN_PURE=1":
        monkeypatch.setenv("FERRYMAN_PURE", "1")
    else:
        monkeypatch.setitem(sys.modules, "hpack", object())  # type: ignore[arg-type]
    assert select(str(libs)) == "pure"
    assert sys.path == [str(site)]


# ---- the real build, in a fresh interpreter ----

PROBE = (
    "import ferryman, h2.connection, hpack.hpack, hyperframe.frame\n"
    "from ferryman._lib_accel import libraries_implementation\n"
    "print(libraries_implementation(), h2.connection.__file__, hpack.hpack.__file__,"
    " hyperframe.frame.__file__)\n"
)


def probe(pure: bool) -> tuple[str, list[str], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FERRYMAN_PURE", "PYTHONPATH")}
    if pure:
        env["FERRYMAN_PURE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    impl, *files = proc.stdout.split()
    return impl, files, proc.stderr


def expected_in_a_fresh_process() -> str:
    """What `select` must decide for the project's own build/libs, worked out here from
    the stamp and the installed packages (not by calling `select`)."""
    return "compiled" if build_state() == "current" else "pure"


def test_fresh_process_runs_the_build_when_it_is_current() -> None:
    impl, files, stderr = probe(pure=False)
    expected = expected_in_a_fresh_process()
    assert impl == expected, stderr
    suffix = _lib_accel._SUFFIX
    for f in files:
        if expected == "compiled":
            assert f.startswith(str(BUILD)) and f.endswith(suffix), f
        else:
            assert not f.startswith(str(BUILD)) and f.endswith(".py"), f


def test_fresh_process_forced_pure_runs_the_installed_packages() -> None:
    impl, files, _ = probe(pure=True)
    assert impl == "pure"
    assert all(not f.startswith(str(BUILD)) and f.endswith(".py") for f in files), files


def test_the_libraries_are_built_with_the_hot_path() -> None:
    """scripts/build-accel.sh (run by `make test` and `make run`) builds both or neither:
    where the mypyc build of the hot path exists, so does a current build of the
    libraries, and the suite's HTTP/2 tests run on it."""
    hot_path = list(Path(ferryman.__file__).parent.rglob("*" + _lib_accel._SUFFIX))
    if hot_path:
        assert (BUILD / STAMP_NAME).exists(), "run `make accel`"
        assert expected_in_a_fresh_process() == "compiled"
