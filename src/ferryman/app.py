"""Composition root: Config -> the runtime objects of one worker.

Everything long-lived is built here and passed in; no module keeps state of its own.
`resolve_peers` runs once in the master (name lookups are blocking and must not happen
per request), `build_worker` once per worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ferryman.balancing.base import Outcome
from ferryman.balancing.registry import create_balancer
from ferryman.cache.handler import CacheZone
from ferryman.cache.zones import open_cache_zones, route_cache
from ferryman.config.schema import (
    Config,
    HeaderAdd,
    IfSpec,
    ListenSpec,
    MapSpec,
    PeerSpec,
    RealIpSpec,
    RewriteSpec,
    RouteSpec,
    ScriptStep,
    ServerSpec,
    SetSpec,
    UpstreamSpec,
    UpstreamTlsSpec,
)
from ferryman.errors import ConfigError
from ferryman.filters.real_ip import RealIp
from ferryman.filters.registry import FilterState, build_filters
from ferryman.health.shared import SharedHealth
from ferryman.observability.access_log import AccessLog, open_access_log
from ferryman.observability.admin import AdminTables
from ferryman.observability.recent import RecentLog
from ferryman.observability.trace import Tracer
from ferryman.proxy.forward import ForwardProxy, build_proxy_auth, forward_route
from ferryman.proxy.maps import CompiledMap
from ferryman.proxy.route import Route, script_templates
from ferryman.proxy.script import CompiledScript, compile_script
from ferryman.proxy.variables import compile_log_format, compile_template
from ferryman.routing.locations import LocationEntry, LocationTree, compile_regex
from ferryman.routing.table import RouteTable, VirtualServer
from ferryman.server.conn_cap import ConnectionCap
from ferryman.server.context import ListenerContext, WorkerContext
from ferryman.server.sweeper import Sweeper
from ferryman.tls.client import tls_connect
from ferryman.tls.contexts import ListenerTls, listener_tls, upstream_context
from ferryman.upstream.group import UpstreamGroup
from ferryman.upstream.peer import PeerState
from ferryman.upstream.pool import ConnectFn, ConnectionPool, tcp_connect
from ferryman.upstream.resolver import PeerResolver, read_hosts_file, system_lookup

if TYPE_CHECKING:
    from ferryman.cluster.agent import ClusterAgent

__all__ = [
    "Resolved",
    "WorkerRuntime",
    "build_tls",
    "build_worker",
    "check_config",
    "resolve_peers",
]

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
    if config.hosts_file is not None:
        for name, addresses in read_hosts_file(config.hosts_file).items():
            overrides.setdefault(name, addresses[0])
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
    # Re-resolves `resolve` servers (run by the worker when `resolver.needed`).
    resolver: PeerResolver
    # TLS (tls/): the TLS layer of each TLS listening address.
    tls: dict[ListenSpec, ListenerTls] = dataclasses.field(default_factory=dict)
    # Cluster (cluster/): this worker's link to the other instances; None: alone.
    cluster: ClusterAgent | None = None


def build_worker(
    config: Config,
    loop: asyncio.AbstractEventLoop,
    resolved: Resolved,
    connect: ConnectFn | None = None,
    slot: int = 0,
    shared: SharedHealth | None = None,
    filter_state: FilterState | None = None,
    conn_cap: ConnectionCap | None = None,
    tls: dict[ListenSpec, ListenerTls] | None = None,
    admin: AdminTables | None = None,
    access_fd: int | None = None,
) -> WorkerRuntime:
    # TLS contexts come from the master (shared session-ticket keys, see tls/contexts.py).
    tls = build_tls(config) if tls is None else tls
    _check_listen_options(config)
    sweeper = Sweeper(loop, _tick(config))
    user_vars = _user_variables(config)
    # The access log's file: the master's (workers.py), else opened here; an open that
    # fails is a ConfigError (a reload refuses it, where an OSError would end the master).
    if access_fd is None:
        access_fd = open_access_log(config.access_log.path, config.source)
    access = AccessLog(
        config.access_log.path,
        config.access_log.format,
        _log_format(config, user_vars),
        access_fd,
    )
    worker = WorkerContext(loop, sweeper, access, config.client_timeouts, config.worker_connections)
    worker.maps = _bind_maps(config, user_vars)
    worker.conn_cap = conn_cap  # Config.max_connections, counted across workers
    worker.client_limits = config.client_limits
    worker.keepalive_requests = config.keepalive_requests
    if config.keepalive_header:
        worker.keepalive_line = b"Keep-Alive: timeout=%d\r\n" % config.keepalive_header
    sweeper.every_tick(access.flush)
    sweeper.every_tick(worker.refresh_date)
    sweeper.every_tick(worker.expire_mappings)
    connect_fn = connect or tcp_connect(loop)
    groups: dict[str, UpstreamGroup] = {}
    pools: dict[str, ConnectionPool] = {}
    next_slot = 0
    for up in config.upstreams:
        peers = [PeerState(spec, i, resolved.get(spec.host)) for i, spec in enumerate(up.servers)]
        for p in peers:
            p.slot = next_slot  # the peer's place in the shared health table
            next_slot += 1
        group = UpstreamGroup(up, peers, create_balancer(up.balance, up, peers))
        group.key_fn = _key_function(up, user_vars, config.source)
        _stagger(group, slot, config.workers)
        groups[up.name] = group
        pools[up.name] = ConnectionPool(up, len(peers), sweeper, connect_fn, peers)
    worker.upstreams = {name: (groups[name], pools[name]) for name in groups}
    if shared is not None:
        _share_health(shared, list(groups.values()), sweeper)
    # Cluster (cluster/agent.py): limits, cache and health shared through Redis.
    cluster = None
    if config.cluster is not None:
        # Imported only when used: the redis client is the largest import of all (about
        # 20 MiB of every worker's memory), and most configurations have no cluster.
        from ferryman.cluster.agent import ClusterAgent

        cluster = ClusterAgent.join(config, slot)
    if cluster is not None and cluster.spec.health:
        if shared is None:  # a process alone: a health table of its own to write into
            shared = SharedHealth(next_slot)
            _share_health(shared, list(groups.values()), sweeper)
        cluster.share_health(config, shared, list(groups.values()))
    worker.make_upstream = _upstream_maker(sweeper, connect_fn)
    # Routes with no proxy_pass share one empty group and pool, never dispatched to.
    none = UpstreamSpec(name="", servers=())
    groups[""] = UpstreamGroup(none, [], create_balancer("round_robin", none))
    pools[""] = ConnectionPool(none, 0, sweeper, connect_fn)
    if filter_state is None:
        filter_state = FilterState.alone(config)
    if cluster is not None:
        filter_state.shared = cluster.limiter  # zones marked `shared`
    build = _RouteBuilder(config, groups, pools, user_vars, filter_state)
    # Cache zones: a memory tier per worker, a disk tier shared by all (cache/zones.py).
    build.caches = open_cache_zones(config.cache_zones, sweeper, config.source)
    if cluster is not None:
        cluster.share_caches(config, build.caches)
    build.tls_connect = lambda spec, name: tls_connect(loop, *_upstream_tls(spec, name, config))
    by_listen: dict[ListenSpec, list[VirtualServer[Route]]] = {}
    defaults: dict[ListenSpec, int] = {}
    real_ips: dict[VirtualServer[Route], RealIp] = {}
    traced: dict[Any, bytes] = {}  # observability/trace.py: server -> trace header
    forwards: dict[ListenSpec, ForwardProxy] = {}
    for si, server in enumerate(config.servers):
        if server.forward is not None:
            # Forward-proxy mode (proxy/forward.py): one synthesized route at "/".
            server = dataclasses.replace(server, routes=(forward_route(server.forward),))
        vs = build.server(server, f"{config.source}: servers[{si}]")
        trace = server.trace or config.trace
        if trace is not None:
            traced[vs] = trace.header.lower().encode()
        if server.forward is not None:
            engine = ForwardContext(loop, sweeper, connect_fn)
            _add_forward(config, si, server, vs, engine, forwards, filter_state)
        if server.real_ip is not None:
            real_ips[vs] = _real_ip(server.real_ip, f"{config.source}: servers[{si}].real_ip")
        for listen in server.listen:
            servers = by_listen.setdefault(listen, [])
            if listen.default_server:
                defaults[listen] = len(servers)
            servers.append(vs)
    listeners = []
    for listen, servers in by_listen.items():
        name = servers[0].names[0] if servers[0].names else listen.host
        table = RouteTable(servers, defaults.get(listen, 0))
        policies = {vs: real_ips[vs] for vs in servers if vs in real_ips}
        lctx = ListenerContext(
            worker,
            table,
            listen.port,
            name,
            scheme="https" if listen.tls is not None else "http",
            proxy_protocol=listen.proxy_protocol,
            real_ip=policies,
        )
        lctx.forward = forwards.get(listen)
        listeners.append((listen, lctx))
    del pools[""]
    del groups[""]
    if traced:
        token = admin.token if admin is not None else _inline_token(config)
        ring = admin.traces if admin is not None else None
        worker.trace = Tracer(traced, None, token, ring, slot)
    if admin is not None:
        _share_admin(admin, config, worker, groups, build.caches, slot)
        if cluster is not None:
            cluster.share_overrides(config, admin.overrides)  # drain / weight everywhere
    resolver = PeerResolver(config, groups, pools, system_lookup(loop, config.hosts_file))
    all_pools = [*pools.values(), *build.tls_pools.values()]
    if cluster is not None:
        loop.call_soon(cluster.start)  # its tasks run once the worker's loop does
    return WorkerRuntime(worker, listeners, all_pools, groups, resolver, tls, cluster)


@dataclass(slots=True)
class ForwardContext:
    """What a forward-proxy engine needs from the worker (proxy/forward.py)."""

    loop: asyncio.AbstractEventLoop
    sweeper: Sweeper
    connect: ConnectFn


def _add_forward(
    config: Config,
    si: int,
    server: ServerSpec,
    vs: VirtualServer[Route],
    ctx: ForwardContext,
    forwards: dict[ListenSpec, ForwardProxy],
    filter_state: FilterState,
) -> None:
    """A forward server's engine on each of its addresses, which it must have to itself;
    proxy authentication joins its route's filters, after the access rules."""
    spec = server.forward
    assert spec is not None and vs.single is not None
    where = f"{config.source}: servers[{si}].forward"
    for listen in server.listen:
        shared = [
            i
            for i, other in enumerate(config.servers)
            if i != si and any(li == listen for li in other.listen)
        ]
        if shared:
            raise ConfigError(
                where, f"{listen.address} is a forward proxy's and servers[{shared[0]}]'s too"
            )
        if listen.tls is not None:
            raise ConfigError(where, f"{listen.address}: a forward proxy listens without tls")
    try:
        hosts = dict(config.hosts)
        if config.hosts_file is not None:
            for name, addresses in read_hosts_file(config.hosts_file).items():
                hosts.setdefault(name, addresses[0])
        engine = ForwardProxy(spec, ctx.loop, ctx.sweeper, ctx.connect, hosts)
    except ValueError as exc:
        raise ConfigError(f"{where}.destinations", str(exc)) from None
    auth = build_proxy_auth(spec, where, filter_state.users_in)
    if auth is not None:
        vs.single.filters = (*vs.single.filters, auth)
    for listen in server.listen:
        forwards[listen] = engine


