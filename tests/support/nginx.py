"""A real nginx for differential tests: start it on a rendered nginx.conf, stop it by PID.

nginx runs in the foreground (`daemon off; master_process on;`) as our own child, in its
own session, with `-p PREFIX` so every relative path (and the pid file) lives in a
temporary directory, and `-e` so even start-up errors go to a file a failing test can
show. It is stopped by the master's PID only (SIGTERM = fast shutdown, then SIGKILL);
the master takes its workers with it. Nothing here knows about Ferryman.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from support.procs import Proc, start_process, wait_for_port

__all__ = [
    "NGINX_TEMP_PATHS",
    "NginxProcess",
    "find_nginx",
    "nginx_temp_paths",
    "start_nginx",
]

_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

# nginx's temp directories are compiled-in absolute paths (Debian: /var/lib/nginx/*);
# these http-level directives move them under the prefix so a test touches nothing
# outside its temporary directory.
NGINX_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def find_nginx() -> str | None:
    """The nginx binary (`$NGINX`, then PATH, then the usual places), or None."""
    explicit = os.environ.get("NGINX")
    if explicit:
        return explicit
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in _CANDIDATES if os.access(c, os.X_OK)), None)


def nginx_temp_paths(prefix: Path) -> str:
    """http-context directives putting every temp path under `prefix`."""
    return "".join(f"{name}_temp_path {prefix / name};\n" for name in NGINX_TEMP_PATHS)


@dataclass(slots=True)
class NginxProcess:
    """One nginx master (and its workers) listening on 127.0.0.1:port."""

    proc: Proc
    port: int
    prefix: Path
    conf_path: Path
    error_log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        """Its stdout/stderr and its error log, for a failing test to show."""
        try:
            errors = self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            errors = ""
        return f"{self.proc.output()}\n--- error log ---\n{errors}"

    def stop(self, timeout: float = 10.0) -> int:
        return self.proc.stop(timeout=timeout)

    def __repr__(self) -> str:
        return f"NginxProcess(pid={self.pid} port={self.port} conf={self.conf_path})"


def start_nginx(
    binary: str, prefix: Path, conf_text: str, port: int, *, timeout: float = 10.0
) -> NginxProcess:
    """Write `conf_text` under `prefix`, run nginx on it, wait until `port` accepts.

    The conf must not set `pid`, `daemon` or `master_process` (they come from `-g`).
    When we are root, workers keep running as root (`user root;`): the default `nobody`
    could not enter a 0700 pytest temporary directory to write its temp files.
    """
    prefix.mkdir(parents=True, exist_ok=True)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf_text)
    error_log = prefix / "error.log"
    globals_ = f"daemon off; master_process on; pid {prefix / 'nginx.pid'};"
    if os.geteuid() == 0:
        globals_ += " user root;"
    argv = [binary, "-p", f"{prefix}/", "-c", str(conf_path), "-e", str(error_log)]
    argv += ["-g", globals_]
    proc = start_process(argv, prefix / "nginx.out", cwd=prefix)
    try:
        wait_for_port("127.0.0.1", port, proc, timeout=timeout)
    except BaseException:
        proc.stop()
        raise
    return NginxProcess(proc, port, prefix, conf_path, error_log)
