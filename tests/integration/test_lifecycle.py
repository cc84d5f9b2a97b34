"""Process lifecycle: reload on SIGHUP (good and bad configurations), refusing a bad
configuration at start with the key path, and `ferryman check`."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from support.memory import child_pids, wait_for_children
from support.procs import (
    EchoBackend,
    EchoFactory,
    ProxyProcess,
    child_env,
    free_port,
    proxy_config,
)

ProxyFactory = Callable[..., ProxyProcess]


def body(port: int) -> str:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/")
        return c.getresponse().read().decode()
    finally:
        c.close()


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_reload_switches_config_and_refuses_a_bad_one(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    a, b = echo_server(2)
    port = free_port()
    p = proxy(proxy_config(port, [a.address]), port)
    assert body(port) == a.uuid

    # A bad configuration: refused with its reason, and the old one keeps serving.
    p.config_path.write_text(proxy_config(port, [b.address]).replace("balance:", "balanse:"))
    os.kill(p.pid, signal.SIGHUP)
    assert wait_until(lambda: "reload refused" in p.output())
    assert "balanse" in p.output()
    assert all(body(port) == a.uuid for _ in range(5))

    # A good one: new workers take over, with no failed request in between.
    p.config_path.write_text(proxy_config(port, [b.address]))
    os.kill(p.pid, signal.SIGHUP)
    answers: list[str] = []
    assert wait_until(lambda: answers.append(body(port)) or answers[-1] == b.uuid)
    assert set(answers) <= {a.uuid, b.uuid}
    assert all(body(port) == b.uuid for _ in range(5))


def _catch_new_child(master: int, known: set[int], timeout: float = 10.0) -> int:
    # A tight loop, no sleep: the new worker must be caught while it is still building
    # (about 0.1 s with the configuration below), before it says it accepts.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = set(child_pids(master)) - known
        if fresh:
            return fresh.pop()
    raise AssertionError("no new worker appeared")


def _one_worker_in_front_of_a(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> tuple[EchoBackend, EchoBackend, int, ProxyProcess, int]:
    """Backends a and b, and a proxy (one worker: its pid) answering from a."""
    a, b = echo_server(2)
    port = free_port()
    p = proxy(proxy_config(port, [a.address]), port)
    assert body(port) == a.uuid
    (worker,) = wait_for_children(p.pid)
    return a, b, port, p, worker


def test_a_reload_whose_new_worker_dies_starting_keeps_the_old_one(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    # A new worker can die before it accepts for reasons the master's check cannot see
    # (the OOM killer; a file that changed between the check and the worker's build).
    # The reload is then rolled back: the running workers are never told to stop.
    a, b, port, p, old_worker = _one_worker_in_front_of_a(echo_server, proxy)

    # Thousands of routes make building a worker take long enough to catch it.
    many = "".join(f"      - {{path: /r{i}/, upstream: app}}\n" for i in range(4000))
    p.config_path.write_text(proxy_config(port, [b.address]) + many)
    os.kill(p.pid, signal.SIGHUP)
    new_worker = _catch_new_child(p.pid, {old_worker})
    os.kill(new_worker, signal.SIGKILL)
    assert wait_until(lambda: "reload failed, keeping the running configuration" in p.output())
    assert f"new worker {new_worker} exited before accepting" in p.output()
    assert "reloaded configuration" not in p.output()
    assert all(body(port) == a.uuid for _ in range(5))
    # The killed one is reaped and not restarted either.
    assert wait_until(lambda: child_pids(p.pid) == [old_worker])
    time.sleep(0.6)  # the master's next turns (it reaps every 0.5 s at most)
    assert child_pids(p.pid) == [old_worker]

    # The master is not stuck half-way: the next reload works as usual.
    p.config_path.write_text(proxy_config(port, [b.address]))
    os.kill(p.pid, signal.SIGHUP)
    assert wait_until(lambda: body(port) == b.uuid)
    assert wait_until(lambda: old_worker not in child_pids(p.pid))


_PIDS_CGROUPS = Path("/sys/fs/cgroup/pids")  # cgroup v1's pids controller


@contextlib.contextmanager
def _no_room_for_processes(pid: int) -> Iterator[Callable[[], None]]:
    """Puts process `pid` alone in a pids cgroup with no room for one more process, so
    that its forks fail (EAGAIN, for root too, unlike RLIMIT_NPROC); yields a function
    that lifts the limit. Whatever is in the cgroup goes back to the root one after."""
    group = _PIDS_CGROUPS / f"ferryman-test-{os.getpid()}-{pid}"
    # Fails, not skips, where no such cgroup can be made (root and cgroup v1's pids
    # controller are needed): the behaviour under test would go unchecked.
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        (group / "pids.max").write_text((group / "pids.current").read_text().strip())
        yield lambda: (group / "pids.max").write_text("max")
    finally:
        for member in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # it may have exited meanwhile
                (_PIDS_CGROUPS / "cgroup.procs").write_text(member)
        group.rmdir()


def test_a_master_that_cannot_fork_keeps_serving_and_recovers(
    echo_server: EchoFactory, proxy: ProxyFactory
) -> None:
    a, b, port, p, worker = _one_worker_in_front_of_a(echo_server, proxy)
    with _no_room_for_processes(p.pid) as lift:
        # A reload that cannot start its workers is rolled back, not half done.
        p.config_path.write_text(proxy_config(port, [b.address]))
        os.kill(p.pid, signal.SIGHUP)
        assert wait_until(lambda: "cannot start a new worker" in p.output())
        assert "reload failed, keeping the running configuration" in p.output()
        assert all(body(port) == a.uuid for _ in range(5))
        # A worker that dies cannot be replaced for now: the master stays up and tries
        # again (before, the fork's error ended the master, and every worker with it).
        os.kill(worker, signal.SIGKILL)
        assert wait_until(lambda: "cannot start a process" in p.output())
        time.sleep(1.0)  # two more turns of the master's loop, each one failing
        assert p.proc.is_running()
        assert child_pids(p.pid) == []
        lift()
        assert wait_until(lambda: len(child_pids(p.pid)) == 1)
        assert wait_until(lambda: "started again" in p.output())
        assert body(port) == a.uuid  # the running configuration, restarted
    os.kill(p.pid, signal.SIGHUP)  # the same file, now that processes can be made
    assert wait_until(lambda: body(port) == b.uuid)


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_access_log_files_reloads_and_restarts(
    echo_server: EchoFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    (a,) = echo_server(1)
    port = free_port()
    logs = tmp_path / "access-logs"
    logs.mkdir()

    def config(path: Path) -> str:
        return proxy_config(port, [a.address], top=f"access_log: {{path: {path}}}")

    p = proxy(config(logs / "access.log"), port)
    assert body(port) == a.uuid
    assert wait_until(lambda: "GET / HTTP/1.1" in (logs / "access.log").read_text())

    # A log path that cannot be opened refuses the reload, naming the setting; before,
    # the open's OSError ended the master (and every worker with it).
    p.config_path.write_text(config(tmp_path / "missing-dir" / "access.log"))
    os.kill(p.pid, signal.SIGHUP)
    assert wait_until(lambda: "reload refused" in p.output())
    assert "access_log.path" in p.output()
    assert p.proc.is_running()
    assert body(port) == a.uuid

    # Each reload's check opened the log and left it open: the master's descriptors
    # grew by one per reload.
    p.config_path.write_text(config(logs / "access.log"))
    before = _fd_count(p.pid)
    for n in range(1, 4):
        os.kill(p.pid, signal.SIGHUP)
        assert wait_until(lambda n=n: p.output().count("reloaded configuration") == n)
        assert wait_until(lambda: len(child_pids(p.pid)) == 1)  # the old worker gone
    assert _fd_count(p.pid) <= before

    # The workers write to the file the master opened: a worker started again after
    # the log's directory went away still starts and serves (opening the path itself,
    # it failed at every start and nothing served).
    shutil.rmtree(logs)
    (worker,) = child_pids(p.pid)
    logged = len(p.output())
    os.kill(worker, signal.SIGKILL)
    assert wait_until(lambda: child_pids(p.pid) not in ([], [worker]))
    assert body(port) == a.uuid
    assert "worker crashed" not in p.output()[logged:]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferryman", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )


def test_bad_config_is_refused_at_start_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        proxy_config(free_port(), ["127.0.0.1:1"]).replace(
            '"127.0.0.1:1"}', '"127.0.0.1:1", weight: +5}'
        )
    )
    r = run_cli("run", "-c", str(cfg))
    assert r.returncode == 1
    assert "upstreams.app.servers[0].weight" in r.stderr
    r = run_cli("check", "-c", str(cfg))
    assert r.returncode == 1 and "weight" in r.stderr


def test_check_accepts_a_good_config_and_names_unresolvable_hosts(tmp_path: Path) -> None:
    cfg = tmp_path / "good.yaml"
    cfg.write_text(proxy_config(free_port(), ["server1:3000"]))
    r = run_cli("check", "-c", str(cfg), "--add-host", "server1:127.0.0.11")
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stdout
    r = run_cli("check", "-c", str(cfg))
    assert r.returncode == 1
    assert "host not found in upstream" in r.stderr and "servers[0]" in r.stderr


def test_port_in_use_is_refused_clearly(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        cfg = tmp_path / "busy.yaml"
        cfg.write_text(proxy_config(port, ["127.0.0.1:1"]))
        r = run_cli("run", "-c", str(cfg))
    assert r.returncode == 1
    assert f"127.0.0.1:{port}" in r.stderr and "cannot bind" in r.stderr