def build_tls(config: Config) -> dict[ListenSpec, ListenerTls]:
    """The TLS layer of every TLS listening address; ConfigError for unreadable or
    mismatched certificate files. Run in the master once per configuration generation."""
    out: dict[ListenSpec, ListenerTls] = {}
    for si, server in enumerate(config.servers):
        for li, listen in enumerate(server.listen):
            if listen.tls is not None and listen not in out:
                where = f"{config.source}: servers[{si}].listen[{li}].tls"
                if listen.proxy_protocol:
                    raise ConfigError(where, "proxy_protocol with tls is not supported yet")
                out[listen] = listener_tls(listen.tls, where)
    return out


def _upstream_tls(
    spec: UpstreamTlsSpec, upstream: str, config: Config
) -> tuple[ssl.SSLContext, str | None]:
    """The context and SNI name for a route's `upstream_tls` (nginx proxy_ssl_name
    defaults to the proxy_pass host: here the upstream's name)."""
    where = f"{config.source}: upstreams.{upstream} (upstream_tls)"
    name = spec.name or upstream.rpartition(":")[0] or upstream
    if upstream.startswith("[") and not spec.name:
        name = upstream[1 : upstream.find("]")]
    return upstream_context(spec, where), name if spec.server_name else None


def _check_listen_options(config: Config) -> None:
    """One address is one socket: servers sharing it must agree on proxy_protocol
    (nginx: "duplicate listen options")."""
    seen: dict[str, bool] = {}
    for si, server in enumerate(config.servers):
        for listen in server.listen:
            if seen.setdefault(listen.address, listen.proxy_protocol) != listen.proxy_protocol:
                raise ConfigError(
                    f"{config.source}: servers[{si}].listen",
                    f"{listen.address} is listed with and without proxy_protocol; every"
                    " server on one address must say the same",
                )


