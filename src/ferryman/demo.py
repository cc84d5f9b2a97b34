"""`ferryman demo`: the reference system on one machine, no Docker.

Six echo backends, each its own process like the six containers, on 127.0.0.11 ...
127.0.0.16 port 3000 (all of 127.0.0.0/8 is loopback on Linux), and the proxy in front
running the reference nginx.conf unmodified (`data/nginx.conf`: least_conn,
weight=10 max_fails=3 fail_timeout=30s, 4 workers, 1024 connections each). As with
docker compose, the names server1 ... server6 resolve through --add-host style
overrides, and the file's `listen 80` is published on 127.0.0.1:8080 (docker -p).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from importlib import resources

from ferryman.config.load import apply_hosts, load_config
from ferryman.config.publish import apply_publish
from ferryman.config.schema import Config
from ferryman.workers import serve

__all__ = ["BACKENDS", "demo_config", "run_demo"]

_log = logging.getLogger(__name__)

BACKENDS = tuple((f"server{i}", f"127.0.0.{10 + i}", 3000) for i in range(1, 7))


PUBLISH = ("127.0.0.1", 8080, 80)


def demo_config() -> Config:
    with resources.as_file(resources.files("ferryman").joinpath("data/nginx.conf")) as path:
        config = load_config(str(path))
    config = apply_hosts(config, {name: host for name, host, _ in BACKENDS})
    return apply_publish(config, [PUBLISH])


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


def run_demo(use_uvloop: bool = True) -> int:
    config = demo_config()
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
        return serve(config, use_uvloop=use_uvloop)
    finally:
        stop_backends(procs)
        _log.debug("demo stopped (pid %d)", os.getpid())
