"""HTTP basic authentication against a real `ferryman run` in front of a real echo
backend, driven by curl (`curl -u user:pass`): one user per htpasswd format (bcrypt
$2y$/$2b$, apr1 made by `openssl passwd -apr1`, {SHA}, {SSHA}, {PLAIN}); 401 with the
realm's challenge for missing or wrong credentials, the Authorization field still
forwarded upstream, access rules deciding before auth, and a reload re-reading the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from support.memory import child_pids, wait_for_children
from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.rawhttp import http_get_json

CURL_TIMEOUT = 10


def _apr1(password: str) -> str:
    # The reference implementation, not ours: openssl's.
    out = subprocess.run(
        ["openssl", "passwd", "-apr1", "-salt", "tEsTsAlT", password],
        capture_output=True,
        text=True,
        check=True,
        timeout=CURL_TIMEOUT,
    )
    return out.stdout.strip()


def _htpasswd() -> str:
    ssha_salt = b"NaCl1234"
    ssha = base64.b64encode(hashlib.sha1(b"ssha-pw" + ssha_salt).digest() + ssha_salt).decode()
    bcrypt_b = bcrypt.hashpw(b"bcrypt-pw", bcrypt.gensalt(rounds=4)).decode()
    bcrypt_y = "$2y$" + bcrypt.hashpw(b"bcrypt-y-pw", bcrypt.gensalt(rounds=4)).decode()[4:]
    sha = base64.b64encode(hashlib.sha1(b"sha-pw").digest()).decode()
    return (
        "# one user per format\n"
        f"bee:{bcrypt_b}\n"
        f"why:{bcrypt_y}\n"
        f"apr:{_apr1('apr-pw')}\n"
        f"sha:{{SHA}}{sha}\n"
        f"ssha:{{SSHA}}{ssha}\n"
        "plain:{PLAIN}plain-pw:with a comment\n"
    )


USERS = {
    "bee": "bcrypt-pw",
    "why": "bcrypt-y-pw",
    "apr": "apr-pw",
    "sha": "sha-pw",
    "ssha": "ssha-pw",
    "plain": "plain-pw",
}


def config(port: int, backend: str, users: Path) -> str:
    return f"""\
upstreams:
  app: {{servers: ["{backend}"]}}
servers:
  - listen: "127.0.0.1:{port}"
    auth_basic: {{realm: "Staff \\"only\\"", user_file: "{users}"}}
    routes:
      - path: /
        upstream: app
      - path: /echo/public/
        upstream: app
        auth_basic: off
      - path: /echo/guarded/
        upstream: app
        access: [{{deny: 127.0.0.2, name: not-two}}]