def _real_ip(spec: RealIpSpec, where: str) -> RealIp:
    try:
        return RealIp(spec)
    except ValueError as exc:
        raise ConfigError(where, str(exc)) from None


def _share_health(shared: SharedHealth, groups: list[UpstreamGroup], sweeper: Sweeper) -> None:
    """Workers tell each other of peers they saw fail, and read the prober's verdicts,
    through the shared table: published at once, taken in every tick."""

    def publish(peer: PeerState) -> None:
        shared.publish_down_until(peer.slot, peer.health.unavailable_until)

    def sync() -> None:
        for group in groups:
            group.sync_health(shared.down_until, shared.probe_down, sweeper.now)

    for group in groups:
        group.on_failure = publish
    sweeper.every_tick(sync)
    # Before the first request: after a reload the table holds what the previous
    # generation learned of unchanged peers (workers.py carries it over).
    sync()


def _inline_token(config: Config) -> str | None:
    return config.admin.token if config.admin is not None else None


def _share_admin(
    tables: AdminTables,
    config: Config,
    worker: WorkerContext,
    groups: dict[str, UpstreamGroup],
    caches: dict[str, CacheZone],
    slot: int,
) -> None:
    """The admin API's view of this worker (observability/admin.py): finished requests
    go to this worker's ring; each tick, the peer counters are published, the drain /
    weight overrides applied (only when the table changed) and cache purges carried out."""
    worker.recent = recent = RecentLog(tables.recent, slot)
    worker.sweeper.every_tick(recent.flush)
    peers: list[_AdminPeer] = []
    for up in config.upstreams:
        group = groups[up.name]
        for peer, spec in zip(group.peers, up.servers, strict=True):
            oslot = tables.overrides.slot(up.name, spec.address)
            peers.append((group, up, peer, spec.weight, oslot))
    seen = {"version": -1, "purges": tables.purges.count(0)}

    def tick() -> None:
        stats = tables.stats
        for _group, _up, p, _w, _o in peers:
            stats.publish(slot, p.slot, p.active, p.health.fails, p.requests, p.latency)
        version = tables.overrides.version
        if version != seen["version"]:
            seen["version"] = version
            _apply_overrides(tables, peers)
        if tables.purges.count(0) != seen["purges"]:
            for count, order in tables.purges.read(0, after=seen["purges"]):
                seen["purges"] = count
                _purge(caches, order)

    worker.sweeper.every_tick(tick)


