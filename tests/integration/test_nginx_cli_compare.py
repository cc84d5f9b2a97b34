"""`ferryman nginx` against the real nginx binary: the same small configurations, the same
flags, and the answers compared.

Each test gets two prefixes (`-p`), one per binary, with the same files in each; paths
in the output are compared with the prefix replaced by `PREFIX`. Compared: `-t`/`-T`/
`-q` output and exit codes on valid and invalid files, usage errors, `-v`/`-V` shape,
the pid file's life cycle with `daemon on`, each signal (HUP with a changed and with an
invalid file, QUIT and TERM with a request in flight, USR1 after moving the logs), and
the error-log lines for refused connections, timeouts and premature closes (the part
after `PID#TID: *CID`). Every process started is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.nginx import find_nginx, nginx_temp_paths
from support.procs import Proc, child_env, free_port, start_echo, start_process, wait_for_port

pytestmark = pytest.mark.once

NGINX = find_nginx()
# The warning a stale mypyc build prints would be the only difference on stderr.
_ENV = {"PYTHONWARNINGS": "ignore::RuntimeWarning", "FERRYMAN_PURE": "1"}
_LOG_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*)$")


@dataclass(frozen=True, slots=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(slots=True)
class Side:
    """One binary and its own prefix directory."""

    name: str
    argv: list[str]
    prefix: Path
    procs: list[Proc] = field(default_factory=list)
    daemons: list[int] = field(default_factory=list)

    def write(self, text: str, name: str = "nginx.conf") -> Path:
        # nginx's temp directories are compiled-in paths; moved under the prefix, for
        # nginx only (Ferryman writes no temp files and does not know the directives).
        # Same line, so that line numbers in messages stay the same for both.
        if self.name == "nginx":
            text = text.replace("http {", "http {" + _temp_line(self.prefix), 1)
        path = self.prefix / name
        path.write_text(text)
        return path

    def flags(self, *extra: str) -> list[str]:
        return [*self.argv, "-p", f"{self.prefix}/", "-c", "nginx.conf", "-e", "error.log", *extra]

    def run(self, *extra: str, timeout: float = 30.0) -> Result:
        done = subprocess.run(
            self.flags(*extra),
            capture_output=True,
            text=True,
            cwd=self.prefix,
            env=child_env(_ENV),
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Result(done.returncode, self.norm(done.stdout), self.norm(done.stderr))

    def start(self, port: int, *extra: str) -> Proc:
        """In the foreground (`daemon off`), as our child."""
        proc = start_process(
            self.flags("-g", "daemon off;", *extra),
            self.prefix / "out.log",
            env=child_env(_ENV),
            cwd=self.prefix,
        )
        self.procs.append(proc)
        wait_for_port("127.0.0.1", port, proc, timeout=20)
        wait_until(lambda: self.pid_file.exists(), what=f"{self.name} pid file")
        return proc

    @property
    def pid_file(self) -> Path:
        return self.prefix / "nginx.pid"

    def master_pid(self) -> int:
        return int(self.pid_file.read_text().strip())

    def log(self, name: str = "error.log") -> str:
        try:
            return self.norm((self.prefix / name).read_text(errors="replace"))
        except FileNotFoundError:
            return ""

    def log_messages(self, level: str) -> list[str]:
        out = []
        for line in self.log().splitlines():
            match = _LOG_LINE.match(line)
            if match and match[1] == level:
                out.append(match[2])
        return out

    def norm(self, text: str) -> str:
        return text.replace(str(self.prefix), "PREFIX")

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop(timeout=15)
        for pid in self.daemons:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _temp_line(prefix: Path) -> str:
    return " " + nginx_temp_paths(prefix).replace("\n", " ").rstrip()


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def get(port: int, path: str = "/", host: str = "example", timeout: float = 10.0) -> object:
    """(status, body) or the name of the exception that ended the request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("latin-1")
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()


def in_background(fn: Callable[[], object]) -> Callable[[], object]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()

    def join() -> object:
        thread.join(20)
        return result[0] if result else "no answer"

    return join


