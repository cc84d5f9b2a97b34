"""Master and worker processes.

The master binds every listening socket once per worker slot with SO_REUSEPORT (the
kernel spreads connections across slots), forks one worker per slot, restarts a worker
that dies, and turns signals into actions: TERM/INT/QUIT drain and exit, HUP reloads.
It never runs an event loop, so forking is safe.

A reload validates the new configuration first; an invalid one is logged and the old
workers keep serving. New workers take over the same listening sockets (the master
holds them), so no connection waiting in an accept queue is lost; the old workers are
told to stop only once every new one says (through a pipe) that it accepts, so there is
no moment when nobody accepts. Old workers finish what they have in flight, tunnels
included, for up to worker_shutdown_timeout; idle keep-alive connections get a short
grace to send one more request (answered with Connection: close) before they are
closed. Peer health learned by the old generation is carried over for unchanged peers
(SharedHealth.carry_over), and each worker publishes its metrics (observability/metrics.py)
into a directory the master keeps for its lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ferryman.app import (
    Resolved,
    WorkerRuntime,
    build_tls,
    build_worker,
    check_config,
    resolve_peers,
)
from ferryman.config.schema import Config, HealthCheckSpec, ListenSpec, PeerSpec
from ferryman.errors import ConfigError
from ferryman.filters.registry import FilterState, read_user_files
from ferryman.filters.zone import open_zones
from ferryman.health.probe import probe
from ferryman.health.shared import SharedHealth
from ferryman.health.thresholds import ProbeState
from ferryman.observability.access_log import open_access_log
from ferryman.observability.admin import AdminTables, Routes, bind_admin, load_token, make_tables
from ferryman.observability.error_log import LEVELS, install, reopen_all
from ferryman.observability.metrics import WorkerMetrics, cluster_status
from ferryman.observability.metrics import retire as retire_metrics
from ferryman.observability.metrics import route_entry as metrics_route
from ferryman.server.conn_cap import ConnectionCap, SharedConnectionCount
from ferryman.server.connection import ClientConnection
from ferryman.server.context import ListenerContext
from ferryman.tls.contexts import ListenerTls
from ferryman.tls.server import TlsServerProtocol
from ferryman.upstream.overrides import SharedOverrides

__all__ = ["DRAIN_TIMEOUT", "bind_listener", "serve"]

_log = logging.getLogger(__name__)

# The default of Config.worker_shutdown_timeout: how long a worker may spend finishing
# in-flight requests on shutdown or reload (nginx: unlimited by default; a bound keeps a
# stuck long-poll from holding a reload forever).
DRAIN_TIMEOUT = 10.0
BACKLOG = 4096
# How long a reload waits for the new workers to accept before it stops the old ones
# anyway (building a worker takes milliseconds; a huge configuration, seconds).
_READY_TIMEOUT = 10.0
# How long a draining worker lets idle keep-alive connections send one more request.
_IDLE_GRACE = 1.0
NOTICE = LEVELS["notice"]
# What nginx adds to its "signal N (SIG...) received from PID" notice.
_SIGNAL_WORDS: dict[int, str] = {
    signal.SIGTERM: ", exiting",
    signal.SIGINT: ", exiting",
    signal.SIGQUIT: ", shutting down",
    signal.SIGHUP: ", reconfiguring",
    signal.SIGUSR1: ", reopening logs",
}
# The slot number of a generation's health-check prober process.
PROBER = -1
# The slot number of a generation's admin API process (observability/admin.py).
ADMIN = -2
_MASTER_SIGNALS = {
    signal.SIGCHLD,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGWINCH,
}
# Master -> worker: SIGTERM and SIGQUIT drain (finish in-flight requests), SIGINT is a
# fast stop (nginx's TERM/INT: connections are closed now), SIGUSR1 reopens log files.
_FAST_STOP = signal.SIGINT


@dataclass(frozen=True, slots=True)
class ProcessMode:
    """How the master behaves as a process. `ferryman nginx` takes nginx's rules: error
    log lines in nginx's format, and TERM/INT a fast stop; `ferryman run` keeps its own
    format and drains on TERM, as it always has (QUIT drains in both)."""

    nginx_log_format: bool = False
    fast_term: bool = False


def bind_listener(listen: ListenSpec) -> socket.socket:
    infos = socket.getaddrinfo(
        listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"listen {listen.address}", f"cannot bind: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


@dataclass
class _Generation:
    config: Config
    resolved: Resolved
    pids: dict[int, int] = field(default_factory=dict)  # pid -> slot (PROBER: the prober)
    # Peer health shared by this generation's workers and its prober.
    shared: SharedHealth = field(init=False)
    # TLS contexts, built here in the master so that the workers share their session
    # ticket keys (tls/contexts.py); a reload builds new ones with the files re-read.
    tls: dict[ListenSpec, ListenerTls] = field(init=False)
    # Limit zones (shared memory, made before the fork); the running generation's are
    # passed in on reload so that zones whose spec is unchanged keep their state.
    previous_zones: dict[str, Any] | None = field(default=None, repr=False)
    filters: FilterState = field(init=False)
    # The htpasswd files' users as the reload's check read them (None: read here).
    users: dict[str, dict[bytes, bytes]] | None = field(default=None, repr=False)
    # Metrics (observability/metrics.py): the master's snapshot directory, and this
    # generation's number (peer health is reported from the newest one only).
    metrics_dir: str | None = None
    number: int = 0
    # The running generation on reload: unchanged peers keep its health slots.
    previous: _Generation | None = field(default=None, repr=False)
    # Admin API: the master's drain/weight overrides (kept across reloads) and this
    # generation's tables for the admin process (None without `admin:`).
    overrides: SharedOverrides | None = field(default=None, repr=False)
    admin: AdminTables | None = field(default=None, init=False, repr=False)
    # The access log, opened here and inherited by the workers (nginx's master does the
    # same): a worker started again after the log's directory went away still has a
    # file to write to, where opening the path itself would fail at every start.
    access_fd: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Before any shared memory is made: a bad file then leaves nothing to undo.
        users = read_user_files(self.config) if self.users is None else self.users
        self.users = None
        self.shared = SharedHealth(sum(len(u.servers) for u in self.config.upstreams))
        if self.previous is not None:
            moves = _unchanged_peers(self.previous.config, self.config)
            self.shared.carry_over(self.previous.shared, moves)
            self.previous = None
        self.filters = FilterState(
            open_zones(self.config.limit_zones, self.config.source, self.previous_zones), users
        )
        self.previous_zones = None
        self.tls = build_tls(self.config)
        self.admin = _admin_tables(self.config, self.shared, self.overrides)
        self.access_fd = open_access_log(self.config.access_log.path, self.config.source)

    def reopen_access_log(self) -> None:
        """USR1 (logrotate): the workers open the path again themselves; the master's
        copy, for workers started from now on, follows. Kept as it is if the path
        cannot be opened (a worker's reopen keeps its old file too)."""
        if self.access_fd is None:
            return
        with contextlib.suppress(ConfigError):
            fresh = open_access_log(self.config.access_log.path, self.config.source)
            if fresh is not None:
                os.close(self.access_fd)
                self.access_fd = fresh

    def close_files(self) -> None:
        """Every process of this generation has exited."""
        if self.access_fd is not None:
            os.close(self.access_fd)
            self.access_fd = None

    @property
    def needs_prober(self) -> bool:
        return any(u.health_check is not None for u in self.config.upstreams)


def _peer_slots(config: Config) -> dict[tuple[str, PeerSpec], int]:
    """(upstream name, peer spec) -> its slot in the shared health table (peers are
    numbered across all upstreams in configuration order, as app.py numbers them)."""
    out: dict[tuple[str, PeerSpec], int] = {}
    slot = 0
    for up in config.upstreams:
        for peer in up.servers:
            out.setdefault((up.name, peer), slot)
            slot += 1
    return out


def _unchanged_peers(old: Config, new: Config) -> list[tuple[int, int]]:
    """(old slot, new slot) for each peer the new configuration keeps as it was: same
    upstream, same spec (address, weight, max_fails, ...). A changed peer starts afresh,
    as a new one would (nginx: a reload forgets all; NGINX Plus keeps unchanged peers)."""
    before = _peer_slots(old)
    return [(before[key], slot) for key, slot in _peer_slots(new).items() if key in before]


def _fork_child() -> int:
    """os.fork() for a worker, prober or admin process, with the master's memory made
    cheap to share: garbage collected and free heap returned to the system first, and
    every live object frozen (gc.freeze) for the child, so that its collections never
    write to the inherited objects' headers and copy their pages. An idle worker's RSS
    fell from about 30.7 to 28-29.5 MiB with it, its private memory by up to 2 MiB."""
    gc.collect()
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).malloc_trim(0)  # glibc only
    gc.freeze()
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        raise
    if pid != 0:
        gc.unfreeze()  # the master goes on collecting what it frees
    return pid


