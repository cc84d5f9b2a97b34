"""`ferryman demo`: the reference system on one machine, no Docker.

Six echo backends, each its own process like the six containers, on 127.0.0.11 ...
127.0.0.16 port 3000 (all of 127.0.0.0/8 is loopback on Linux), known to the proxy as
server1 ... server6 through `hosts` overrides (Docker's --add-host), and the proxy in
front with the reference settings (least_conn, weight=10 max_fails=3 fail_timeout=30s,
4 workers, 1024 connections each).
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

from ferryman.config.native import load_native
from ferryman.config.schema import Config
from ferryman.workers import serve

__all__ = ["BACKENDS", "demo_config", "run_demo"]

_log = logging.getLogger(__name__)

BACKENDS = tuple((f"server{i}", f"127.0.0.{10 + i}", 3000) for i in range(1, 7))


def demo_config() -> Config:
    text = resources.files("ferryman").joinpath("data/demo.yaml").read_text()
    return load_native(text, "demo.yaml")


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
        print(f"watch the balancing:  for i in $(seq 12); do curl -s {url}; echo; done", flush=True)
        return serve(config, use_uvloop=use_uvloop)
    finally:
        stop_backends(procs)
        _log.debug("demo stopped (pid %d)", os.getpid())