@pytest.fixture
def sides(tmp_path: Path) -> Iterator[tuple[Side, Side]]:
    assert NGINX is not None, "these tests compare with the real nginx binary"
    pair = (
        Side("nginx", [NGINX], tmp_path / "nginx"),
        Side("ferryman", [sys.executable, "-m", "ferryman", "nginx"], tmp_path / "ferryman"),
    )
    for side in pair:
        side.prefix.mkdir()
    yield pair
    for side in pair:
        side.stop_all()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    echo = start_echo(tmp_path_factory.mktemp("echo"))
    yield echo.address
    echo.stop()


def both(sides: tuple[Side, Side], text: str, *args: str) -> tuple[Result, Result]:
    for side in sides:
        side.write(text)
    nginx, ferryman = (side.run(*args) for side in sides)
    return nginx, ferryman


def simple_conf(port: int, body: str = "one", extra_main: str = "") -> str:
    return (
        f"{extra_main}events {{}}\n"
        "http {\n"
        "    access_log off;\n"
        f"    server {{\n        listen 127.0.0.1:{port};\n        server_name example;\n"
        f'        location / {{ return 200 "{body}\\n"; }}\n    }}\n'
        "}\n"
    )


# ---------------------------------------------------------------- -t, -T, -q


def test_t_on_a_valid_file_says_the_same(sides: tuple[Side, Side]) -> None:
    nginx, ferryman = both(sides, simple_conf(free_port()), "-t")
    assert nginx.code == ferryman.code == 0
    assert ferryman.err == nginx.err
    assert nginx.err == (
        "nginx: the configuration file PREFIX/nginx.conf syntax is ok\n"
        "nginx: configuration file PREFIX/nginx.conf test is successful\n"
    )
    assert ferryman.out == nginx.out == ""


_INVALID = {
    "unknown directive": "events {}\nhttp {\n    bogus 1;\n}\n",
    "not allowed here": "events {}\nhttp {\n    server {\n        proxy_pass http://a;\n    }\n}\n",
    "argument count": "worker_processes;\nevents {}\nhttp {}\n",
    "unexpected brace": "events {}\nhttp {\n}\n}\n",
    "end of file": "events {}\nhttp {",
    "duplicate": "pid a.pid;\npid b.pid;\nevents {}\nhttp {}\n",
    "bad log level": "error_log error.log loud;\nevents {}\nhttp {}\n",
}


@pytest.mark.parametrize("case", sorted(_INVALID))
def test_t_on_an_invalid_file_fails_the_same(sides: tuple[Side, Side], case: str) -> None:
    nginx, ferryman = both(sides, _INVALID[case], "-t")
    assert nginx.code == ferryman.code == 1
    assert ferryman.err == nginx.err
    assert "test failed" in nginx.err
    # The error log gets the same [emerg] line (after the time and PID#TID).
    assert sides[0].log_messages("emerg") == sides[1].log_messages("emerg") != []


@pytest.mark.parametrize(
    "directives",
    ["bogus 1;", "pid x.pid", "worker_processes 2; events {}"],
    ids=["unknown", "no-semicolon", "events-twice"],
)
def test_g_directives_come_first_and_fail_in_command_line(
    sides: tuple[Side, Side], directives: str
) -> None:
    nginx, ferryman = both(sides, simple_conf(free_port()), "-t", "-g", directives)
    assert nginx.code == ferryman.code == 1
    assert ferryman.err == nginx.err


def test_g_pid_and_the_file_pid_are_duplicate_in_the_file(sides: tuple[Side, Side]) -> None:
    text = simple_conf(free_port(), extra_main="pid in_file.pid;\n")
    nginx, ferryman = both(sides, text, "-t", "-g", "pid from_flag.pid;")
    assert nginx.code == ferryman.code == 1
    assert ferryman.err == nginx.err
    assert '"pid" directive is duplicate in PREFIX/nginx.conf:1' in nginx.err


def test_t_on_a_missing_file_fails_the_same(sides: tuple[Side, Side]) -> None:
    nginx, ferryman = (side.run("-t") for side in sides)
    assert nginx.code == ferryman.code == 1
    assert ferryman.err == nginx.err
    assert "(2: No such file or directory)" in nginx.err