# (group, its spec, peer, configured weight, override slot)
_AdminPeer = tuple[UpstreamGroup, UpstreamSpec, PeerState, int, int]


def _apply_overrides(tables: AdminTables, peers: list[_AdminPeer]) -> None:
    for group, up, peer, configured, oslot in peers:
        if oslot < 0:
            continue
        o = tables.overrides.get(oslot)
        if peer.drained != o.drained:
            group.set_drained(peer, o.drained)
        weight = o.weight or configured
        if peer.spec.weight != weight:
            group.set_weight(peer, weight, _balancer_for(group, up))


def _balancer_for(group: UpstreamGroup, up: UpstreamSpec) -> Callable[[], Any]:
    return lambda: create_balancer(up.balance, up, group.peers)


def _purge(caches: dict[str, CacheZone], order: bytes) -> None:
    """A purge order from the admin process: drop the entries from this worker's store
    (its memory tier; the shared disk tier was purged by the admin already)."""
    try:
        data = json.loads(order)
    except ValueError:
        return
    zone = caches.get(data.get("zone"))
    if zone is None:
        return
    if "key" in data:
        zone.store.remove(data["key"])
    elif "prefix" in data:
        zone.store.remove_prefix(data["prefix"])


def _key_function(up: UpstreamSpec, user_vars: frozenset[str], source: str) -> Any:
    """What a keyed strategy hashes: the `hash` key template, or the client address."""
    if up.balance == "ip_hash":
        return _client_address
    if up.balance == "hash":
        tpl = compile_template(up.hash_key, f"{source}: upstreams.{up.name}.hash_key", user_vars)
        return (lambda ctx: tpl) if isinstance(tpl, bytes) else tpl
    return None


