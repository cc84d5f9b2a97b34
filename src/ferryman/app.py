"""Composition root: Config -> the runtime objects of one worker.

Everything long-lived is built here and passed in; no module keeps state of its own.
`resolve_peers` runs once in the master (name lookups are blocking and must not happen
per request), `build_worker` once per worker process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from ferryman.balancing.base import Outcome
from ferryman.balancing.registry import create_balancer
from ferryman.config.schema import Config, ListenSpec
from ferryman.errors import ConfigError
from ferryman.observability.access_log import AccessLog
from ferryman.proxy.route import Route
from ferryman.routing.table import RouteTable, VirtualServer
from ferryman.server.context import ListenerContext, WorkerContext
from ferryman.server.sweeper import Sweeper
from ferryman.upstream.group import UpstreamGroup
from ferryman.upstream.peer import PeerState
from ferryman.upstream.pool import ConnectFn, ConnectionPool, tcp_connect

__all__ = ["Resolved", "WorkerRuntime", "build_worker", "check_config", "resolve_peers"]

Resolved = dict[str, str]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve_peers(config: Config) -> Resolved:
    """Name -> address for every upstream host, `hosts` overrides first (like Docker's
    --add-host), then the system resolver. nginx resolves upstream names at load too and
    refuses to start on "host not found in upstream"; so do we."""
    overrides = dict(config.hosts)
    out: Resolved = {}
    for up in config.upstreams:
        for i, peer in enumerate(up.servers):
            host = peer.host
            if host in out:
                continue
            if host in overrides:
                out[host] = overrides[host]
            elif _is_ip(host):
                out[host] = host
            else:
                try:
                    infos = socket.getaddrinfo(host, peer.port, type=socket.SOCK_STREAM)
                except socket.gaierror as exc:
                    raise ConfigError(
                        f"{config.source}: upstreams.{up.name}.servers[{i}]",
                        f"host not found in upstream {peer.address!r}: {exc.strerror}",
                    ) from None
                out[host] = str(infos[0][4][0])
    return out


@dataclass(slots=True)
class WorkerRuntime:
    context: WorkerContext
    listeners: list[tuple[ListenSpec, ListenerContext]]
    pools: list[ConnectionPool]
    groups: dict[str, UpstreamGroup]


def build_worker(
    config: Config,
    loop: asyncio.AbstractEventLoop,
    resolved: Resolved,
    connect: ConnectFn | None = None,
    slot: int = 0,
) -> WorkerRuntime:
    sweeper = Sweeper(loop, _tick(config))
    access = AccessLog(config.access_log.path, config.access_log.format)
    worker = WorkerContext(loop, sweeper, access, config.client_timeouts, config.worker_connections)
    sweeper.every_tick(access.flush)
    connect_fn = connect or tcp_connect(loop)
    groups: dict[str, UpstreamGroup] = {}
    pools: dict[str, ConnectionPool] = {}
    for up in config.upstreams:
        peers = [PeerState(spec, i, resolved.get(spec.host)) for i, spec in enumerate(up.servers)]
        group = UpstreamGroup(up, peers, create_balancer(up.balance, up))
        _stagger(group, slot)
        groups[up.name] = group
        pools[up.name] = ConnectionPool(up, len(peers), sweeper, connect_fn)
    by_listen: dict[ListenSpec, list[VirtualServer[Route]]] = {}
    for si, server in enumerate(config.servers):
        routes = []
        for ri, rs in enumerate(server.routes):
            where = f"{config.source}: servers[{si}].routes[{ri}]"
            assert rs.upstream is not None  # routes without an upstream: next step
            routes.append((rs.path, Route(rs, groups[rs.upstream], pools[rs.upstream], where)))
        vs = VirtualServer(server.server_names, routes)
        for listen in server.listen:
            by_listen.setdefault(listen, []).append(vs)
    listeners = []
    for listen, servers in by_listen.items():
        name = servers[0].names[0] if servers[0].names else listen.host
        listeners.append((listen, ListenerContext(worker, RouteTable(servers), listen.port, name)))
    return WorkerRuntime(worker, listeners, list(pools.values()), groups)


def _stagger(group: UpstreamGroup, slot: int) -> None:
    """Each worker keeps its own balancer state; without this, every worker would send
    its first request to the first peer. Advancing worker k's rotation by k picks
    spreads the workers' starting points like a shared rotation would."""
    for _ in range(slot % max(1, len(group.peers))):
        peer = group.select(0.0, 0)
        if peer is None:
            return
        group.release(peer, Outcome.NEUTRAL, 0.0)


def check_config(config: Config, resolve: bool = True) -> None:
    """Everything `run` would refuse, without binding a socket (`nginx -t`)."""
    resolved = resolve_peers(config) if resolve else {}
    loop = asyncio.new_event_loop()
    try:
        build_worker(config, loop, resolved)
    finally:
        loop.close()


def _tick(config: Config) -> float:
    # A tenth of the shortest timeout, within [50 ms, 1 s]: timeouts fire at most 10% late.
    shortest = min(
        [
            config.client_timeouts.header,
            config.client_timeouts.body,
            config.client_timeouts.send,
            *(r.read_timeout for s in config.servers for r in s.routes),
            *(r.send_timeout for s in config.servers for r in s.routes),
        ]
    )
    return max(0.05, min(1.0, shortest / 10))