def test_e_stderr_puts_the_log_line_on_stderr(sides: tuple[Side, Side]) -> None:
    nginx, ferryman = both(sides, _INVALID["unknown directive"], "-t", "-e", "stderr")
    assert nginx.code == ferryman.code == 1
    first_n, rest_n = nginx.err.split("\n", 1)
    first_f, rest_f = ferryman.err.split("\n", 1)
    assert _LOG_LINE.match(first_n) and _LOG_LINE.match(first_f)
    assert _LOG_LINE.sub(r"\1 \2", first_f) == _LOG_LINE.sub(r"\1 \2", first_n)
    assert rest_f == rest_n


def test_q_keeps_only_errors(sides: tuple[Side, Side]) -> None:
    ok_n, ok_f = both(sides, simple_conf(free_port()), "-t", "-q")
    assert ok_n == ok_f == Result(0, "", "")
    bad_n, bad_f = both(sides, _INVALID["unknown directive"], "-tq")
    assert bad_n.code == bad_f.code == 1
    assert bad_f.err == bad_n.err != ""


def test_T_dumps_every_file_read(sides: tuple[Side, Side]) -> None:
    port = free_port()
    text = simple_conf(port).replace("access_log off;", "access_log off;\n    include extra.conf;")
    for side in sides:
        (side.prefix / "extra.conf").write_text("default_type text/plain;\n")
    nginx, ferryman = both(sides, text, "-T")
    assert nginx.code == ferryman.code == 0
    assert ferryman.err == nginx.err
    # nginx's dump of its own file has the temp path lines we add for it only.
    expected = nginx.out.replace(sides[0].norm(_temp_line(sides[0].prefix)), "")
    assert ferryman.out == expected
    assert "# configuration file PREFIX/extra.conf:\ndefault_type text/plain;\n\n" in ferryman.out


# ---------------------------------------------------------------- the command line itself


@pytest.mark.parametrize(
    "argv",
    [["-x"], ["-c"], ["-p"], ["-g"], ["-s"], ["-s", "bogus"], ["plain"], ["-tx"]],
    ids=[
        "unknown",
        "c-no-value",
        "p-no-value",
        "g-no-value",
        "s-no-value",
        "bad-signal",
        "no-dash",
        "grouped-unknown",
    ],
)
def test_usage_errors_match(sides: tuple[Side, Side], argv: list[str]) -> None:
    results = [
        subprocess.run(
            [*side.argv, *argv], capture_output=True, text=True, env=child_env(_ENV), timeout=30
        )
        for side in sides
    ]
    nginx, ferryman = results
    assert nginx.returncode == ferryman.returncode == 1
    assert ferryman.stderr == nginx.stderr
    assert nginx.stderr.startswith("nginx: ")


def _version(side: Side, flag: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*side.argv, flag], capture_output=True, text=True, env=child_env(_ENV), timeout=30
    )


def test_v_and_V_have_nginx_shape(sides: tuple[Side, Side]) -> None:
    for side in sides:
        v = _version(side, "-v")
        assert v.returncode == 0 and v.stdout == ""
        assert re.fullmatch(r"nginx version: nginx/\d+\.\d+\.\d+( \(.*\))?\n", v.stderr), v.stderr
        big = _version(side, "-V")
        assert big.returncode == 0 and big.stdout == ""
        lines = big.stderr.splitlines()
        assert lines[0] == v.stderr.strip()
        assert lines[1].startswith("built with OpenSSL ")
        assert lines[2] == "TLS SNI support enabled"
        assert lines[3].startswith("configure arguments: --")
        args = lines[3].removeprefix("configure arguments: ").split(" --")
        assert all(a and not a.startswith("-") for a in args[1:])
    ferryman_args = _version(sides[1], "-V").stderr
    # What Ferryman implements, and what it does not, by nginx's flag names.
    for wanted in (
        "--with-http_ssl_module",
        "--with-http_v2_module",
        "--with-http_realip_module",
        "--without-http_gzip_module",
        "--without-http_fastcgi_module",
    ):
        assert f" {wanted}" in ferryman_args
    assert "--without-http_proxy_module" not in ferryman_args