class _Master:
    def __init__(
        self, config: Config, reload: Callable[[], Config] | None, use_uvloop: bool
    ) -> None:
        self.reload_fn = reload
        self.use_uvloop = use_uvloop
        self.mode = ProcessMode()  # serve() sets it
        self.sockets: dict[tuple[int, ListenSpec], socket.socket] = {}
        # Metrics snapshots of every worker, for the master's lifetime (counters must
        # not go back on reload); made by run(), removed by serve() on exit.
        self.metrics_dir: str | None = None
        # Admin API: runtime peer overrides for the master's lifetime, and the admin
        # listening socket (held here, like the others, across reloads).
        self.overrides = SharedOverrides()
        self.admin_sockets: dict[str, socket.socket] = {}
        self.current = _Generation(
            config,
            resolve_peers(config),
            overrides=self.overrides,
        )
        # New workers' "accepting" pipes (pid -> read end): a reload stops the old
        # workers only once the new ones listen (see reload).
        self.ready: dict[int, int] = {}
        self.old: list[_Generation] = []
        self.last_number = 0  # the newest generation's number
        self.stopping = False
        self.stop_deadline = 0.0
        self.crashes: list[float] = []
        # Slots whose process could not be started again (fork failed: no memory, or
        # the process limit): tried again each turn of the master's loop.
        self.unborn: list[int] = []
        # Client connections of every worker, old generations included, for
        # Config.max_connections: one counter per worker process (pid -> its slot).
        self.conn_count = SharedConnectionCount()
        self.conn_slots: dict[int, int] = {}

    # ---- sockets and workers ----

    def sockets_for(self, slot: int, config: Config) -> dict[ListenSpec, socket.socket]:
        out = {}
        for server in config.servers:
            for listen in server.listen:
                key = (slot, listen)
                if key not in self.sockets:
                    self.sockets[key] = bind_listener(listen)
                out[listen] = self.sockets[key]
        return out

    def spawn(self, gen: _Generation, slot: int) -> None:
        if slot == PROBER:
            self.spawn_prober(gen)
            return
        if slot == ADMIN:
            self.spawn_admin(gen)
            return
        socks = self.sockets_for(slot, gen.config)
        count_slot = self.conn_count.claim()
        ready_r, ready_w = os.pipe()
        try:
            pid = _fork_child()
        except OSError:
            os.close(ready_r)
            os.close(ready_w)
            if count_slot is not None:
                self.conn_count.release(count_slot)
            raise
        if pid == 0:
            code = 1
            try:
                os.close(ready_r)
                _ignore_log_signals()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_SIGNALS)
                for key, sock in self.sockets.items():
                    if key[0] != slot:
                        sock.close()
                cap = None
                if gen.config.max_connections and count_slot is not None:
                    cap = ConnectionCap(self.conn_count, count_slot, gen.config.max_connections)
                code = run_worker(
                    gen.config,
                    gen.resolved,
                    socks,
                    self.use_uvloop,
                    slot,
                    gen.shared,
                    cap,
                    tls=gen.tls,
                    filters=gen.filters,
                    ready_fd=ready_w,
                    metrics=(gen.metrics_dir, gen.number),
                    admin=gen.admin,
                    access_fd=gen.access_fd,
                )
            except BaseException:
                _log.exception("worker crashed")
            finally:
                os._exit(code)
        os.close(ready_w)
        self.ready[pid] = ready_r
        gen.pids[pid] = slot
        if count_slot is not None:
            self.conn_slots[pid] = count_slot

    def spawn_prober(self, gen: _Generation) -> None:
        """The process that runs this generation's active health checks."""
        pid = _fork_child()
        if pid == 0:
            code = 1
            try:
                _ignore_log_signals()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_SIGNALS)
                for sock in self.sockets.values():
                    sock.close()
                code = run_prober(gen.config, gen.resolved, gen.shared, self.use_uvloop)
            except BaseException:
                _log.exception("health prober crashed")
            finally:
                os._exit(code)
        gen.pids[pid] = PROBER

    def admin_socket(self, config: Config) -> socket.socket | None:
        """The admin listener's socket (bound once per address; ConfigError if not).
        Sockets of other addresses are closed here: an admin process still serving one
        holds its own copy until it stops."""
        address = config.admin.address if config.admin is not None else None
        if config.admin is not None and address not in self.admin_sockets:
            self.admin_sockets[config.admin.address] = bind_admin(config.admin)
        for other in [a for a in self.admin_sockets if a != address]:
            self.admin_sockets.pop(other).close()
        return self.admin_sockets[address] if address is not None else None

    def spawn_admin(self, gen: _Generation) -> None:
        """The process that serves this generation's admin API and dashboard."""
        sock = self.admin_socket(gen.config)
        if sock is None or gen.admin is None:
            return
        master = os.getpid()
        pid = _fork_child()
        if pid == 0:
            code = 1
            try:
                _ignore_log_signals()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_SIGNALS)
                for other in self.sockets.values():
                    other.close()
                code = run_admin_process(gen, sock, master, self.use_uvloop)
            except BaseException:
                _log.exception("admin process crashed")
            finally:
                os._exit(code)
        gen.pids[pid] = ADMIN

    def start(self) -> None:
        for slot in range(self.current.config.workers):
            self.spawn(self.current, slot)
        if self.current.needs_prober:
            self.spawn_prober(self.current)
        self.spawn_admin(self.current)
        self.close_ready()  # nothing to hand over from at start

    def close_ready(self) -> None:
        for fd in self.ready.values():
            os.close(fd)
        self.ready.clear()

    def await_ready(self, pids: list[int], timeout: float) -> tuple[list[int], list[int]]:
        """Wait until each new worker says it accepts on its sockets (or exits, or
        `timeout` passes); returns the pids that never said so: (still starting,
        exited before accepting)."""
        waiting = {self.ready[pid]: pid for pid in pids if pid in self.ready}
        exited = []
        deadline = time.monotonic() + timeout
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, _, _ = select.select(list(waiting), [], [], left)
            for fd in readable:
                said = b""
                with contextlib.suppress(OSError):
                    said = os.read(fd, 1)  # a byte: accepting; b"": it exited first
                if not said:
                    exited.append(waiting[fd])
                del waiting[fd]
        self.close_ready()
        return sorted(waiting.values()), sorted(exited)

    # ---- signals ----

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _MASTER_SIGNALS)
        self.metrics_dir = self.current.metrics_dir = tempfile.mkdtemp(prefix="ferryman-metrics-")
        self.start()
        while True:
            info = signal.sigtimedwait(_MASTER_SIGNALS, 0.5)
            if info is not None:
                self.on_signal(info.si_signo, info.si_pid)
            self.reap()
            if self.unborn and not self.stopping:
                for slot in list(self.unborn):
                    self.respawn(slot)
            if self.stopping:
                if not self.current.pids and not any(g.pids for g in self.old):
                    return 0
                if time.monotonic() > self.stop_deadline:
                    self.kill_all(signal.SIGKILL)

    def on_signal(self, signo: int, sender: int = 0) -> None:
        if signo != signal.SIGCHLD:
            # nginx's notice, word for word: operators grep for it.
            what = _SIGNAL_WORDS.get(signo, "")
            name = signal.Signals(signo).name
            _log.log(NOTICE, "signal %d (%s) received from %d%s", signo, name, sender, what)
        if signo in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) and not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.drain_timeout() + 2
            fast = signo != signal.SIGQUIT and self.mode.fast_term
            self.kill_all(_FAST_STOP if fast else signal.SIGTERM)
        elif signo == signal.SIGHUP and not self.stopping:
            self.reload()
        elif signo == signal.SIGUSR1:
            # logrotate: the master's files now, each worker's its own (they hold
            # their own descriptors to the error and access logs).
            _log.log(NOTICE, "reopening logs")
            reopen_all()
            self.current.reopen_access_log()
            self.kill_all(signal.SIGUSR1)
        # SIGWINCH: nginx stops its workers gracefully only when daemonized, to hand
        # over to a new binary (USR2); Ferryman has no binary upgrade, so WINCH is
        # logged above and otherwise ignored, as nginx does in the foreground.

    def drain_timeout(self) -> float:
        """The longest worker_shutdown_timeout of the generations still running."""
        gens = (self.current, *self.old)
        return max(g.config.worker_shutdown_timeout for g in gens)

    def kill_all(self, signo: int) -> None:
        for gen in (self.current, *self.old):
            for pid in gen.pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signo)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.on_exit(pid, status)

    def on_exit(self, pid: int, status: int) -> None:
        count_slot = self.conn_slots.pop(pid, None)
        if count_slot is not None:
            self.conn_count.release(count_slot)  # its connections died with it
        if self.metrics_dir is not None:
            retire_metrics(self.metrics_dir, pid)  # its counters join the retired totals
        for gen in self.old:
            gen.pids.pop(pid, None)
            if not gen.pids:
                gen.close_files()
        self.old = [g for g in self.old if g.pids]
        slot = self.current.pids.pop(pid, None)
        if slot is None or self.stopping:
            return
        _log.error("worker %d exited unexpectedly (status %d); restarting it", pid, status)
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < 10] + [now]
        if len(self.crashes) > 10:
            time.sleep(1.0)  # a worker that dies at once must not make the master spin
        self.respawn(slot)

    def respawn(self, slot: int) -> None:
        """Start the current generation's process for `slot` again. A fork that fails
        is logged and tried again on the master's next turn: the master must outlive
        a moment without memory or processes, or every worker would go with it."""
        try:
            self.spawn(self.current, slot)
        except OSError as exc:
            if slot not in self.unborn:  # said once, not on every retry
                _log.error("cannot start a process (%s); trying again", exc.strerror or exc)
                self.unborn.append(slot)
        else:
            if slot in self.unborn:
                self.unborn.remove(slot)
                _log.info("process for slot %d started again", slot)
        self.close_ready()

    def reload(self) -> None:
        if self.reload_fn is None:
            _log.warning("reload requested, but this configuration cannot be reloaded")
            return
        try:
            config = self.reload_fn()
            # Read once: the check and the new workers see the same users.
            users = read_user_files(config)
            check_config(config, users=users)
            gen = _Generation(
                config,
                resolve_peers(config),
                previous_zones=self.current.filters.zones,
                metrics_dir=self.metrics_dir,
                # Never reused, even after a rolled back reload (metrics tell the
                # newest generation's health by it).
                number=self.last_number + 1,
                previous=self.current,
                overrides=self.overrides,
                users=users,
            )
            for slot in range(config.workers):
                self.sockets_for(slot, config)
            self.admin_socket(config)
        except ConfigError as exc:
            _log.error("reload refused, keeping the running configuration: %s", exc)
            return
        old = self.current
        self.current = gen
        self.last_number = gen.number
        try:
            for slot in range(config.workers):
                self.spawn(gen, slot)
            if gen.needs_prober:
                self.spawn_prober(gen)
            self.spawn_admin(gen)
        except OSError as exc:
            self.close_ready()
            self.roll_back(old, gen, f"cannot start a new worker ({exc.strerror or exc})")
            return
        # No gap: the old workers stop accepting only once every new one accepts on the
        # same sockets (connections arriving meanwhile wait in the shared accept queue).
        late, failed = self.await_ready([p for p, s in gen.pids.items() if s >= 0], _READY_TIMEOUT)
        if failed:
            which = ", ".join(map(str, failed))
            self.roll_back(old, gen, f"new worker {which} exited before accepting")
            return
        if late:
            _log.error("new workers %s did not start accepting in time", late)
        for pid in old.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.old.append(old)
        self.unborn.clear()  # the old generation's: the new one started every slot
        self.close_unused_sockets(config)
        _log.info("reloaded configuration from %s", config.source)

    def roll_back(self, old: _Generation, new: _Generation, why: str) -> None:
        """A new worker could not be started, or exited before it accepted (it could
        not build what the master checked, e.g. a file that changed in between; its
        error is logged above): the running generation stays, and the new one's
        processes stop (those that accept drain their connections first, as any
        stopping worker does)."""
        _log.error("reload failed, keeping the running configuration: %s", why)
        self.current = old
        for pid in new.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if new.pids:
            self.old.append(new)
        else:
            new.close_files()
        self.close_unused_sockets(old.config)
        # The admin socket of the running configuration, should the new one have moved
        # it (its process still holds a copy, but a restarted one needs the master's).
        with contextlib.suppress(ConfigError):
            self.admin_socket(old.config)

    def close_unused_sockets(self, config: Config) -> None:
        """Sockets of worker slots or addresses the new configuration no longer has.
        The old workers still hold their copies until they stop accepting; connections
        still queued on such a socket when the last copy closes are reset by the kernel
        (SO_REUSEPORT gives each socket its own queue)."""
        listens = {li for s in config.servers for li in s.listen}
        keep = {(slot, li) for slot in range(config.workers) for li in listens}
        for key in [k for k in self.sockets if k not in keep]:
            self.sockets.pop(key).close()