def _client_address(ctx: Any) -> bytes:
    return ctx.remote_addr  # type: ignore[no-any-return]


def _upstream_maker(
    sweeper: Sweeper, connect: ConnectFn
) -> Callable[[str, int], tuple[UpstreamGroup, ConnectionPool]]:
    """For proxy_pass URLs with variables that name an address: a one-peer upstream
    with nginx's implicit defaults (max_fails=1, fail_timeout=10s, no idle keep-alive)."""

    def make(host: str, port: int) -> tuple[UpstreamGroup, ConnectionPool]:
        spec = UpstreamSpec(
            name=f"{host}:{port}", servers=(PeerSpec(host=host, port=port),), keepalive=0
        )
        group = UpstreamGroup(
            spec, [PeerState(spec.servers[0], 0)], create_balancer("round_robin", spec)
        )
        return group, ConnectionPool(spec, 1, sweeper, connect)

    return make


class _RouteBuilder:
    """RouteSpecs (nested, with scripts) -> Route objects in a LocationTree."""

    def __init__(
        self,
        config: Config,
        groups: dict[str, UpstreamGroup],
        pools: dict[str, ConnectionPool],
        user_vars: frozenset[str],
        filter_state: FilterState,
    ) -> None:
        self.config = config
        self.groups = groups
        self.pools = pools
        self.user_vars = user_vars
        self.filter_state = filter_state
        # TLS (tls/): pools of upstreams reached over TLS, one per (upstream, settings).
        self.tls_pools: dict[tuple[str, UpstreamTlsSpec], ConnectionPool] = {}
        self.tls_connect: Callable[[UpstreamTlsSpec, str], ConnectFn] | None = None
        self.caches: dict[str, CacheZone] = {}

    def pool_for(self, key: str, tls: UpstreamTlsSpec | None) -> ConnectionPool:
        if tls is None or not key or self.tls_connect is None:
            return self.pools[key]
        pool = self.tls_pools.get((key, tls))
        if pool is None:
            pool = self.tls_pools[(key, tls)] = self.pools[key].variant(self.tls_connect(tls, key))
        return pool

    def server(self, server: ServerSpec, where: str) -> VirtualServer[Route]:
        entries = [
            self.entry(rs, f"{where}.routes[{ri}]", server) for ri, rs in enumerate(server.routes)
        ]
        try:
            tree = LocationTree(entries)
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from None
        script = _compile_script(server.script, where) if server.script else None
        templates = script_templates(server.script, f"{where}.script", self.user_vars)
        only = server.routes[0] if len(server.routes) == 1 else None
        single = None
        if (
            script is None
            and only is not None
            and only.match == "prefix"
            and only.path == "/"
            and not only.routes
            and not only.script
            # Static files and error pages need the normalised $uri and the search.
            and only.static is None
            and not only.error_pages
        ):
            # Every request takes this route, so no path normalisation or search.
            single = entries[0].value
        return VirtualServer(
            server.server_names,
            [(e.path, e.value) for e in entries if e.kind == "prefix"],
            locations=tree,
            script=script,
            extra=templates,
            single=single,
        )

    def entry(self, rs: RouteSpec, where: str, server: ServerSpec) -> LocationEntry[Route]:
        if not rs.add_headers and server.add_headers:
            # nginx: add_header at the server level applies where a location has none.
            rs = dataclasses.replace(rs, add_headers=server.add_headers)
        rs = _with_hsts(rs, server)
        key = rs.upstream if rs.upstream is not None else ""
        route = Route(
            rs,
            self.groups[key],
            self.pool_for(key, rs.upstream_tls),
            where,
            self.user_vars,
            _compile_script(rs.script, where) if rs.script else None,
        )
        route.filters = build_filters(rs, self.filter_state, where, self.user_vars)
        if rs.cache is not None:
            route.cache = route_cache(rs.cache, self.caches, where, self.user_vars)
        children = [
            self.entry(child, f"{where}.routes[{ci}]", server) for ci, child in enumerate(rs.routes)
        ]
        # nginx: a proxying location ending in "/" answers its path without the slash
        # with a 301 to the path with it.
        return LocationEntry(
            rs.match, rs.path, route, children, auto_redirect=rs.upstream is not None
        )


