"""Side-by-side runs: one nginx.conf template served by real nginx and by Ferryman.

A template is rendered twice, identically but for the listen port (and the temp-path
lines only nginx needs), and both servers are started at once: Ferryman's start-up
overlaps nginx's. Both are stopped by their own PIDs. `BackendClient` is a keep-alive
HTTP/1.1 client, optionally bound to a chosen source address (any 127.x.y.z works on
Linux loopback), that says which echo backend answered a request, by the UUID in the
body of `GET /`. Nothing here knows about balancing: the tests decide what to compare.
"""

from __future__ import annotations

import http.client
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from support.nginx import NginxProcess, nginx_temp_paths, start_nginx
from support.procs import REPO_ROOT, Proc, free_port, start_process, wait_for_port

__all__ = ["BackendClient", "SideBySide", "render", "start_side_by_side"]

PROXIES = ("nginx", "ferryman")


def render(template: str, values: Mapping[str, str]) -> str:
    """`{{name}}` -> values[name]; a placeholder without a value is a KeyError."""
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m[1]], template)


@dataclass(slots=True)
class SideBySide:
    """nginx and Ferryman, each on its own loopback port, running the same template."""

    nginx: NginxProcess
    ferryman: Proc
    ports: dict[str, int]

    def output(self) -> str:
        """Both servers' logs, for a failing assertion to show."""
        return f"--- nginx ---\n{self.nginx.output()}\n--- ferryman ---\n{self.ferryman.output()}"

    def stop(self) -> None:
        self.ferryman.stop(timeout=10)
        self.nginx.stop()

    def __repr__(self) -> str:
        pids = f"nginx pid={self.nginx.pid}, ferryman pid={self.ferryman.pid}"
        return f"SideBySide({pids}, ports {self.ports})"


def start_side_by_side(
    nginx_binary: str, workdir: Path, template: str, values: Mapping[str, str]
) -> SideBySide:
    """Render `template` with `values` (+ `port`, `nginx_only`) for each server; start both.

    The template should have `{{port}}` in its listen directive and `{{nginx_only}}` in
    its http block (nginx's temp paths go there, Ferryman gets an empty string).
    """
    nginx_port, ferryman_port = free_port(), free_port()
    conf = workdir / "ferryman" / "nginx.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(render(template, {**values, "port": str(ferryman_port), "nginx_only": ""}))
    argv = [sys.executable, "-m", "ferryman", "run", "-c", str(conf)]
    ferryman = start_process(argv, conf.parent / "ferryman.log", cwd=REPO_ROOT)
    try:
        prefix = workdir / "nginx"
        nginx_values = {**values, "port": str(nginx_port), "nginx_only": nginx_temp_paths(prefix)}
        nginx = start_nginx(nginx_binary, prefix, render(template, nginx_values), nginx_port)
        try:
            wait_for_port("127.0.0.1", ferryman_port, ferryman, timeout=15)
        except BaseException:
            nginx.stop()
            raise
    except BaseException:
        ferryman.stop(timeout=10)
        raise
    return SideBySide(nginx, ferryman, {"nginx": nginx_port, "ferryman": ferryman_port})


class BackendClient:
    """Keep-alive GETs to one proxy port; `which(target)` -> the answering backend's name.

    `names` maps each echo backend's UUID to the name the test uses for it. With
    `source`, the client socket is bound to that address (port chosen by the kernel), so
    the proxy sees it as the client's address.
    """

    def __init__(
        self,
        port: int,
        names: Mapping[str, str],
        *,
        source: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._names = names
        self._conn = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
        )

    def which(self, target: str = "/") -> str:
        self._conn.request("GET", target)
        response = self._conn.getresponse()
        body = response.read()
        uuid = body.decode("ascii", "replace")
        if response.status != 200 or uuid not in self._names:
            raise AssertionError(f"GET {target}: {response.status} {body[:200]!r}")
        return self._names[uuid]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> BackendClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BackendClient({self._conn.host}:{self._conn.port})"