"""


@dataclass(frozen=True)
class Stack:
    backend: EchoBackend
    proxy: ProxyProcess
    users: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.proxy.port}{path}"


@dataclass(frozen=True)
class CurlResult:
    status: int
    headers: dict[str, str]
    body: bytes


def curl(url: str, *args: str) -> CurlResult:
    """One request with curl; the (last) status, its fields (lower-case), the body."""
    out = subprocess.run(
        ["curl", "-sS", "-D", "-", "--max-time", str(CURL_TIMEOUT), *args, url],
        capture_output=True,
        timeout=CURL_TIMEOUT + 5,
        check=True,
    )
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    while body.startswith(b"HTTP/"):  # an earlier answer (a challenge curl followed)
        head, _, body = body.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return CurlResult(int(status_line.split()[1]), headers, body)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("auth-basic")
    users = workdir / "htpasswd"
    users.write_text(_htpasswd())
    backend = start_echo(workdir / "logs")
    try:
        port = free_port()
        proxy = start_proxy(workdir / "proxy", config(port, backend.address, users), port)
        try:
            yield Stack(backend, proxy, users)
        finally:
            proxy.stop()
    finally:
        backend.stop()


def backend_count(stack: Stack) -> int:
    return int(http_get_json(stack.backend.port, "/count")["requests"])


@pytest.mark.parametrize("user", sorted(USERS))
def test_each_format_lets_its_user_in(stack: Stack, user: str) -> None:
    result = curl(stack.url("/echo"), "-u", f"{user}:{USERS[user]}")
    assert result.status == 200
    # auth_basic does not strip the credentials: the upstream sees them, as under nginx.
    fields = dict((n.lower(), v) for n, v in json.loads(result.body)["headers"])
    expected = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    assert fields["authorization"] == f"Basic {expected}"


@pytest.mark.parametrize(
    "args",
    [
        (),  # no credentials
        ("-u", "plain:wrong"),
        ("-u", "plain:"),
        ("-u", "bee:apr-pw"),  # another user's password
        ("-u", "nobody:plain-pw"),
        ("-H", "Authorization: Bearer abc"),
        ("-H", "Authorization: Basic not-base64!"),
    ],
    ids=["none", "wrong", "empty", "other-users", "unknown-user", "bearer", "garbage"],
)
def test_refused_with_the_challenge(stack: Stack, args: tuple[str, ...]) -> None:
    before = backend_count(stack)
    result = curl(stack.url("/echo"), *args)
    assert result.status == 401
    assert result.headers["www-authenticate"] == 'Basic realm="Staff \\"only\\""'
    assert result.body == b"401 Unauthorized\n"
    time.sleep(0.05)
    assert backend_count(stack) == before + 1, "the backend saw an unauthenticated request"


def test_curl_retries_with_credentials_after_the_challenge(stack: Stack) -> None:
    # --anyauth: curl asks without credentials, reads the challenge, asks again.
    result = curl(stack.url("/echo"), "--anyauth", "-u", "apr:apr-pw")
    assert result.status == 200


def test_auth_off_in_a_route(stack: Stack) -> None:
    assert curl(stack.url("/echo/public/x")).status == 200


def test_access_rules_decide_before_auth(stack: Stack) -> None:
    ok = ("-u", "plain:plain-pw")
    assert curl(stack.url("/echo/guarded/"), *ok, "--interface", "127.0.0.1").status == 200
    # Refused by address even with good credentials, and never asked for them.
    denied = curl(stack.url("/echo/guarded/"), *ok, "--interface", "127.0.0.2")
    assert denied.status == 403
    assert "www-authenticate" not in denied.headers
    # An allowed address still needs credentials.
    assert curl(stack.url("/echo/guarded/"), "--interface", "127.0.0.3").status == 401


def test_the_log_names_the_user_not_the_password(stack: Stack) -> None:
    curl(stack.url("/echo"), "-u", "plain:sekrit-guess")
    deadline = time.monotonic() + 5
    while "user 'plain': password mismatch" not in stack.proxy.output():
        assert time.monotonic() < deadline, stack.proxy.output()[-2000:]
        time.sleep(0.05)
    assert "sekrit-guess" not in stack.proxy.output()


def _wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_a_worker_restarted_after_the_file_went_bad_keeps_the_checked_users(
    stack: Stack,
) -> None:
    # The master read and checked the file; a worker it restarts (here after SIGKILL)
    # must use those users, not read the now broken file, fail and be restarted again.
    original = stack.users.read_text()
    try:
        stack.users.write_text("broken-line-without-colon\n")
        (worker,) = wait_for_children(stack.proxy.pid)
        logged = len(stack.proxy.output())
        os.kill(worker, signal.SIGKILL)
        assert _wait_until(lambda: worker not in child_pids(stack.proxy.pid))
        assert _wait_until(lambda: len(child_pids(stack.proxy.pid)) == 1)
        assert curl(stack.url("/echo"), "-u", "plain:plain-pw").status == 200
        assert curl(stack.url("/echo"), "-u", "plain:wrong").status == 401
        assert "worker crashed" not in stack.proxy.output()[logged:]
    finally:
        stack.users.write_text(original)


def test_reload_rereads_the_file_and_a_bad_file_keeps_the_old_one(stack: Stack) -> None:
    # Last: it changes the users every other test relies on.
    original = stack.users.read_text()
    try:
        stack.users.write_text(original + "new:{PLAIN}new-pw\n")
        os.kill(stack.proxy.pid, signal.SIGHUP)
        assert _wait_until(lambda: curl(stack.url("/"), "-u", "new:new-pw").status == 200)

        # A malformed file refuses the reload (naming file and line); the users stay.
        stack.users.write_text(original + "broken-line-without-colon\n")
        os.kill(stack.proxy.pid, signal.SIGHUP)
        line = len(original.splitlines()) + 1
        assert _wait_until(lambda: f"{stack.users}:{line}" in stack.proxy.output())
        assert "reload refused" in stack.proxy.output()
        assert curl(stack.url("/"), "-u", "new:new-pw").status == 200
        assert curl(stack.url("/"), "-u", "plain:plain-pw").status == 200
    finally:
        stack.users.write_text(original)
