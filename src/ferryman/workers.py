"""Master and worker processes.

The master binds every listening socket once per worker slot with SO_REUSEPORT (the
kernel spreads connections across slots), forks one worker per slot, restarts a worker
that dies, and turns signals into actions: TERM/INT/QUIT drain and exit, HUP reloads.
It never runs an event loop, so forking is safe.

A reload validates the new configuration first; an invalid one is logged and the old
workers keep serving. New workers take over the same listening sockets (the master
holds them), so no connection waiting in an accept queue is lost, and old workers
finish what they have in flight before they exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ferryman.app import Resolved, build_tls, build_worker, check_config, resolve_peers
from ferryman.config.schema import Config, HealthCheckSpec, ListenSpec, PeerSpec
from ferryman.errors import ConfigError
from ferryman.filters.registry import FilterState
from ferryman.filters.zone import open_zones
from ferryman.health.probe import probe
from ferryman.health.shared import SharedHealth
from ferryman.health.thresholds import ProbeState
from ferryman.server.conn_cap import ConnectionCap, SharedConnectionCount
from ferryman.server.connection import ClientConnection
from ferryman.server.context import ListenerContext
from ferryman.server.h2_connection import H2Connection
from ferryman.tls.contexts import ListenerTls
from ferryman.tls.server import TlsServerProtocol

__all__ = ["DRAIN_TIMEOUT", "bind_listener", "serve"]

_log = logging.getLogger(__name__)

# How long a worker may spend finishing in-flight requests on shutdown or reload
# (nginx: worker_shutdown_timeout, unlimited by default; a bound keeps a stuck
# long-poll from holding a reload forever).
DRAIN_TIMEOUT = 10.0
BACKLOG = 4096
# The slot number of a generation's health-check prober process.
PROBER = -1
_MASTER_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP}


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

    def __post_init__(self) -> None:
        self.shared = SharedHealth(sum(len(u.servers) for u in self.config.upstreams))
        self.filters = FilterState(
            open_zones(self.config.limit_zones, self.config.source, self.previous_zones)
        )
        self.previous_zones = None
        self.tls = build_tls(self.config)

    @property
    def needs_prober(self) -> bool:
        return any(u.health_check is not None for u in self.config.upstreams)


class _Master:
    def __init__(
        self, config: Config, reload: Callable[[], Config] | None, use_uvloop: bool
    ) -> None:
        self.reload_fn = reload
        self.use_uvloop = use_uvloop
        self.sockets: dict[tuple[int, ListenSpec], socket.socket] = {}
        self.current = _Generation(config, resolve_peers(config))
        self.old: list[_Generation] = []
        self.stopping = False
        self.stop_deadline = 0.0
        self.crashes: list[float] = []
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
        socks = self.sockets_for(slot, gen.config)
        count_slot = self.conn_count.claim()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
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
                )
            except BaseException:
                _log.exception("worker crashed")
            finally:
                os._exit(code)
        gen.pids[pid] = slot
        if count_slot is not None:
            self.conn_slots[pid] = count_slot

    def spawn_prober(self, gen: _Generation) -> None:
        """The process that runs this generation's active health checks."""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_SIGNALS)
                for sock in self.sockets.values():
                    sock.close()
                code = run_prober(gen.config, gen.resolved, gen.shared, self.use_uvloop)
            except BaseException:
                _log.exception("health prober crashed")
            finally:
                os._exit(code)
        gen.pids[pid] = PROBER

    def start(self) -> None:
        for slot in range(self.current.config.workers):
            self.spawn(self.current, slot)
        if self.current.needs_prober:
            self.spawn_prober(self.current)

    # ---- signals ----

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _MASTER_SIGNALS)
        self.start()
        while True:
            info = signal.sigtimedwait(_MASTER_SIGNALS, 0.5)
            if info is not None:
                self.on_signal(info.si_signo)
            self.reap()
            if self.stopping:
                if not self.current.pids and not any(g.pids for g in self.old):
                    return 0
                if time.monotonic() > self.stop_deadline:
                    self.kill_all(signal.SIGKILL)

    def on_signal(self, signo: int) -> None:
        if signo in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) and not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + DRAIN_TIMEOUT + 2
            self.kill_all(signal.SIGTERM)
        elif signo == signal.SIGHUP and not self.stopping:
            self.reload()

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
        for gen in self.old:
            gen.pids.pop(pid, None)
        self.old = [g for g in self.old if g.pids]
        slot = self.current.pids.pop(pid, None)
        if slot is None or self.stopping:
            return
        _log.error("worker %d exited unexpectedly (status %d); restarting it", pid, status)
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < 10] + [now]
        if len(self.crashes) > 10:
            time.sleep(1.0)  # a worker that dies at once must not make the master spin
        self.spawn(self.current, slot)

    def reload(self) -> None:
        if self.reload_fn is None:
            _log.warning("reload requested, but this configuration cannot be reloaded")
            return
        try:
            config = self.reload_fn()
            check_config(config)
            gen = _Generation(
                config, resolve_peers(config), previous_zones=self.current.filters.zones
            )
            for slot in range(config.workers):
                self.sockets_for(slot, config)
        except ConfigError as exc:
            _log.error("reload refused, keeping the running configuration: %s", exc)
            return
        old = self.current
        self.current = gen
        for slot in range(config.workers):
            self.spawn(gen, slot)
        if gen.needs_prober:
            self.spawn_prober(gen)
        for pid in old.pids:
            os.kill(pid, signal.SIGTERM)
        self.old.append(old)
        _log.info("reloaded configuration from %s", config.source)


