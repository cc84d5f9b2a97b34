"""A TLS scanner (testssl.sh, the Debian package, installed by
scripts/install-system-deps.sh) against a real TLS listener: no protocol below TLS 1.2
and no weak cipher category offered. Kept narrow (protocols and cipher categories
only, about 10 s) and bounded by a timeout."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ferryman.tls.devcert import issue
from support.procs import ProxyProcess, free_port

pytestmark = pytest.mark.once

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
# Each is "not offered" for a modern listener.
MUST_BE_ABSENT = (
    "SSLv2",
    "SSLv3",
    "TLS1",
    "TLS1_1",
    "cipherlist_NULL",
    "cipherlist_aNULL",
    "cipherlist_EXPORT",
    "cipherlist_LOW",
    "cipherlist_3DES_IDEA",
    "cipherlist_AVERAGE",  # CBC without AEAD
)


def test_scan_finds_no_old_protocol_and_no_weak_cipher(
    tmp_path: Path, proxy: Callable[..., ProxyProcess]
) -> None:
    assert TESTSSL is not None, "testssl.sh is missing: run scripts/install-system-deps.sh"
    cert = issue(tmp_path / "ca", ("localhost",))
    port = free_port()
    text = (
        f'servers:\n  - listen:\n      - address: "127.0.0.1:{port}"\n'
        f"        tls: {{certificates: [{{cert: {cert.cert}, key: {cert.key}}}]}}\n"
        "    script: [{return: {status: 200, text: ok}}]\n"
    )
    p: ProxyProcess = proxy(text, port)
    report = tmp_path / "scan.json"
    subprocess.run(
        [
            TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--protocols",
            "--std", "--jsonfile", str(report), f"127.0.0.1:{port}",
        ],
        capture_output=True, timeout=90, check=False,
    )  # fmt: skip
    findings = {f["id"]: f["finding"] for f in json.loads(report.read_text())}
    for name in MUST_BE_ABSENT:
        assert findings[name] == "not offered", (name, findings[name])
    assert findings["TLS1_2"] == "offered"
    assert findings["TLS1_3"].startswith("offered")
    assert findings["cipherlist_STRONG"] == "offered"
    assert p.proc.is_running()
