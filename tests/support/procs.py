"""Real processes for integration tests: start, wait until ready, stop by PID.

Every process is started in its own session (so a Ctrl-C aimed at pytest does not reach
it twice), with stdout and stderr going to a log file that a failing test can show.
Processes are stopped by their own PID only: SIGTERM, a bounded wait, then SIGKILL.
Nothing here knows about Ferryman's internals; `start_echo` only runs its CLI.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "REPO_ROOT",
    "EchoBackend",
    "EchoFactory",
    "Proc",
    "ProxyProcess",
    "child_env",
    "free_port",
    "proxy_config",
    "start_echo",
    "start_echoes",
    "start_process",
    "start_proxy",
    "stop_process",
    "wait_for_line",
    "wait_for_port",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
_ECHO_LINE = re.compile(
    r"^echo (?P<uuid>\S+) listening on http://(?P<host>[^\s]+):(?P<port>\d+)$", re.M
)


@dataclass(slots=True)
class Proc:
    """A started process and the file its output goes to."""

    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        return stop_process(self.popen, timeout=timeout)

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited {self.popen.returncode}"
        return f"Proc(pid={self.pid} {state} {' '.join(self.argv)!r})"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (another process may still take it: prefer
    letting the server bind port 0 and report its port, as `start_echo` does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: ours, with src/ importable and unbuffered output."""
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_process(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start `argv` in its own session with output to `log_path`; does not wait."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    return Proc(list(argv), popen, log_path)


def wait_for_line(proc: Proc, pattern: re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
    """Wait until the process's output has a line matching `pattern`."""
    deadline = time.monotonic() + timeout
    while True:
        match = pattern.search(proc.output())
        if match:
            return match
        _check_alive_and_time(proc, deadline, f"no line matching {pattern.pattern!r}")
        time.sleep(0.02)


def wait_for_port(host: str, port: int, proc: Proc | None = None, timeout: float = 10.0) -> None:
    """Wait until `host:port` accepts a TCP connection (failing early if `proc` dies)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if proc is not None:
            _check_alive_and_time(proc, deadline, f"{host}:{port} never accepted")
        elif time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} never accepted")
        time.sleep(0.02)


def _check_alive_and_time(proc: Proc, deadline: float, what: str) -> None:
    if not proc.is_running():
        raise RuntimeError(f"{proc!r} exited early ({what}); output:\n{proc.output()}")
    if time.monotonic() > deadline:
        raise TimeoutError(f"{proc!r}: {what}; output:\n{proc.output()}")


def stop_process(popen: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """SIGTERM this PID, wait up to `timeout`, then SIGKILL it; returns the exit code."""
    if popen.poll() is None:
        try:
            os.kill(popen.pid, signal.SIGTERM)
            return popen.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.kill(popen.pid, signal.SIGKILL)
    return popen.wait()


@dataclass(slots=True)
class EchoBackend:
    """One `python -m ferryman.echo` process, ready to answer."""

    host: str
    port: int
    uuid: str
    proc: Proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> str:
        """`host:port`, the form `--backends` takes."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> int:
        return self.proc.stop(timeout)


class EchoFactory(Protocol):
    """The `echo_server` fixture: start backends, get them back ready."""

    def __call__(
        self, count: int = 1, *, host: str = "127.0.0.1", ports: Sequence[int] | None = None
    ) -> list[EchoBackend]: ...


def start_echo(
    log_dir: Path, host: str = "127.0.0.1", port: int = 0, *, uuid: str | None = None
) -> EchoBackend:
    """Start an echo backend; with port 0 it binds a free port and reports it (no race)."""
    return start_echoes(log_dir, host, [port], uuids=[uuid])[0]


def start_echoes(
    log_dir: Path,
    host: str,
    ports: Sequence[int],
    *,
    uuids: Sequence[str | None] | None = None,
) -> list[EchoBackend]:
    """Start one echo backend per port (0: a free one), all at once, then wait for each."""
    procs = []
    try:
        for port, uuid in zip(ports, uuids or [None] * len(ports), strict=True):
            argv = [sys.executable, "-m", "ferryman.echo", "--listen", f"{host}:{port}"]
            if uuid is not None:
                argv += ["--uuid", uuid]
            log_path = log_dir / f"echo-{host}-{port or 'any'}-{time.monotonic_ns()}.log"
            procs.append(start_process(argv, log_path, cwd=REPO_ROOT))
        return [_echo_ready(proc, host) for proc in procs]
    except BaseException:
        for proc in procs:
            proc.stop()
        raise


def _echo_ready(proc: Proc, host: str) -> EchoBackend:
    match = wait_for_line(proc, _ECHO_LINE)
    return EchoBackend(host, int(match["port"]), match["uuid"], proc)


# ---------------------------------------------------------------- the proxy under test


@dataclass(slots=True)
class ProxyProcess:
    """A `ferryman run -c FILE` master (with its workers) on 127.0.0.1:port."""

    proc: Proc
    port: int
    config_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.proc.output()

    def stop(self, timeout: float = 15.0) -> int:
        return self.proc.stop(timeout=timeout)


def proxy_config(
    port: int,
    backends: Sequence[str],
    *,
    balance: str = "round_robin",
    workers: int = 1,
    server_params: str = "",
    route_params: str = "",
    top: str = "",
    upstream_params: str = "",
) -> str:
    """A native YAML config: one upstream `app` over `backends`, one route `/`.

    `server_params` is appended to every upstream server mapping (e.g.
    `"max_fails: 3, fail_timeout: 30s"`); `route_params` / `top` / `upstream_params` are
    extra YAML lines for the route, the top level and the upstream.
    """
    extra = f", {server_params}" if server_params else ""
    servers = "\n".join(f'      - {{address: "{b}"{extra}}}' for b in backends)
    route_extra = "".join(f"        {line}\n" for line in route_params.splitlines() if line)
    up_extra = "".join(f"    {line}\n" for line in upstream_params.splitlines() if line)
    return (
        f"workers: {workers}\n{top}\n"
        f"upstreams:\n  app:\n    balance: {balance}\n{up_extra}    servers:\n{servers}\n"
        f'servers:\n  - listen: "127.0.0.1:{port}"\n    routes:\n'
        f"      - path: /\n        upstream: app\n{route_extra}"
    )


def start_proxy(
    workdir: Path, config_text: str, port: int, *, args: Sequence[str] = ()
) -> ProxyProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"ferryman-{port}.yaml"
    path.write_text(config_text)
    argv = [sys.executable, "-m", "ferryman", "run", "-c", str(path), *args]
    proc = start_process(argv, workdir / f"ferryman-{port}.log")
    try:
        wait_for_port("127.0.0.1", port, proc, timeout=15)
    except Exception:
        proc.stop()
        raise
    return ProxyProcess(proc, port, path)