def test_h_prints_the_same_options(sides: tuple[Side, Side]) -> None:
    nginx, ferryman = (_version(side, "-h") for side in sides)
    assert nginx.returncode == ferryman.returncode == 0
    # The first line is each one's version; the usage and every option are nginx's.
    assert ferryman.stderr.split("\n", 1)[1] == nginx.stderr.split("\n", 1)[1]


# ---------------------------------------------------------------- processes and signals


def _running_conf(port: int, body: str, backend: str = "", *, logs: bool = False) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    access = "access_log access.log;" if logs else "access_log off;"
    slow = f"        location /slow {{ proxy_pass http://{backend}; }}\n" if backend else ""
    return (
        f"{user}pid nginx.pid;\nerror_log error.log notice;\nworker_processes 1;\n"
        "events {}\n"
        f"http {{\n    {access}\n"
        f"    server {{\n        listen 127.0.0.1:{port};\n        server_name example;\n"
        f'        location / {{ return 200 "{body}\\n"; }}\n{slow}'
        "    }\n}\n"
    )


def test_daemon_on_detaches_and_the_pid_file_lives_as_long_as_the_master(
    sides: tuple[Side, Side],
) -> None:
    for side in sides:
        port = free_port()
        side.write(_running_conf(port, side.name))
        started = side.run()  # daemon on: nginx's default
        assert started == Result(0, "", ""), (side.name, started)
        # The command returned once the master was listening and its pid file written.
        pid = side.master_pid()
        side.daemons.append(pid)
        assert get(port) == (200, f"{side.name}\n")
        os.kill(pid, 0)  # the master runs on, detached
        quit_ = side.run("-s", "quit")
        assert quit_ == Result(0, "", ""), (side.name, quit_)
        wait_until(lambda s=side: not s.pid_file.exists(), what=f"{side.name} pid file removal")
        wait_until(lambda p=pid: not _alive(p), what=f"{side.name} master exit")
        # With the master gone, -s fails the same way on both (checked below).
    nginx, ferryman = (side.run("-s", "reload") for side in sides)
    assert nginx.code == ferryman.code == 1
    assert ferryman.err == nginx.err
    assert 'open() "PREFIX/nginx.pid" failed (2: No such file or directory)' in nginx.err


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our own child, not yet reaped) counts as gone.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"
    return True


def test_hup_reloads_a_changed_file_and_keeps_the_old_one_if_invalid(
    sides: tuple[Side, Side],
) -> None:
    emerg = []
    for side in sides:
        port = free_port()
        side.write(_running_conf(port, "one"))
        side.start(port)
        assert get(port) == (200, "one\n")
        side.write(_running_conf(port, "two"))
        os.kill(side.master_pid(), signal.SIGHUP)
        wait_until(lambda p=port: get(p) == (200, "two\n"), what=f"{side.name} reload")
        text = _running_conf(port, "three").replace("events {}", "events {}\nbogus 1;")
        line = text.splitlines().index("bogus 1;") + 1
        side.write(text)
        # By signal: `-s reload` would read the invalid file itself and send nothing.
        os.kill(side.master_pid(), signal.SIGHUP)
        wait_until(lambda s=side: s.log_messages("emerg") != [], what=f"{side.name} emerg")
        time.sleep(0.5)
        assert get(port) == (200, "two\n"), side.name  # still the last valid configuration
        assert side.procs[-1].is_running()
        emerg.append(side.log_messages("emerg"))
    assert emerg[0] == emerg[1] == [f'unknown directive "bogus" in PREFIX/nginx.conf:{line}']


def test_quit_lets_a_request_in_flight_finish(sides: tuple[Side, Side], backend: str) -> None:
    outcomes = []
    for side in sides:
        port = free_port()
        side.write(_running_conf(port, "one", backend))
        proc = side.start(port)
        answer = in_background(lambda p=port: get(p, "/slow?ms=1500"))
        time.sleep(0.5)
        os.kill(side.master_pid(), signal.SIGQUIT)
        result = answer()
        assert isinstance(result, tuple) and result[0] == 200, (side.name, result)
        outcomes.append((result[0], proc.popen.wait(timeout=15), side.pid_file.exists()))
    assert outcomes[0] == outcomes[1] == (200, 0, False)


