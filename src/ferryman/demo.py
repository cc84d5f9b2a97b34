"""`ferryman demo`: the reference system on one machine, no Docker.

Six echo backends, each its own process like the six containers, on 127.0.0.11 ...
127.0.0.16 port 3000 (all of 127.0.0.0/8 is loopback on Linux), and the proxy in front
running the reference nginx.conf unmodified (`data/nginx.conf`: least_conn,
weight=10 max_fails=3 fail_timeout=30s, 4 workers, 1024 connections each). As with
docker compose, the names server1 ... server6 resolve through --add-host style
overrides, and the file's `listen 80` is published on 127.0.0.1:8080 (docker -p).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from ferryman.config.load import apply_hosts, load_config
from ferryman.config.publish import apply_publish
from ferryman.config.schema import AdminSpec, Config, ListenSpec, TlsCertificate, TlsSpec
from ferryman.tls.devcert import issue
from ferryman.workers import serve

__all__ = ["BACKENDS", "demo_config", "run_demo"]

_log = logging.getLogger(__name__)

BACKENDS = tuple((f"server{i}", f"127.0.0.{10 + i}", 3000) for i in range(1, 7))


PUBLISH = ("127.0.0.1", 8080, 80)


# `ferryman demo --tls`: https://localhost:8443 beside the plain listener.
TLS_LISTEN = ("127.0.0.1", 8443)


def demo_config(tls_dir: Path | None = None, admin: tuple[str, int] | None = None) -> Config:
    with resources.as_file(resources.files("ferryman").joinpath("data/nginx.conf")) as path:
        config = load_config(str(path))
    config = apply_hosts(config, {name: host for name, host, _ in BACKENDS})
    config = apply_publish(config, [PUBLISH])
    if admin is not None:
        # nginx.conf has no directive for it: the dashboard is added beside the file.
        config = dataclasses.replace(config, admin=AdminSpec(host=admin[0], port=admin[1]))
    return config if tls_dir is None else _with_tls(config, tls_dir)


def _with_tls(config: Config, tls_dir: Path) -> Config:
    """The first server also listens on TLS_LISTEN with a development certificate for
    localhost (tls/devcert.py; the CA is made once in `tls_dir` and reused)."""
    made = issue(tls_dir, ("localhost", "127.0.0.1", "::1"))
    tls = TlsSpec(certificates=(TlsCertificate(str(made.cert), str(made.key)),))
    first = config.servers[0]
    listen = ListenSpec(*TLS_LISTEN, tls=tls)
    servers = (dataclasses.replace(first, listen=(*first.listen, listen)), *config.servers[1:])
    return dataclasses.replace(config, servers=servers)


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"backend on {host}:{port} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"backend on {host}:{port} did not start")


def start_backends() -> list[subprocess.Popen[bytes]]:
    procs = []
    for _name, host, port in BACKENDS:
        procs.append(
            subprocess.Popen([sys.executable, "-m", "ferryman.echo", "--listen", f"{host}:{port}"])
        )
    for (_name, host, port), proc in zip(BACKENDS, procs, strict=True):
        _wait_port(host, port, proc)
    return procs


def stop_backends(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(
    use_uvloop: bool = True,
    tls_dir: Path | None = None,
    admin: tuple[str, int] | None = ("127.0.0.1", 9901),
) -> int:
    config = demo_config(tls_dir, admin)
    listen = config.servers[0].listen[0]
    procs = start_backends()
    try:
        url = f"http://{listen.address}/"
        print(
            f"ferryman demo: 6 echo backends ({', '.join(f'{n}={h}:{p}' for n, h, p in BACKENDS)})"
        )
        print(
            f"ferryman demo: proxy on {url} (least_conn, {config.workers} workers); "
            "Ctrl-C stops all"
        )
        print(f"ferryman demo: running the reference nginx.conf ({config.source}) unmodified")
        print(f"watch the balancing:  for i in $(seq 12); do curl -s {url}; echo; done", flush=True)
        if config.admin is not None:
            print(f"ferryman demo: dashboard and admin API on http://{config.admin.address}/")
        if tls_dir is not None:
            ca = tls_dir / "ca.pem"
            print(f"ferryman demo: https://localhost:{TLS_LISTEN[1]}/ too (CA: {ca})")
            print(f"  curl --cacert {ca} https://localhost:{TLS_LISTEN[1]}/", flush=True)
        return serve(config, use_uvloop=use_uvloop)
    finally:
        stop_backends(procs)
        _log.debug("demo stopped (pid %d)", os.getpid())