def _with_hsts(rs: RouteSpec, server: ServerSpec) -> RouteSpec:
    """TlsSpec.hsts: Strict-Transport-Security on every response (`always`, as the
    usual nginx recipe) of a server with a TLS address, unless the route sets its own.
    Browsers ignore it on plain http (RFC 6797 8.1), so a server on both is fine."""
    hsts = next((li.tls.hsts for li in server.listen if li.tls is not None and li.tls.hsts), "")
    if not hsts or any(h.name.lower() == "strict-transport-security" for h in rs.add_headers):
        return rs
    header = HeaderAdd("Strict-Transport-Security", hsts, always=True)
    return dataclasses.replace(rs, add_headers=(*rs.add_headers, header))


def _compile_script(steps: tuple[ScriptStep, ...], where: str) -> CompiledScript:
    try:
        return compile_script(steps)
    except (ValueError, re.error) as exc:
        raise ConfigError(f"{where}.script", str(exc)) from None


def _walk_routes(routes: tuple[RouteSpec, ...]) -> list[RouteSpec]:
    out = []
    for rs in routes:
        out.append(rs)
        out.extend(_walk_routes(rs.routes))
    return out


def _flat_steps(steps: list[ScriptStep]) -> list[ScriptStep]:
    out: list[ScriptStep] = []
    for step in steps:
        out.append(step)
        if isinstance(step, IfSpec):
            out.extend(_flat_steps(list(step.steps)))
    return out


