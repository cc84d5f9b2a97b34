"""`ferryman demo`: the reference system on one machine, no Docker.

Six echo backends, each its own process like the six containers, on 127.0.0.11 ...
127.0.0.16 port 3000 (all of 127.0.0.0/8 is loopback on Linux), and the proxy in front
running the reference nginx.conf unmodified (`data/nginx.conf`: least_conn,
weight=10 max_fails=3 fail_timeout=30s, 4 workers, 1024 connections each). As with
docker compose, the names server1 ... server6 resolve through --add-host style
overrides, and the file's `listen 80` is published on 127.0.0.1:8080 (docker -p).

Progress: a small child process (`python -m ferryman.demo progress HOST:PORT`) reads the
admin API's `/api/upstreams` every second and shows requests/s and what each backend
served: one line rewritten in place on a terminal, a plain line every PLAIN_EVERY seconds
(when something changed) otherwise; `--quiet` turns it off. A child, not a thread: the
demo's own process is the master, which forks workers (a thread there would be forked
mid-flight). It never touches the data plane: with `--admin off` there is no progress.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from importlib import resources
from pathlib import Path

from ferryman.config.load import apply_hosts, load_config
from ferryman.config.publish import apply_publish
from ferryman.config.schema import AdminSpec, Config, ListenSpec, TlsCertificate, TlsSpec
from ferryman.tls.devcert import issue
from ferryman.workers import serve

__all__ = ["BACKENDS", "PLAIN_EVERY", "demo_config", "progress_line", "run_demo"]

_log = logging.getLogger(__name__)

BACKENDS = tuple((f"server{i}", f"127.0.0.{10 + i}", 3000) for i in range(1, 7))


PUBLISH = ("127.0.0.1", 8080, 80)


# Seconds between progress lines when stdout is not a terminal (a log file, a pipe).
PLAIN_EVERY = 5.0


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
    quiet: bool = False,
) -> int:
    config = demo_config(tls_dir, admin)
    listen = config.servers[0].listen[0]
    procs = start_backends()
    if config.admin is not None and not quiet:
        progress = [sys.executable, "-m", "ferryman.demo", "progress", config.admin.address]
        procs.append(subprocess.Popen(progress))
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


# ---------------------------------------------------------------- progress


def _served(upstreams: object) -> dict[str, int]:
    """Peer -> requests served, from /api/upstreams (`server1:3000` shows as server1)."""
    out: dict[str, int] = {}
    if not isinstance(upstreams, list):
        return out
    for up in upstreams:
        for peer in up.get("peers", ()):
            name = str(peer.get("address", "?")).removesuffix(":3000")
            out[name] = out.get(name, 0) + int(peer.get("requests", 0))
    return out


def progress_line(before: dict[str, int], now: dict[str, int], seconds: float) -> str:
    """`ferryman demo: 12.5 req/s, 480 served | server1 80  server2 81 ...`."""
    total = sum(now.values())
    # A reload restarts the per-generation counts: never show a negative rate.
    rate = max(0, total - sum(before.values())) / seconds if seconds > 0 else 0.0
    peers = "  ".join(f"{name} {n}" for name, n in sorted(now.items()))
    return f"ferryman demo: {rate:.1f} req/s, {total} served | {peers}"


def _fetch(address: str) -> dict[str, int] | None:
    try:
        with urllib.request.urlopen(f"http://{address}/api/upstreams", timeout=2) as resp:
            return _served(json.load(resp).get("upstreams"))
    except (OSError, ValueError):
        return None  # not up yet, or reloading: try again next second


def _progress(address: str) -> int:
    tty = sys.stdout.isatty()
    parent = os.getppid()
    last: dict[str, int] = {}
    last_at = time.monotonic()
    shown = ""
    while os.getppid() == parent:  # the demo went away: so do we
        time.sleep(1.0 if tty else PLAIN_EVERY)
        now = _fetch(address)
        if now is None:
            continue
        at = time.monotonic()
        line = progress_line(last, now, at - last_at)
        last, last_at = now, at
        if tty:
            # One line rewritten in place; the cursor goes back to its start so a log
            # line printed meanwhile overwrites it instead of running on after it.
            sys.stdout.write("\r" + line + "\x1b[K\r")
        elif line.split("|", 1)[1] != shown.split("|", 1)[-1]:
            print(line)  # plain lines, only when something was served
        shown = line
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "progress":
        try:
            sys.exit(_progress(sys.argv[2]))
        except KeyboardInterrupt:  # Ctrl-C reaches the whole foreground group
            if sys.stdout.isatty():
                print()
            sys.exit(0)
    sys.exit("usage: python -m ferryman.demo progress HOST:PORT")
