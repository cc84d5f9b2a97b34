"""_accel: which implementation of the hot path runs, compiled or pure."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import ferryman
from ferryman import _accel
from ferryman._accel import ACCEL_MODULES, _compiled_state, _SourceFinder, select_implementation

SO_SUFFIX = ".cpython-311-x86_64-linux-gnu.so"
SRC_PACKAGE = os.path.dirname(ferryman.__file__)
SOURCE_TIME = 1_700_000_000.0


def rel_path(package_dir: Path, module: str) -> Path:
    """ferryman.http.fields -> <package_dir>/http/fields (no suffix)."""
    return package_dir.joinpath(*module.split(".")[1:])


def write(path: Path, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))


def make_tree(
    package_dir: Path,
    *,
    built: bool = True,
    stale: frozenset[str] = frozenset(),
    missing: frozenset[str] = frozenset(),
) -> None:
    """Sources at SOURCE_TIME; builds one second newer, except `stale` (one second
    older) and `missing` (no build)."""
    for module in ACCEL_MODULES:
        base = rel_path(package_dir, module)
        write(base.with_name(base.name + ".py"), SOURCE_TIME)
        if not built or module in missing:
            continue
        so_time = SOURCE_TIME - 1 if module in stale else SOURCE_TIME + 1
        write(base.with_name(base.name + SO_SUFFIX), so_time)


# ---- _compiled_state ----


def test_absent_when_no_build(tmp_path: Path) -> None:
    make_tree(tmp_path, built=False)
    assert _compiled_state(str(tmp_path)) == "absent"


def test_absent_for_an_empty_directory(tmp_path: Path) -> None:
    assert _compiled_state(str(tmp_path)) == "absent"


def test_compiled_when_every_build_is_newer(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert _compiled_state(str(tmp_path)) == "compiled"


def test_compiled_when_build_and_source_have_the_same_mtime(tmp_path: Path) -> None:
    # Same rule as scripts/build-accel.sh (`-nt`): only a strictly newer source is stale.
    make_tree(tmp_path)
    base = rel_path(tmp_path, ACCEL_MODULES[0])
    os.utime(base.with_name(base.name + SO_SUFFIX), (SOURCE_TIME, SOURCE_TIME))
    assert _compiled_state(str(tmp_path)) == "compiled"


@pytest.mark.parametrize("module", [ACCEL_MODULES[0], "ferryman.routing.table", ACCEL_MODULES[-1]])
def test_stale_when_one_build_is_older_than_its_source(tmp_path: Path, module: str) -> None:
    make_tree(tmp_path, stale=frozenset({module}))
    assert _compiled_state(str(tmp_path)) == "stale"


@pytest.mark.parametrize("module", [ACCEL_MODULES[0], "ferryman.proxy.exchange", ACCEL_MODULES[-1]])
def test_stale_when_one_build_is_missing(tmp_path: Path, module: str) -> None:
    make_tree(tmp_path, missing=frozenset({module}))
    assert _compiled_state(str(tmp_path)) == "stale"


def test_stale_when_a_source_is_touched_after_the_build(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert _compiled_state(str(tmp_path)) == "compiled"
    base = rel_path(tmp_path, "ferryman.upstream.pool")
    later = SOURCE_TIME + 60
    os.utime(base.with_name(base.name + ".py"), (later, later))
    assert _compiled_state(str(tmp_path)) == "stale"


def test_only_builds_of_listed_modules_count(tmp_path: Path) -> None:
    make_tree(tmp_path, built=False)
    write(tmp_path / "cli.py", SOURCE_TIME)
    write(tmp_path / ("cli" + SO_SUFFIX), SOURCE_TIME + 1)
    assert _compiled_state(str(tmp_path)) == "absent"


# ---- select_implementation (in this process; sys.meta_path is restored) ----


@pytest.fixture
def meta_path(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    saved: list[object] = list(sys.meta_path)
    monkeypatch.setattr(sys, "meta_path", saved)
    return saved


def finders(meta_path: list[object]) -> list[_SourceFinder]:
    return [f for f in meta_path if isinstance(f, _SourceFinder)]


def test_select_absent_is_pure_without_a_finder(
    tmp_path: Path, meta_path: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FERRYMAN_PURE", raising=False)
    before = len(finders(meta_path))
    assert select_implementation(str(tmp_path)) == "pure"
    assert len(finders(meta_path)) == before


def test_select_compiled_adds_no_finder(
    tmp_path: Path, meta_path: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FERRYMAN_PURE", raising=False)
    make_tree(tmp_path)
    before = len(finders(meta_path))
    assert select_implementation(str(tmp_path)) == "compiled"
    assert len(finders(meta_path)) == before


def test_select_forced_pure_puts_the_source_finder_first(
    tmp_path: Path, meta_path: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRYMAN_PURE", "1")
    make_tree(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a forced choice is not worth a warning
        assert select_implementation(str(tmp_path)) == "pure"
    assert isinstance(meta_path[0], _SourceFinder)
    assert meta_path[0].names == frozenset(ACCEL_MODULES)


def test_select_stale_warns_and_runs_pure(
    tmp_path: Path, meta_path: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FERRYMAN_PURE", raising=False)
    make_tree(tmp_path, stale=frozenset({"ferryman.http.fields"}))
    with pytest.warns(RuntimeWarning, match="older than their sources"):
        assert select_implementation(str(tmp_path)) == "pure"
    assert isinstance(meta_path[0], _SourceFinder)


def test_source_finder_finds_the_py_beside_the_build(tmp_path: Path) -> None:
    make_tree(tmp_path)
    finder = _SourceFinder(frozenset(ACCEL_MODULES))
    spec = finder.find_spec("ferryman.routing.table", [str(tmp_path / "routing")])
    assert spec is not None and spec.origin == str(tmp_path / "routing" / "table.py")
    assert finder.find_spec("ferryman.cli", [str(tmp_path)]) is None  # not accelerated
    assert finder.find_spec("ferryman.routing.table", None) is None  # top-level lookup
    assert finder.find_spec("ferryman.routing.table", [str(tmp_path)]) is None  # wrong dir


def test_implementation_in_this_process_matches_the_loaded_module() -> None:
    import ferryman.proxy.exchange as exchange

    expected = "compiled" if (exchange.__file__ or "").endswith(".so") else "pure"
    assert _accel.implementation() == expected


# ---- in a fresh interpreter ----

PROBE = (
    "import os, ferryman, ferryman._accel as a\n"
    "state = a._compiled_state(os.path.dirname(ferryman.__file__))\n"
    "import ferryman.proxy.exchange\n"
    "print(state, a.implementation())\n"
)


def run_probe(pure: bool) -> tuple[str, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FERRYMAN_PURE"}
    if pure:
        env["FERRYMAN_PURE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    state, impl = proc.stdout.split()
    return state, impl, proc.stderr


def test_subprocess_forced_pure() -> None:
    _, impl, _ = run_probe(pure=True)
    assert impl == "pure"


def test_subprocess_default_uses_the_build_when_present() -> None:
    builds = glob.glob(os.path.join(SRC_PACKAGE, "**", "*.so"), recursive=True)
    state, impl, stderr = run_probe(pure=False)
    if not builds:
        assert state == "absent"
        assert impl == "pure"
    elif state == "compiled":
        assert impl == "compiled"
    else:
        # Builds exist but a source was edited after them (others edit src/ while
        # tests run): the sources must win, and say so.
        assert state == "stale"
        assert impl == "pure"
        assert "older than their sources" in stderr


def test_compiled_message_heads_stay_out_of_the_cyclic_collector() -> None:
    """RequestHead and ResponseHead are compiled `acyclic` (they hold only bytes, ints,
    enums and lists of byte pairs): a young collection never walks them. The pure
    sources' slotted classes are tracked as any."""
    import gc

    import ferryman.http.messages as messages
    from ferryman.http.messages import Framing, RequestHead, ResponseHead

    request = RequestHead(
        b"GET", b"/", b"1.1", [(b"Host", b"a")], b"a", True, Framing.NONE, -1,
        frozenset(), None, b"/", b"", b"Host: a\r\n", None,
    )  # fmt: skip
    response = ResponseHead(200, [], Framing.LENGTH, 0, frozenset(), b"", b"0")
    compiled = (messages.__file__ or "").endswith(".so")
    assert gc.is_tracked(request) is not compiled
    assert gc.is_tracked(response) is not compiled