def serve(
    config: Config,
    *,
    reload: Callable[[], Config] | None = None,
    use_uvloop: bool = True,
    mode: ProcessMode | None = None,
) -> int:
    """Run the master until it is told to stop. Raises ConfigError before forking if the
    configuration cannot run (a name does not resolve, a port cannot be bound).

    With `config.daemon`, the master detaches once its sockets listen and its pid file
    is written; the calling process then returns 0 (nginx's `daemon on`)."""
    mode = mode or ProcessMode()
    check_config(config)
    _configure_error_log(config, mode)
    master = _Master(config, reload, use_uvloop)
    master.mode = mode
    for slot in range(config.workers):
        master.sockets_for(slot, config)
    master.admin_socket(config)
    _log.info("ferryman: %d worker(s)", config.workers)
    for line in listening_lines(config):
        _log.info("ferryman: listening on %s", line)
    ready = -1
    if config.daemon:
        child, ready = _detach(config)
        if not child:
            return ready  # the parent: the master's status once it was ready (or not)
    # nginx writes its pid file once its sockets are bound, and removes it on exit.
    pid_file = config.pid_file
    try:
        if pid_file is not None:
            _write_pid_file(pid_file)
    finally:
        if ready >= 0:
            # Tell the waiting parent: "1" ready, nothing (EOF) failed.
            with contextlib.suppress(OSError):
                if pid_file is None or os.path.exists(pid_file):
                    os.write(ready, b"1")
            os.close(ready)
    try:
        return master.run()
    finally:
        if master.metrics_dir is not None:
            shutil.rmtree(master.metrics_dir, ignore_errors=True)
        if pid_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(pid_file)