def serve(
    config: Config, *, reload: Callable[[], Config] | None = None, use_uvloop: bool = True
) -> int:
    """Run the master until it is told to stop. Raises ConfigError before forking if the
    configuration cannot run (a name does not resolve, a port cannot be bound)."""
    check_config(config)
    _configure_error_log(config)
    master = _Master(config, reload, use_uvloop)
    for slot in range(config.workers):
        master.sockets_for(slot, config)
    _log.info(
        "ferryman: %d worker(s) on %s",
        config.workers,
        ", ".join(sorted({listen.address for s in config.servers for listen in s.listen})),
    )
    # nginx writes its pid file once its sockets are bound, and removes it on exit.
    pid_file = config.pid_file
    if pid_file is not None:
        _write_pid_file(pid_file)
    try:
        return master.run()
    finally:
        if pid_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(pid_file)


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "crit": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emerg": logging.CRITICAL,
}


def _configure_error_log(config: Config) -> None:
    """nginx `error_log FILE LEVEL`: where and how much the error log says."""
    if config.error_log is None:
        return
    path, level = config.error_log
    root = logging.getLogger()
    handler: logging.Handler
    if path == "stderr":
        handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = logging.FileHandler(path)
        except OSError as exc:
            raise ConfigError(f"error_log {path}", f"cannot open: {exc.strerror}") from None
    handler.setFormatter(
        logging.Formatter("%(asctime)s [%(levelname)s] %(process)d: %(name)s: %(message)s")
    )
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.ERROR))


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
) -> int:
    _die_with_parent()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    loop = _new_loop(use_uvloop)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(
            _worker_main(config, resolved, sockets, loop, slot, shared, cap, tls, filters)
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
    )
    ctx = runtime.context
    servers = []
    for listen, lctx in runtime.listeners:
        servers.append(
            await loop.create_server(
                _factory(lctx, runtime.tls.get(listen)),  # type: ignore[arg-type]
                sock=sockets[listen],
                backlog=BACKLOG,
            )
        )
    ctx.sweeper.start()
    resolving = loop.create_task(runtime.resolver.run()) if runtime.resolver.needed else None
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(sig, _set_once, stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the master handles reloads
    await stop
    # Drain: stop accepting, close idle keep-alive connections now, busy ones after
    # their current response (ClientConnection.exchange_done checks `draining`).
    ctx.draining = True
    if resolving is not None:
        resolving.cancel()
    for server in servers:
        server.close()
    deadline = loop.time() + DRAIN_TIMEOUT
    while ctx.connections and loop.time() < deadline:
        for conn in list(ctx.connections):
            conn.close_if_idle()
        await asyncio.sleep(0.05)
    for conn in list(ctx.connections):
        if conn.transport is not None:
            conn.transport.abort()
    for pool in runtime.pools:
        pool.close_all()
    ctx.sweeper.stop()
    ctx.access_log.close()
    await asyncio.sleep(0)
    return 0


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
    state = ProbeState(passes=check.passes, fails=check.fails)
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
    loop, timeout = lctx.worker.loop, lctx.worker.timeouts.header
    h2 = (lambda: H2Connection(lctx)) if tls.spec.http2 else None
    return lambda: TlsServerProtocol(tls, lambda: ClientConnection(lctx), loop, timeout, h2)


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
