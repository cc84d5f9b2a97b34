"""The dashboard's cluster banner (observability/dashboard.py), in headless Chromium over
the DevTools protocol (test_dashboard.py's `chromium`): one instance with a `cluster`
section and a real redis-server; the banner says "cluster: 1 instance / Redis up", turns
into "Redis unreachable: local-only state" when Redis is killed, and back when it
returns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_dashboard import chromium  # the DevTools page driver

from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.redis import RedisServer, start_redis

pytestmark = pytest.mark.once


@dataclass
class Stack:
    redis: RedisServer
    backend: EchoBackend
    proxy: ProxyProcess
    admin_port: int


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    server = start_redis(tmp_path / "redis")
    try:
        backend = start_echo(tmp_path / "logs")
        try:
            port, admin = free_port(), free_port()
            text = f"""
workers: 1
admin: {{listen: "127.0.0.1:{admin}"}}
cluster: {{url: "{server.url}"}}
upstreams:
  app: {{servers: ["{backend.address}"]}}
servers:
  - listen: "127.0.0.1:{port}"
    routes: [{{path: /, upstream: app}}]
"""
            proxy = start_proxy(tmp_path / "proxy", text, port)
            try:
                yield Stack(server, backend, proxy, admin)
            finally:
                proxy.stop()
        finally:
            backend.stop()
    finally:
        server.stop()


BANNER = "(() => { const b = document.getElementById('cluster'); "
BANNER += "return b && !b.hidden ? b.className + '|' + b.textContent : ''; })()"


def test_banner_follows_redis(stack: Stack, tmp_path: Path) -> None:
    with chromium(tmp_path / "profile") as page:
        page.call("Page.navigate", url=f"http://127.0.0.1:{stack.admin_port}/")
        # Redis is up from the first ping; the instance count from the first heartbeat,
        # half a second later: wait for both.
        up = page.wait_for(f"(t => t.includes('1 instance / Redis up') && t)({BANNER})", "Redis up")
        assert up.startswith("|cluster: 1 instance / Redis up"), up
        stack.redis.kill()
        down = page.wait_for(f"(t => t.startsWith('down|') && t)({BANNER})", "the red banner")
        assert "Redis unreachable: local-only state" in down, down
        page.screenshot(tmp_path / "redis-down.png")
        stack.redis.start()
        page.wait_for(f"(t => t.includes('Redis up') && t)({BANNER})", "Redis up again")