def listening_lines(config: Config) -> list[str]:
    """One line per listening address: `http://127.0.0.1:8080 (example.com, _)`."""
    names: dict[ListenSpec, list[str]] = {}
    for server in config.servers:
        for listen in server.listen:
            found = names.setdefault(listen, [])
            found.extend(n for n in server.server_names or ("_",) if n not in found)
    lines = []
    for listen, found in names.items():
        scheme = "https" if listen.tls is not None else "http"
        extra = " (proxy_protocol)" if listen.proxy_protocol else ""
        lines.append(f"{scheme}://{listen.address}{extra} {', '.join(found)}")
    return lines


def _configure_error_log(config: Config, mode: ProcessMode) -> None:
    """nginx `error_log FILE LEVEL`: where and how much the error log says, in nginx's
    line format under `ferryman nginx` (observability/error_log.py)."""
    if config.error_log is None:
        return
    path, level = config.error_log
    try:
        install(path, level, mode.nginx_log_format)
    except OSError as exc:
        raise ConfigError(f"error_log {path}", f"cannot open: {exc.strerror}") from None


def _detach(config: Config) -> tuple[bool, int]:
    """nginx's ngx_daemon: fork, and the child leaves the terminal's session with its
    standard input and output on /dev/null (standard error too, unless the error log is
    standard error). Returns (True, fd to report readiness on) in the child, and
    (False, exit status) in the parent, which waits until the child reports."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            said = pipe.read(1)
        return False, 0 if said == b"1" else 1
    os.close(read_end)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    if config.error_log is not None and config.error_log[0] != "stderr":
        # nginx's ngx_log_redirect_stderr: what would reach standard error (a traceback)
        # lands in the error log file instead of a terminal that is gone.
        with contextlib.suppress(OSError):
            log_fd = os.open(config.error_log[0], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(log_fd, 2)
            os.close(log_fd)
    return True, write_end


def _write_pid_file(path: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise ConfigError(f"pid {path}", f"cannot write: {exc.strerror}") from None


# ---------------------------------------------------------------- worker side


def _die_with_parent() -> None:
    # Linux PR_SET_PDEATHSIG: a worker orphaned by a killed master must not linger.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop

            return uvloop.new_event_loop()  # type: ignore[no-any-return]
        except ImportError:
            pass
    return asyncio.new_event_loop()


def run_worker(
    config: Config,
    resolved: Resolved,
    sockets: dict[ListenSpec, socket.socket],
    use_uvloop: bool,
    slot: int = 0,
    shared: SharedHealth | None = None,
    cap: ConnectionCap | None = None,
    *,
    tls: dict[ListenSpec, ListenerTls] | None = None,
    filters: FilterState | None = None,
    ready_fd: int | None = None,
    metrics: tuple[str | None, int] | None = None,
    admin: AdminTables | None = None,
    access_fd: int | None = None,
) -> int:
    _die_with_parent()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    loop = _new_loop(use_uvloop)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(
            _worker_main(
                config,
                resolved,
                sockets,
                loop,
                slot,
                shared,
                cap,
                tls,
                filters,
                ready_fd=ready_fd,
                metrics=metrics,
                admin=admin,
                access_fd=access_fd,
            )
        )
    finally:
        loop.close()


async def _worker_main(
    config: Config,
    resolved: Resolved,
    sockets: dict[ListenSpec, socket.socket],
    loop: asyncio.AbstractEventLoop,
    slot: int,
    shared: SharedHealth | None = None,
    cap: ConnectionCap | None = None,
    tls: dict[ListenSpec, ListenerTls] | None = None,
    filters: FilterState | None = None,
    *,
    ready_fd: int | None = None,
    metrics: tuple[str | None, int] | None = None,
    admin: AdminTables | None = None,
    access_fd: int | None = None,
) -> int:
    runtime = build_worker(
        config,
        loop,
        resolved,
        slot=slot,
        shared=shared,
        conn_cap=cap,
        tls=tls,
        filter_state=filters,
        admin=admin,
        access_fd=access_fd,
    )
    ctx = runtime.context
    counters = _worker_metrics(runtime, metrics)
    servers = []
    for listen, lctx in runtime.listeners:
        servers.append(
            await loop.create_server(
                _factory(lctx, runtime.tls.get(listen)),  # type: ignore[arg-type]
                sock=sockets[listen],
                backlog=BACKLOG,
            )
        )
    _say_accepting(ready_fd)
    ctx.sweeper.start()
    resolving = loop.create_task(runtime.resolver.run()) if runtime.resolver.needed else None
    stop: asyncio.Future[bool] = loop.create_future()  # its value: a fast stop?
    for sig in (signal.SIGTERM, signal.SIGQUIT):
        loop.add_signal_handler(sig, _set_stop, stop, False)
    loop.add_signal_handler(_FAST_STOP, _set_stop, stop, True)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the master handles reloads
    loop.add_signal_handler(signal.SIGUSR1, _reopen_logs, ctx.access_log)
    fast = await stop
    # Drain: stop accepting, close idle keep-alive connections now, busy ones after
    # their current response (ClientConnection.exchange_done checks `draining`). A fast
    # stop (nginx's TERM) skips the wait: every connection is closed at once.
    ctx.draining = True
    if resolving is not None:
        resolving.cancel()
    for server in servers:
        server.close()
    # A connection accepted in the same loop turn as the stop signal still has its
    # connection_made queued: let it run, or the drain below may find no connection,
    # finish, and exit with that one unanswered (a reset for a client mid-reload).
    await asyncio.sleep(0)
    start = loop.time()
    deadline = start + (0.0 if fast else config.worker_shutdown_timeout)
    # Idle keep-alive connections get a moment to send their next request (answered
    # with Connection: close) before they are closed: closing one that looks idle races
    # with a request the client is sending on it, which the client sees as a reset.
    grace = start + min(_IDLE_GRACE, config.worker_shutdown_timeout / 2)
    while ctx.connections and loop.time() < deadline:
        if loop.time() >= grace:
            for conn in list(ctx.connections):
                conn.close_if_idle()
        await asyncio.sleep(0.05)
    for conn in list(ctx.connections):
        if conn.transport is not None:
            conn.transport.abort()
    for pool in runtime.pools:
        pool.close_all()
    if runtime.cluster is not None:
        await runtime.cluster.stop()  # cluster/: its Redis tasks and connections
    ctx.sweeper.stop()
    ctx.access_log.close()
    if counters is not None:
        counters.flush(force=True)  # the master folds this last snapshot in on exit
    await asyncio.sleep(0)
    return 0


def _worker_metrics(
    runtime: WorkerRuntime, metrics: tuple[str | None, int] | None
) -> WorkerMetrics | None:
    """This worker's Prometheus counters, published by the sweeper (metrics.py)."""
    if metrics is None or metrics[0] is None:
        return None
    ctx = runtime.context
    counters = WorkerMetrics(metrics[0], metrics[1])
    counters.connections = lambda: len(ctx.connections)
    counters.groups = dict(runtime.groups)
    counters.cluster = runtime.cluster  # Redis up/down and fallbacks (cluster/)
    ctx.metrics = counters
    ctx.sweeper.every_tick(counters.flush)
    counters.flush(force=True)
    return counters


