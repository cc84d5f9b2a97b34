"""h2load (nghttp2-client), the HTTP/2 load generator, run to completion."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest

__all__ = ["H2loadResult", "run_h2load"]


@dataclass(frozen=True)
class H2loadResult:
    succeeded: int
    failed: int
    errored: int
    stdout: str


def run_h2load(url: str, requests: int, connections: int, streams: int) -> H2loadResult:
    """`requests` requests over `connections` connections with up to `streams` at once
    on each; fails the test if h2load is missing or does not finish."""
    if shutil.which("h2load") is None:
        pytest.fail("h2load missing: run scripts/install-system-deps.sh (nghttp2-client)")
    argv = ["h2load", "-n", str(requests), "-c", str(connections), "-m", str(streams), url]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", result.stdout)
    assert match is not None, result.stdout
    return H2loadResult(int(match[1]), int(match[2]), int(match[3]), result.stdout)
