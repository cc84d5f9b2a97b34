"""A real redis-server for the cluster tests: started on a free loopback port with
persistence off (`--save "" --appendonly no`), in its own directory, stopped by PID.

`RedisServer.restart()` starts a new server on the same port (the data is gone, as
after a crash with persistence off); `kill()` ends it at once (SIGKILL), as a crash.
"""

from __future__ import annotations

import shutil
import signal
import socket
import time
from pathlib import Path

from support.procs import Proc, free_port, start_process, wait_for_port

__all__ = ["RedisServer", "redis_available", "start_redis"]


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


class RedisServer:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None or not self.proc.is_running()
        self.starts += 1
        argv = [
            "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--protected-mode", "yes",
            "--daemonize", "no",
        ]  # fmt: skip
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = start_process(argv, self.workdir / f"redis-{self.port}-{self.starts}.log")
        wait_for_port("127.0.0.1", self.port, self.proc, timeout=10)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.command("PING") == "+PONG":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on {self.port} does not answer PING")
            time.sleep(0.02)

    def command(self, *args: str) -> str:
        """One command over a raw socket (RESP); the first reply line, for checks."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(payload.encode())
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.split(b"\r\n", 1)[0].decode()

    def kill(self) -> None:
        """A crash: SIGKILL, by PID."""
        if self.proc is not None and self.proc.is_running():
            self.proc.popen.send_signal(signal.SIGKILL)
            self.proc.popen.wait(timeout=5)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.is_running():
            self.proc.stop()

    def __repr__(self) -> str:
        running = self.proc is not None and self.proc.is_running()
        return f"RedisServer(port={self.port}, {'running' if running else 'stopped'})"


def start_redis(workdir: Path) -> RedisServer:
    server = RedisServer(workdir, free_port())
    server.start()
    return server