def _say_accepting(fd: int | None) -> None:
    """Tell the master this worker accepts: a reload may now stop the old workers."""
    if fd is not None:
        with contextlib.suppress(OSError):  # the master stopped waiting: no one to tell
            os.write(fd, b"1")
        os.close(fd)


# ---------------------------------------------------------------- admin process


def _admin_tables(
    config: Config, shared: SharedHealth, overrides: SharedOverrides | None
) -> AdminTables | None:
    """The shared tables of a generation with an admin listener (made before fork)."""
    if config.admin is None or overrides is None:
        return None
    token = load_token(config.admin, f"{config.source}: admin")
    return make_tables(config, shared, overrides, token)


def _admin_extra_routes(gen: _Generation) -> Routes:
    """Routes other modules serve on the admin listener (metrics: GET /metrics).
    Runs in the admin process; see /work/notes/admin_api.md."""
    routes: Routes = {}
    if gen.metrics_dir is not None:
        key, handler = metrics_route(gen.metrics_dir)  # every worker's counters, summed
        routes[key] = handler
    return routes


def run_admin_process(gen: _Generation, sock: socket.socket, master: int, use_uvloop: bool) -> int:
    from ferryman.observability.admin import AdminApi, run_admin

    _die_with_parent()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    assert gen.admin is not None
    loop = _new_loop(use_uvloop)
    asyncio.set_event_loop(loop)
    try:
        api = AdminApi(gen.config, gen.admin, gen.admin.token, master)
        if gen.config.cluster is not None and gen.metrics_dir is not None:
            metrics_dir = gen.metrics_dir
            api.cluster = lambda: cluster_status(metrics_dir)  # as the workers see it
        return run_admin(api, sock, _admin_extra_routes(gen), loop)
    finally:
        loop.close()


