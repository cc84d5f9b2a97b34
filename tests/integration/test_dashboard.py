"""The dashboard in headless Chromium, driven over the DevTools protocol (websockets).

The demo's system: six echo backends on 127.0.0.11 ... 127.0.0.16 named server1 ...
server6, one least_conn upstream over them (max_fails=3 fail_timeout=30s, as the
reference nginx.conf), two workers, the admin listener on loopback. The page must render
the six peers, show a killed backend down within seconds, and drain a peer when its
button is clicked (after which no request reaches it). A screenshot is saved in the
test's tmp dir and its path printed.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from support.browser import BASE_FLAGS, chromium_path
from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.rawhttp import RawClient

pytestmark = pytest.mark.once

HOSTS = [f"127.0.0.{10 + i}" for i in range(1, 7)]
NAMES = [f"server{i}" for i in range(1, 7)]
WAIT = 15.0  # every wait on the page is bounded by this


@dataclass
class Demo:
    backends: list[EchoBackend]
    proxy: ProxyProcess
    admin_port: int
    addresses: list[str]  # server1:PORT ... as configured (and shown by the page)


def demo_config(port: int, admin_port: int, backends: list[EchoBackend]) -> str:
    hosts = "\n".join(f"  {n}: {b.host}" for n, b in zip(NAMES, backends, strict=True))
    servers = "\n".join(
        f'      - {{address: "{n}:{b.port}", weight: 10, max_fails: 3, fail_timeout: 30s}}'
        for n, b in zip(NAMES, backends, strict=True)
    )
    return f"""workers: 2
access_log: {{path: null}}
admin: {{listen: "127.0.0.1:{admin_port}"}}
hosts:
{hosts}
upstreams:
  demo:
    balance: least_conn
    servers:
{servers}
servers:
  - listen: "127.0.0.1:{port}"
    routes:
      - path: /
        upstream: demo
