"""The operator's shell session against `ferryman nginx` (tests/scripts/operator.sh):
start with -p and -c, -t, edit, -s reload under load with no failed request, -s reopen
after moving the access log, -s quit. The script stops the master it started by PID;
the test also kills it by PID if the script left it behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.procs import REPO_ROOT, child_env, free_port

pytestmark = pytest.mark.once

SCRIPT = REPO_ROOT / "tests" / "scripts" / "operator.sh"


def test_operator_sequence(tmp_path: Path) -> None:
    prefix = tmp_path / "site"
    prefix.mkdir()
    env = child_env(
        {
            "NGINX_CMD": f"{sys.executable} -m ferryman nginx",
            "PREFIX": str(prefix),
            "PORT": str(free_port()),
            "REQUESTS": "300",
            "PYTHONWARNINGS": "ignore::RuntimeWarning",
            "FERRYMAN_PURE": "1",
        }
    )
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    finally:
        pid_file = prefix / "logs" / "nginx.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert done.stdout.rstrip().endswith("OK"), report
    assert "not 200: 0" in done.stdout, report
    # Relative paths went under the prefix (nginx's -p rule), not beside the file.
    assert (prefix / "logs" / "access.log.1").exists()
    assert not (prefix / "conf" / "logs").exists()