def test_term_is_a_fast_stop(sides: tuple[Side, Side], backend: str) -> None:
    outcomes = []
    for side in sides:
        port = free_port()
        side.write(_running_conf(port, "one", backend))
        proc = side.start(port)
        answer = in_background(lambda p=port: get(p, "/slow?ms=4000"))
        time.sleep(0.5)
        started = time.monotonic()
        os.kill(side.master_pid(), signal.SIGTERM)
        code = proc.popen.wait(timeout=15)
        quick = time.monotonic() - started < 3.0  # did not wait for the request
        result = answer()
        outcomes.append((isinstance(result, str), code, quick, side.pid_file.exists()))
    # The request in flight gets no answer; the master exits 0 at once; no pid file.
    assert outcomes[0] == outcomes[1] == (True, 0, True, False)


def test_usr1_reopens_moved_log_files(sides: tuple[Side, Side]) -> None:
    counts = []
    for side in sides:
        port = free_port()
        side.write(_running_conf(port, "one", logs=True))
        side.start(port)
        assert get(port, "/first") == (200, "one\n")
        access = side.prefix / "access.log"
        wait_until(lambda a=access: "/first" in a.read_text(), what=f"{side.name} access log")
        access.rename(side.prefix / "access.log.1")
        (side.prefix / "error.log").rename(side.prefix / "error.log.1")
        side.run("-s", "reopen")
        wait_until(lambda a=access: a.exists(), what=f"{side.name} new access.log")
        wait_until(lambda s=side: (s.prefix / "error.log").exists(), what="new error.log")
        assert get(port, "/second") == (200, "one\n")
        wait_until(lambda a=access: "/second" in a.read_text(), what=f"{side.name} second line")
        old = (side.prefix / "access.log.1").read_text()
        new = access.read_text()
        # The signal is noticed in the old error log, before the reopen.
        reopened = "reopening logs" in (side.prefix / "error.log.1").read_text()
        counts.append((old.count("GET "), "/first" in old, new.count("GET "), reopened))
    assert counts[0] == counts[1] == (1, True, 1, True)


# ---------------------------------------------------------------- error-log lines


def test_upstream_errors_are_logged_in_nginx_words(sides: tuple[Side, Side], backend: str) -> None:
    dead = free_port()
    paths = ["/refused/x?a=1", "/slow?ms=3000", "/close", "/none", "/truncate?bytes=1000"]
    messages = []
    for side in sides:
        port = free_port()
        user = "user root;\n" if os.geteuid() == 0 else ""
        side.write(
            f"{user}pid nginx.pid;\nerror_log error.log error;\nevents {{}}\nhttp {{\n"
            "    access_log off;\n"
            f"    upstream dead {{ server 127.0.0.1:{dead}; }}\n"
            f"    upstream none {{ server 127.0.0.1:{dead} down; }}\n"
            f"    server {{\n        listen 127.0.0.1:{port};\n        server_name example;\n"
            "        location /refused { proxy_pass http://dead; }\n"
            f"        location /slow {{ proxy_pass http://{backend}; proxy_read_timeout 1s; }}\n"
            f"        location /close {{ proxy_pass http://{backend}; }}\n"
            "        location /none { proxy_pass http://none; }\n"
            f"        location /truncate {{ proxy_pass http://{backend}; }}\n"
            "    }\n}\n"
        )
        side.start(port)
        for path in paths:
            get(port, path, host="h.example")
        wait_until(lambda s=side: len(s.log_messages("error")) >= len(paths), what="errors")
        messages.append(side.log_messages("error"))
    assert messages[1] == messages[0]
    joined = "\n".join(messages[0])
    for words in (
        "connect() failed (111: Connection refused) while connecting to upstream",
        "upstream timed out (110: Connection timed out) while reading response header",
        "upstream prematurely closed connection while reading response header from upstream",
        "no live upstreams while connecting to upstream",
        "upstream prematurely closed connection while reading upstream",
    ):
        assert words in joined