"""


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    backends: list[EchoBackend] = []
    try:
        for host in HOSTS:
            backends.append(start_echo(tmp_path / "logs", host))
        port, admin_port = free_port(), free_port()
        text = demo_config(port, admin_port, backends)
        proxy = start_proxy(tmp_path / "proxy", text, port)
    except BaseException:
        for b in backends:
            b.stop()
        raise
    try:
        addresses = [f"{n}:{b.port}" for n, b in zip(NAMES, backends, strict=True)]
        yield Demo(backends, proxy, admin_port, addresses)
    finally:
        proxy.stop()
        for b in backends:
            b.stop()


# ---------------------------------------------------------------- a tiny CDP driver


@dataclass
class Page:
    """One Chromium tab over the DevTools protocol: evaluate, click, screenshot."""

    ws: ClientConnection
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv(timeout=WAIT))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result
        raise TimeoutError(method)

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str) -> Any:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"the page did not show {what} within {WAIT}s")

    def click(self, selector: str) -> None:
        """A real mouse click (press + release) at the centre of `selector`."""
        box = self.eval(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Page]:
    profile.mkdir(parents=True, exist_ok=True)
    log_path = profile.parent / "chromium.log"
    argv = [
        chromium_path(),
        *BASE_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        "--window-size=1400,1000",
        "about:blank",
    ]
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        port = _devtools_port(profile, popen, log_path)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.load(resp)
        page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        with connect(page_url, max_size=64 * 1024 * 1024, open_timeout=10) as ws:
            page = Page(ws)
            page.call("Page.enable")
            yield page
    finally:
        # Its own session: the browser and every helper it forked go together.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)


def _devtools_port(profile: Path, popen: subprocess.Popen[bytes], log_path: Path) -> int:
    # Chromium writes the port it picked to DevToolsActivePort in the profile.
    deadline = time.monotonic() + WAIT
    active = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"chromium exited: {log_path.read_text(errors='replace')}")
        if active.exists():
            first = active.read_text().split("\n", 1)[0]
            if re.fullmatch(r"[0-9]{1,5}", first):
                return int(first)
        time.sleep(0.1)
    raise TimeoutError(f"chromium did not open DevTools: {log_path.read_text(errors='replace')}")


# ---------------------------------------------------------------- traffic


class Traffic:
    """Requests on new connections, until stopped (bounded), from a background thread;
    remembers which backend (by UUID) answered each, and when."""

    def __init__(self, port: int, limit: int = 5000) -> None:
        self.port = port
        self.limit = limit
        self.answers: list[tuple[float, int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        for _ in range(self.limit):
            if self._stop.is_set():
                return
            with contextlib.suppress(OSError), RawClient(self.port, timeout=5) as client:
                client.send(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
                resp = client.read_response()
                if resp is not None:
                    self.answers.append((time.monotonic(), resp.status, resp.body))
            time.sleep(0.02)


def peer_states(page: Page) -> dict[str, str]:
    value = page.eval(
        "JSON.stringify(Object.fromEntries([...document.querySelectorAll('tr.peer')]"
        ".map((r) => [r.dataset.peer, r.dataset.state])))"
    )
    states: dict[str, str] = json.loads(value)
    return states


def test_dashboard_renders_reflects_and_drains(
    demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with chromium(tmp_path / "profile") as page, Traffic(demo.proxy.port) as traffic:
        page.call("Page.navigate", url=f"http://127.0.0.1:{demo.admin_port}/")
        # The six demo peers, all up, in one upstream card.
        page.wait_for("document.querySelectorAll('tr.peer').length === 6", "six peers")
        assert set(peer_states(page)) == set(demo.addresses)
        assert set(peer_states(page).values()) == {"up"}
        assert page.eval("document.querySelector('.card h2').textContent").startswith("demo")
        # The live tail names the peer that served each request.
        page.wait_for("document.querySelectorAll('tr.req').length >= 5", "the request tail")
        tail_peers = page.eval("[...document.querySelectorAll('tr.req')].map(r => r.dataset.peer)")
        assert set(tail_peers) <= {f"{b.host}:{b.port}" for b in demo.backends}

        # A killed backend is shown down within seconds (passive health, shared).
        killed = demo.addresses[2]
        demo.backends[2].stop()
        page.wait_for(
            f"document.querySelector('tr.peer[data-peer=\"{killed}\"]').dataset.state === 'down'",
            f"{killed} down",
        )

        # Drain server1 with a click on its button: it gets no new request.
        drained = demo.addresses[0]
        row = f'tr.peer[data-peer="{drained}"]'
        deadline = time.monotonic() + WAIT
        while peer_states(page)[drained] != "draining":
            assert time.monotonic() < deadline, "the drain click did not take"
            with contextlib.suppress(RuntimeError, TypeError):
                page.click(f"{row} button.drain")
            time.sleep(1.0)
        assert page.eval(f"!!document.querySelector('{row} button.undrain')")
        # Workers apply the change on their next tick (<= 1 s); then count.
        time.sleep(1.5)
        since = time.monotonic()
        time.sleep(2.0)
        shot = tmp_path / "dashboard.png"
        page.screenshot(shot)
        with capsys.disabled():  # part of the test output, even when captured
            print(f"\ndashboard screenshot: {shot}")
    uuid = demo.backends[0].uuid.encode()
    after = [body for t, status, body in traffic.answers if t > since and status == 200]
    assert len(after) >= 10, len(traffic.answers)
    assert uuid not in after
    before = [body for t, status, body in traffic.answers if t < since - 4 and status == 200]
    assert uuid in before  # it did serve until drained
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_admin_listener_is_not_a_worker_port(demo: Demo) -> None:
    # The dashboard's listener belongs to the admin process only: the proxy port does
    # not answer admin paths, and the admin port proxies nothing.
    with RawClient(demo.proxy.port, timeout=10) as client:
        client.send(b"GET /api/upstreams HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = client.read_response()
        assert resp is not None and resp.status == 404  # the echo backend's 404
    with socket.create_connection(("127.0.0.1", demo.admin_port), timeout=10) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 404")
