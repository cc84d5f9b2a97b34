"""The forward proxy: absolute-form requests (`GET http://host/path`) and CONNECT
tunnels, for a listener whose server has a `forward` section (ForwardSpec).

The lifecycle is the Exchange's (proxy/exchange.py): the listener's one route runs its
filters (limit_req, limit_conn, access rules, then proxy authentication), and the
exchange's content phase hands the request here (`ForwardProxy.proceed`). Here:

    target      absolute-form http:// URI or CONNECT host:port; https:// absolute
                URIs are refused (a proxy cannot speak TLS for the client: CONNECT);
                origin-form requests are the listener's own (the PAC file) or 400
    destination filters/destination.py decides on the name (before any lookup), then
                on every resolved address; the one connected to is one that was
                checked, so DNS rebinding between check and connect is impossible
    resolve     `hosts` overrides, else loop.getaddrinfo bounded by resolve_timeout;
                nothing is cached beyond the request (the system resolver caches)
    headers     the anonymity level rewrites the request's end-to-end fields
    upstream    a one-peer group and pool per resolved address:port (bounded), so
                plain-HTTP requests reuse kept-alive origin connections; then the
                Exchange's own cache/dispatch/response phases, unchanged
    CONNECT     a fresh connection, `200 Connection Established` once it is up, then
                the Exchange's tunnel (client half-close passed on, read_timeout idle)

Must not know: routing tables, balancing strategies, the wire format of responses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from ferryman.balancing.base import Outcome
from ferryman.balancing.registry import create_balancer
from ferryman.config.schema import CacheSpec, ForwardSpec, PeerSpec, RouteSpec, UpstreamSpec
from ferryman.errors import UpstreamError
from ferryman.filters.auth import BasicAuthFilter, parse_credentials
from ferryman.filters.base import Deny, Verdict
from ferryman.filters.destination import Address, Decision, DestinationPolicy, parse_host
from ferryman.http.fields import trim_ows
from ferryman.http.serialize import local_response
from ferryman.proxy.pac import PAC_MEDIA_TYPE, pac_body
from ferryman.upstream.group import UpstreamGroup
from ferryman.upstream.peer import PeerState
from ferryman.upstream.pool import ConnectFn, ConnectionPool

if TYPE_CHECKING:
    from ferryman.proxy.exchange import Exchange
    from ferryman.server.sweeper import Sweeper

__all__ = [
    "ForwardProxy",
    "ProxyAuthFilter",
    "build_proxy_auth",
    "forward_route",
    "rewrite_fields",
]

_log: Final = logging.getLogger(__name__)

# Origin upstreams kept per worker (address:port); beyond it the least recently used
# goes, its idle connections closed. Bounded: targets come from clients.
_MAX_ORIGINS: Final = 512
_ESTABLISHED: Final = b"HTTP/1.1 200 Connection Established\r\n\r\n"
_VIA_NAME: Final = b"ferryman"
_DEFAULT_CACHE_KEY: Final = CacheSpec(zone="").key
# Fields that may carry the client's address; anonymous and elite never pass them.
_ADDRESS_FIELDS: Final = frozenset({b"forwarded", b"x-real-ip", b"client-ip", b"true-client-ip"})

Lookup = Callable[[str, int], Awaitable[list[str]]]


def rewrite_fields(
    fields: bytes,
    anonymity: str,
    version: bytes,
    user_agent: bytes = b"",
) -> bytes:
    """The request's end-to-end field lines as the origin gets them (pure).

    Always: Proxy-Authorization is consumed (RFC 9110 11.7.2: for this proxy only).
    transparent  adds `Via` (RFC 9110 7.6.3, appended to any the client sent); the
                 caller adds the client to X-Forwarded-For
    anonymous    adds `Via`; drops Forwarded, X-Forwarded-*, X-Real-IP and the like
    elite        adds nothing; drops those and `Via`
    """
    strip = anonymity != "transparent"
    prior: list[bytes] = []
    out: list[bytes] = []
    for line in fields.split(b"\r\n"):
        if not line:
            continue
        name, _, value = line.partition(b":")
        lname = name.lower()
        if lname == b"via":
            prior.append(trim_ows(value))
        elif lname == b"proxy-authorization" or (user_agent and lname == b"user-agent"):
            continue
        elif not strip or not _carries_address(lname):
            out.append(line + b"\r\n")
    if anonymity != "elite":
        prior.append(b"%s %s" % (version, _VIA_NAME))
        out.append(b"Via: %s\r\n" % b", ".join(prior))
    if user_agent:
        out.append(b"User-Agent: %s\r\n" % user_agent)
    return b"".join(out)


def _carries_address(lname: bytes) -> bool:
    return lname in _ADDRESS_FIELDS or lname.startswith(b"x-forwarded-")


class ProxyAuthFilter(BasicAuthFilter):
    """Proxy authentication: BasicAuthFilter's users and checks, answered with 407 and
    `Proxy-Authenticate` from `Proxy-Authorization` (RFC 9110 11.7.1). The listener's
    own pages (the PAC file: browsers fetch it before they know any credentials) are
    not asked."""

    def __init__(self, realm: str, users: dict[bytes, bytes]) -> None:
        super().__init__(realm, users)
        self.challenge = ((b"Proxy-Authenticate", self.challenge[0][1]),)

    def __repr__(self) -> str:
        return f"ProxyAuthFilter({len(self.users)} users)"

    def check(self, exchange: Any, now: float) -> Verdict:
        head = exchange.head
        if head.method != b"CONNECT" and head.target[:1] == b"/":
            return None
        value = next((v for n, v in head.headers if n.lower() == b"proxy-authorization"), None)
        credentials = parse_credentials(value)
        if credentials is None:
            return self._deny("no user/password was provided for proxy authentication")
        user, password = credentials
        if self._is_valid(user, password):
            return None
        why = "was not found" if user not in self.users else "password mismatch"
        return self._deny(f"proxy user {user.decode('latin-1')!r}: {why}")

    def _deny(self, reason: str) -> Deny:
        return Deny(
            407, reason, body=b"407 Proxy Authentication Required\n", headers=self.challenge
        )


def forward_route(spec: ForwardSpec) -> RouteSpec:
    """The one route of a forward server: what the Exchange's phases read (timeouts,
    filters, cache). Host goes as the target URI names it (RFC 9112 3.2.2); the
    forwarding fields are rewrite_fields' business, not the reverse proxy's recipe."""
    cache = spec.cache
    if cache is not None and cache.key == _DEFAULT_CACHE_KEY:
        # The absolute URI ($request_uri of an absolute-form request) names the resource.
        cache = replace(cache, key="$request_uri")
    return RouteSpec(
        upstream=None,
        host_header="$http_host",
        forwarded_headers=False,
        connect_timeout=spec.connect_timeout,
        read_timeout=spec.read_timeout,
        send_timeout=spec.send_timeout,
        next_upstream=("off",),
        pass_upgrade=True,
        limit_req=spec.limit_req,
        limit_req_status=spec.limit_req_status,
        limit_conn=spec.limit_conn,
        limit_conn_status=spec.limit_conn_status,
        access=spec.access,
        deny_status=spec.deny_status,
        cache=cache,
    )


def build_proxy_auth(
    spec: ForwardSpec, where: str, users_in: Callable[[str, str], dict[bytes, bytes]]
) -> ProxyAuthFilter | None:
    """`users_in(path, where)`: the users of an htpasswd file (FilterState.users_in)."""
    if spec.auth is None:
        return None
    users = users_in(spec.auth.user_file, f"{where}.auth.user_file")
    return ProxyAuthFilter(spec.auth.realm, users)


class ForwardProxy:
    """One forward-proxy listener's engine, per worker (built by app.py)."""

    __slots__ = (
        "_connect",
        "_lookup",
        "_origins",
        "_sweeper",
        "anonymity",
        "connect_ports",
        "hosts",
        "loop",
        "policy",
        "spec",
        "user_agent",
    )

    def __init__(
        self,
        spec: ForwardSpec,
        loop: asyncio.AbstractEventLoop,
        sweeper: Sweeper,
        connect: ConnectFn,
        hosts: dict[str, str],
        lookup: Lookup | None = None,
    ) -> None:
        self.spec = spec
        self.loop = loop
        self._sweeper = sweeper
        self._connect = connect
        # ValueError here is a config error; the loaders check the rules first.
        self.policy = DestinationPolicy(spec.destinations, spec.allow_private)
        self.connect_ports = frozenset(spec.connect_ports)
        self.anonymity = spec.anonymity
        self.user_agent = spec.user_agent.encode("latin-1")
        # Config.hosts (and hosts_file) override DNS, as for the reverse proxy's peers.
        self.hosts = {name.lower(): address for name, address in hosts.items()}
        self._lookup = lookup or self._getaddrinfo
        self._origins: dict[tuple[str, int], tuple[UpstreamGroup, ConnectionPool]] = {}

    def __repr__(self) -> str:
        return (
            f"ForwardProxy(anonymity={self.anonymity} connect_ports="
            f"{sorted(self.connect_ports)} origins={len(self._origins)} {self.policy!r})"
        )

    # ---- the content phase (called by Exchange._proceed on a forward listener) ----

    def proceed(self, ex: Exchange) -> None:
        head = ex.head
        if head.method == b"CONNECT":
            self._target(ex, head.host or b"", None, tunnel=True)
            return
        target = head.target
        if target[:1] == b"/" or target == b"*":
            self._local(ex)
            return
        if target[:8].lower() == b"https://":
            _deny(
                ex,
                400,
                "https:// absolute URI (a client must use CONNECT for https)",
                b"400 Bad Request: https:// URLs go through CONNECT, not GET\n",
            )
            return
        self._target(ex, head.host or b"", 80, tunnel=False)

    def _local(self, ex: Exchange) -> None:
        """Origin-form requests: the listener's own pages (the PAC file), else 400."""
        pac = self.spec.pac
        if pac is not None and ex.head.path == pac.path.encode("latin-1"):
            self._serve_pac(ex)
            return
        _deny(
            ex,
            400,
            "origin-form request to a forward proxy",
            b"400 Bad Request: this is a forward proxy; send an absolute URI or CONNECT\n",
        )

    def _serve_pac(self, ex: Exchange) -> None:
        """The PAC file (proxy/pac.py makes its text), as its own media type."""
        head = ex.head
        if head.method not in (b"GET", b"HEAD"):
            ex.respond_local(405)
            return
        try:
            body = pac_body(self.spec, ex)
        except OSError as exc:
            _log.error("forward: cannot read the PAC file: %s", exc)
            ex.respond_local(500)
            return
        keep = head.keep_alive and ex.body_done and not ex.client.worker.draining
        ex.status = 200
        ex.body_bytes = len(body)
        ex.client.write(
            local_response(
                200,
                body,
                content_type=PAC_MEDIA_TYPE.encode(),
                extra=ex.client.worker.date_line,
                keep_alive=keep,
                head_only=head.method == b"HEAD",
            )
        )
        ex.end_from_cache(keep)  # finished, logged, the connection handed on

    def _target(self, ex: Exchange, authority: bytes, default: int | None, tunnel: bool) -> None:
        split = _split_authority(authority, default)
        if split is None:
            _deny(ex, 400, f"invalid target {authority!r}", b"400 Bad Request: invalid target\n")
            return
        host, port = split
        if tunnel and port not in self.connect_ports:
            rule = "connect_ports " + ",".join(str(p) for p in sorted(self.connect_ports))
            self._refuse(ex, Decision(False, rule), host, port, None)
            return
        parsed = parse_host(host)
        if parsed is None:
            _deny(ex, 400, f"invalid host {host!r}", b"400 Bad Request: invalid host\n")
            return
        if isinstance(parsed, str):
            early = self.policy.check_name(parsed, port)
            if early is not None:
                self._refuse(ex, early, host, port, None)
                return
            self.loop.create_task(self._resolve_then_go(ex, parsed, port, tunnel))
            return
        decision = self.policy.check_address(None, parsed, port)
        if not decision.allowed:
            self._refuse(ex, decision, host, port, parsed)
            return
        self._go(ex, str(parsed), port, tunnel)

    # ---- name resolution and the destination decision on its result ----

    async def _resolve_then_go(self, ex: Exchange, name: str, port: int, tunnel: bool) -> None:
        try:
            addresses = await self._resolve(name, port)
        except OSError as exc:
            if not ex.finished:
                _log.error(
                    "forward: DNS lookup of %r failed (%s) for %r from %s",
                    name,
                    exc,
                    ex.head,
                    ex.remote_addr.decode(),
                )
                ex.respond_local(502)
            return
        if ex.finished:
            return  # the client left while we looked up
        first: tuple[Decision, Address] | None = None
        for text in addresses:
            addr = _address(text)
            if addr is None:
                continue
            decision = self.policy.check_address(name, addr, port)
            if decision.allowed:
                _log.debug("forward: %s:%d -> %s allowed by %s", name, port, addr, decision.rule)
                self._go(ex, str(addr), port, tunnel)
                return
            first = first or (decision, addr)
        if first is None:
            _log.error("forward: %r resolved to no usable address", name)
            ex.respond_local(502)
            return
        self._refuse(ex, first[0], name, port, first[1])

    async def _resolve(self, name: str, port: int) -> list[str]:
        override = self.hosts.get(name)
        if override is not None:
            return [override]
        try:
            async with asyncio.timeout(self.spec.resolve_timeout):
                return await self._lookup(name, port)
        except TimeoutError:
            raise OSError(f"no answer within {self.spec.resolve_timeout:g}s") from None

    async def _getaddrinfo(self, name: str, port: int) -> list[str]:
        try:
            infos = await self.loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(exc.strerror or str(exc)) from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def _refuse(
        self, ex: Exchange, decision: Decision, host: str, port: int, addr: Address | None
    ) -> None:
        """403, logged with the rule and the address; the client's body names the rule
        only (a resolved internal address is not the client's business)."""
        where = f"{host}:{port}" + (f" ({addr})" if addr is not None and str(addr) != host else "")
        reason = f"forward: destination {where} refused by {decision.rule}"
        body = b"403 Forbidden: destination refused by %s\n" % decision.rule.encode("latin-1")
        _deny(ex, 403, reason, body)

    # ---- to the origin ----

    def _go(self, ex: Exchange, address: str, port: int, tunnel: bool) -> None:
        group, pool = self._origin(address, port)
        ex.group, ex.pool, ex.max_tries = group, pool, 1
        ex.proxy_target = (ex.head.host or b"", None)
        if tunnel:
            self.loop.create_task(self._open_tunnel(ex, group, pool))
            return
        self._rewrite_head(ex)
        route = ex.route
        assert route is not None
        if route.cache is not None and route.cache.begin(ex):
            return
        ex.send_upstream()

    def _rewrite_head(self, ex: Exchange) -> None:
        head = ex.head
        head.fields = rewrite_fields(head.fields, self.anonymity, head.version, self.user_agent)
        if self.anonymity == "transparent":
            prior = head.forwarded_for
            client = ex.remote_addr
            head.forwarded_for = prior + b", " + client if prior else client
        else:
            head.forwarded_for = None
            head.forwarded_other = b""

    def _origin(self, address: str, port: int) -> tuple[UpstreamGroup, ConnectionPool]:
        key = (address, port)
        origins = self._origins
        found = origins.pop(key, None)
        if found is None:
            if len(origins) >= _MAX_ORIGINS:
                oldest = next(iter(origins))
                origins.pop(oldest)[1].close_all()
            found = self._make_origin(address, port)
        origins[key] = found  # most recently used last
        return found

    def _make_origin(self, address: str, port: int) -> tuple[UpstreamGroup, ConnectionPool]:
        spec = self.spec
        # max_fails=0: one origin's refusal must not make the next request for it a
        # "no live upstreams" (nginx's passive health is for a pool of peers).
        peer = PeerSpec(host=address, port=port, max_fails=0)
        up = UpstreamSpec(
            name=f"[{address}]:{port}" if ":" in address else f"{address}:{port}",
            servers=(peer,),
            keepalive=spec.keepalive,
            keepalive_timeout=spec.keepalive_timeout,
        )
        peers = [PeerState(peer, 0)]
        group = UpstreamGroup(up, peers, create_balancer("round_robin", up, peers))
        return group, ConnectionPool(up, 1, self._sweeper, self._connect, peers)

    async def _open_tunnel(self, ex: Exchange, group: UpstreamGroup, pool: ConnectionPool) -> None:
        route = ex.route
        assert route is not None
        peer = group.select(self._sweeper.now, 0)
        if peer is None:
            ex.respond_local(502)
            return
        ex.peer = peer
        try:
            conn = await pool.connect(peer, route.connect_timeout)
        except UpstreamError as exc:
            if not ex.finished:
                ex.peer = None
                group.release(peer, Outcome.FAILURE, self._sweeper.now)
                _log.error(
                    "forward: CONNECT %s failed (%s) for %s: %s",
                    peer.name,
                    exc.kind,
                    ex.remote_addr.decode(),
                    exc,
                )
                ex.respond_local(502)
            return
        if ex.finished:  # the client left; client_gone released the peer
            conn.close()
            return
        ex.conn = conn
        conn.attach(ex, False)
        ex.tunnel = ex.flushed = True
        ex.status = 200
        ex.client.write(_ESTABLISHED)
        conn.deadline = self._sweeper.now + route.read_timeout
        ex.client.start_tunnel(ex)  # type: ignore[union-attr]

    def close(self) -> None:
        """Worker shutdown or reload: idle origin connections go."""
        for _, pool in self._origins.values():
            pool.close_all()
        self._origins.clear()


def _deny(ex: Exchange, status: int, reason: str, body: bytes) -> None:
    ex.respond_deny(Deny(status, reason, body=body))


def _split_authority(authority: bytes, default: int | None) -> tuple[str, int] | None:
    """`host[:port]` / `[v6][:port]` -> (host, port); the parser already checked the
    characters (http/fields.is_valid_host). No port and no default (CONNECT): None."""
    text = authority.decode("latin-1")
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            return None
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        return None
    if not port_text:
        return (host, default) if default is not None else None
    if len(port_text) > 5 or not port_text.isascii() or not port_text.isdigit():
        return None
    port = int(port_text)
    return (host, port) if 0 < port < 65536 else None


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