def run_prober(config: Config, resolved: Resolved, shared: SharedHealth, use_uvloop: bool) -> int:
    _die_with_parent()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    loop = _new_loop(use_uvloop)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_prober_main(config, resolved, shared, loop))
    finally:
        loop.close()


async def _prober_main(
    config: Config, resolved: Resolved, shared: SharedHealth, loop: asyncio.AbstractEventLoop
) -> int:
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(sig, _set_once, stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    tasks = [
        loop.create_task(_watch(peer_slot, resolved.get(p.host, p.host), p.port, check, shared))
        for peer_slot, p, check in _checked_peers(config)
    ]
    await stop
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return 0


def _checked_peers(config: Config) -> list[tuple[int, PeerSpec, HealthCheckSpec]]:
    out = []
    slot = 0
    for up in config.upstreams:
        for p in up.servers:
            if up.health_check is not None:
                out.append((slot, p, up.health_check))
            slot += 1
    return out


async def _watch(
    slot: int, host: str, port: int, check: HealthCheckSpec, shared: SharedHealth
) -> None:
    # A reload carries the verdict of an unchanged peer over (SharedHealth.carry_over):
    # start from it, so that a peer still down is not announced again and one that
    # recovers is announced (a fresh, healthy state would never flip it back up).
    state = ProbeState(passes=check.passes, fails=check.fails, healthy=not shared.probe_down(slot))
    while True:
        ok, reason = await probe(host, port, check)
        if state.record(ok):
            shared.set_probe_down(slot, not state.healthy)
            if state.healthy:
                _log.warning("upstream %s:%d passes its health checks again", host, port)
            else:
                _log.error("upstream %s:%d fails its health checks: %s", host, port, reason)
        await asyncio.sleep(check.interval)


def _factory(
    lctx: ListenerContext, tls: ListenerTls | None = None
) -> Callable[[], ClientConnection | TlsServerProtocol]:
    if tls is None:
        return lambda: ClientConnection(lctx)
    # TLS listeners: our own TLS layer (tls/server.py) wraps each HTTP connection; the
    # handshake is bounded by the client header timeout, as in nginx.
    loop, timeout = lctx.worker.loop, lctx.worker.header_timeout
    h2 = None
    if tls.spec.http2:
        # Imported only for listeners that offer h2: the h2 library costs every worker
        # about 5 MiB.
        from ferryman.server.h2_connection import H2Connection

        h2 = lambda: H2Connection(lctx)  # noqa: E731
    return lambda: TlsServerProtocol(tls, lambda: ClientConnection(lctx), loop, timeout, h2)


def _set_stop(fut: asyncio.Future[bool], fast: bool) -> None:
    if not fut.done():
        fut.set_result(fast)


def _reopen_logs(access_log: Any) -> None:
    """USR1 from the master: this worker's error log and access log, opened anew."""
    _log.log(NOTICE, "reopening logs")
    reopen_all()
    access_log.reopen()


def _ignore_log_signals() -> None:
    # USR1's default action ends a process: a child ignores it until its loop handles it.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGWINCH, signal.SIG_IGN)


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