def _user_variables(config: Config) -> frozenset[str]:
    """Names `set` or `map` defines anywhere: templates may use them everywhere (nginx
    variables are global to the configuration)."""
    names = {m.variable for m in config.maps}
    patterns: list[tuple[str, bool]] = []
    for m in config.maps:
        for key, _ in m.entries:
            if key.startswith("~*"):
                patterns.append((key[2:], True))
            elif key.startswith("~"):
                patterns.append((key[1:], False))
    for server in config.servers:
        patterns.extend((n[1:], False) for n in server.server_names if n.startswith("~"))
        steps = list(server.script)
        for rs in _walk_routes(server.routes):
            steps.extend(rs.script)
            if rs.match in ("regex", "regex_icase"):
                patterns.append((rs.path, rs.match == "regex_icase"))
        steps = _flat_steps(steps)  # `set` and regexes inside `if` blocks too
        names.update(s.variable for s in steps if isinstance(s, SetSpec))
        patterns.extend((s.pattern, False) for s in steps if isinstance(s, RewriteSpec))
        patterns.extend(
            (s.value, s.operator.endswith("*"))
            for s in steps
            if isinstance(s, IfSpec) and "~" in s.operator
        )
    # Named groups of every regex become variables, as in nginx.
    for pattern, icase in patterns:
        # A bad regex is reported where the regex itself is compiled.
        with contextlib.suppress(re.error, ValueError):
            names.update(compile_regex(pattern, caseless=icase).groupindex)
    return frozenset(names)


class _BoundMap:
    """A `map` with its source and value templates compiled: evaluated lazily, on the
    first use of its variable in a request (as nginx does)."""

    __slots__ = ("compiled", "source", "values")

    def __init__(self, spec: MapSpec, user_vars: frozenset[str], where: str) -> None:
        try:
            self.compiled = CompiledMap(spec)
        except (ValueError, re.error) as exc:
            raise ConfigError(where, str(exc)) from None
        self.source = compile_template(spec.source, f"{where}.source", user_vars)
        texts = {spec.default, *(value for _, value in spec.entries)}
        self.values = {t: compile_template(t, f"{where}.entries", user_vars) for t in texts}

    def value_for(self, ctx: Any) -> bytes:
        source = self.source if isinstance(self.source, bytes) else self.source(ctx)
        result = self.compiled.lookup(source.decode("latin-1"))
        for name, value in result.named:
            ctx.set_var(name, value.encode("latin-1"))
        text, captures = result.value, result.captures
        tpl = self.values[text]
        if isinstance(tpl, bytes):
            return tpl
        saved = ctx.captures
        ctx.captures = tuple(c.encode("latin-1") for c in captures)
        try:
            return tpl(ctx)
        finally:
            ctx.captures = saved


def _bind_maps(config: Config, user_vars: frozenset[str]) -> dict[str, Any]:
    return {
        m.variable: _BoundMap(m, user_vars, f"{config.source}: maps[{i}]")
        for i, m in enumerate(config.maps)
    }


def _log_format(config: Config, user_vars: frozenset[str]) -> Callable[[Any], bytes] | None:
    name = config.access_log.format
    if name in ("combined", "json"):
        return None
    for fmt_name, template in config.log_formats:
        if fmt_name == name:
            return compile_log_format(template, f"{config.source}: log_formats.{name}", user_vars)
    raise ConfigError(f"{config.source}: access_log.format", f"unknown log format {name!r}")


def _stagger(group: UpstreamGroup, slot: int, workers: int) -> None:
    """Each worker keeps its own balancer state; without this, every worker would send
    its first request to the first peer. Starting worker k's rotation k/N of the way
    round spreads the workers like a shared rotation would (with 4 workers and 6 peers,
    12 requests reach all six 99% of the time, against 91% when worker k starts k
    places on). A rotation shared by all workers is the balancing issue's."""
    npeers = len(group.peers)
    for _ in range((slot * npeers // max(1, workers)) % max(1, npeers)):
        peer = group.select(0.0, 0)
        if peer is None:
            return
        group.release(peer, Outcome.NEUTRAL, 0.0)


def check_config(
    config: Config, resolve: bool = True, users: dict[str, dict[bytes, bytes]] | None = None
) -> None:
    """Everything `run` would refuse, without binding a socket (`nginx -t`). `users`:
    the htpasswd files as the caller already read them (read_user_files), so that what
    is checked is what its workers will use; None: read here."""
    resolved = resolve_peers(config) if resolve else {}
    loop = asyncio.new_event_loop()
    try:
        runtime = build_worker(
            config, loop, resolved, filter_state=FilterState.alone(config, users)
        )
        # The master checks every reload: what the check opened must not pile up.
        runtime.context.access_log.close()
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
