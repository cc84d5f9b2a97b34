"""The command line with nginx.conf: `convert`, `check` (warnings before the success
lines, like `nginx -t`), `--lenient`, `--add-host`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferryman.cli import main
from ferryman.config.native import load_native
from ferryman.config.nginx import load_nginx

REFERENCE = Path(__file__).parents[1] / "golden" / "nginx" / "reference.conf"
HOSTS = [arg for i in range(1, 7) for arg in ("--add-host", f"server{i}:127.0.0.1{i}")]


def test_convert_prints_the_native_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(REFERENCE), "--add-host", "server1:127.0.0.11"]) == 0
    out, err = capsys.readouterr()
    config = load_native(out, "converted.yaml")
    expected = load_nginx(str(REFERENCE))
    assert config.upstreams == expected.upstreams
    assert config.servers == expected.servers
    assert config.hosts == (("server1", "127.0.0.11"),)
    assert err.count("ferryman: [warn] ") == 2


def test_check_prints_warnings_before_the_success_lines() -> None:
    # One process, both streams in one pipe: the order is the order of writing.
    result = subprocess.run(
        [sys.executable, "-m", "ferryman", "check", "-c", str(REFERENCE), *HOSTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("ferryman:")]
    assert lines == [
        f'ferryman: [warn] {REFERENCE}:23: proxy_set_header Connection "upgrade" sends'
        " Connection: upgrade on every request, which defeats upstream keep-alive; use map"
        " $http_upgrade $connection_upgrade { default upgrade; '' close; }",
        f'ferryman: [warn] {REFERENCE}:25: "proxy_cache_bypass" has no effect without'
        ' "proxy_cache"',
        f"ferryman: configuration file {REFERENCE} syntax is ok",
        f"ferryman: configuration file {REFERENCE} test is successful",
    ]


def test_lenient_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n    gzip on;\n    server { listen 8080; return 204; }\n}\n")
    assert main(["convert", str(conf)]) == 1
    assert f'[emerg] {conf}:3: "gzip" directive is not supported' in capsys.readouterr().err
    assert main(["convert", str(conf), "--lenient"]) == 0
    out, err = capsys.readouterr()
    assert f'ferryman: [warn] {conf}:3: "gzip" directive is not supported' in err
    assert "servers:" in out
    assert main(["check", "-c", str(conf), "--lenient"]) == 0


def test_convert_of_native_yaml_normalises_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    native = tmp_path / "f.yaml"
    native.write_text(
        "servers: [{listen: '8080', routes: [{path: /, script: [{return: {status: 204}}]}]}]\n"
    )
    assert main(["convert", str(native)]) == 0
    assert capsys.readouterr().out == (
        "servers:\n- listen:\n  - 0.0.0.0:8080\n  routes:\n  - path: /\n"
        "    script:\n    - return: {status: 204}\n"
    )
