"""Golden tests for the nginx.conf front end: every tests/golden/nginx/NAME.conf
translates to exactly tests/golden/nginx/NAME.yaml.

NAME.yaml is `dump_native` of the translated Config, preceded by one `# warning: ...`
comment line per entry of `Config.warnings` (comments, so the file still loads as
native YAML); the golden directory's absolute path is written as `<golden>/`.
Files named `lenient*.conf` are loaded with `lenient=True`.

To regenerate every NAME.yaml after an intended change, run

    UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/test_nginx_golden.py

and review the diff: the goldens are the specification of the translation.

Every directive of the directive table must appear in at least one golden file (rule
5 of DESIGN.md); `test_every_directive_has_a_golden` enforces it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
from ferryman.config.nginx import load_nginx
from ferryman.config.nginx.directives import DIRECTIVES
from ferryman.config.schema import Config

GOLDEN = Path(__file__).parents[1] / "golden" / "nginx"
CASES = sorted(p.stem for p in GOLDEN.glob("*.conf"))


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> Config:
    # Relative to the golden directory, so that messages name `NAME.conf:LINE`.
    monkeypatch.chdir(GOLDEN)
    return load_nginx(f"{name}.conf", lenient=name.startswith("lenient"))


def _render(config: Config) -> str:
    lines = [f"# warning: {warning}\n" for warning in config.warnings]
    text = "".join(lines) + dump_native(config)
    return text.replace(str(GOLDEN) + os.sep, "<golden>/")


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    actual = _render(_load(name, monkeypatch))
    expected_path = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        expected_path.write_text(actual)
    assert expected_path.exists(), f"no golden for {name}.conf (run with UPDATE_GOLDEN=1)"
    assert actual == expected_path.read_text()


@pytest.mark.parametrize("name", CASES)
def test_round_trip_through_native_yaml(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _load(name, monkeypatch)
    again = load_native(dump_native(config), "again.yaml")
    assert again == dataclasses.replace(config, source="again.yaml")
    # default_server is not part of ListenSpec equality; compare it on its own.
    flags = [[spec.default_server for spec in s.listen] for s in config.servers]
    assert [[spec.default_server for spec in s.listen] for s in again.servers] == flags


@pytest.mark.parametrize("name", CASES)
def test_golden_yaml_loads_as_native(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden file itself is a native configuration equal to the translation."""
    config = _load(name, monkeypatch)
    text = (GOLDEN / f"{name}.yaml").read_text().replace("<golden>/", str(GOLDEN) + os.sep)
    assert load_native(text, config.source) == config


def test_every_directive_has_a_golden() -> None:
    sources = [p for p in GOLDEN.rglob("*") if p.is_file() and p.suffix != ".yaml"]
    # Statements only: comments (which name directives too) are left out.
    text = re.sub(r"#[^\n]*", "", "\n".join(p.read_text() for p in sources))
    missing = [name for name in DIRECTIVES if not re.search(rf"(^|[{{;}}\s]){name}[\s;{{]", text)]
    assert missing == []


def test_every_golden_conf_has_its_yaml() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == CASES
