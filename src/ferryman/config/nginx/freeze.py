"""Drafts -> frozen `Config`: nginx's defaults and inheritance applied once, `proxy_pass`
targets resolved against the `upstream` blocks, whole-file checks made.

Owns what nginx decides after reading the whole file: a location's effective settings
(its own, else the enclosing levels', else nginx's defaults), `proxy_pass` to an
upstream defined anywhere in `http` or to an implicit one-server group, the literal
host of a `proxy_pass` with variables, the default server per address, conflicting
server names. Knows nothing about directive syntax.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ferryman.config.nginx.access import access_rules, auth_basic_spec
from ferryman.config.nginx.cache import cache_spec, check_cache_conditions
from ferryman.config.nginx.draft import ConfigDraft, Level, LocationDraft, ServerDraft
from ferryman.config.nginx.limits import limit_zones, route_limits
from ferryman.config.nginx.realip import real_ip_spec
from ferryman.config.nginx.static import redirect_rules, static_fields
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.nginx.tls import listen_tls, upstream_tls_spec, with_tls
from ferryman.config.nginx.values import ProxyTarget, ProxyTemplate
from ferryman.config.schema import (
    AccessLogSpec,
    ClientLimits,
    ClientTimeouts,
    Config,
    HeaderAdd,
    PeerSpec,
    RouteSpec,
    ServerSpec,
    TlsSpec,
    UpstreamSpec,
)
from ferryman.errors import ConfigError

__all__ = ["freeze"]

# nginx's defaults where the schema's differ (the schema's suit native files).
_HTTP_VERSION = "1.0"  # proxy_http_version
_HOST_HEADER = "$proxy_host"  # proxy_set_header Host
_CLIENT_MAX_BODY_SIZE = 1024 * 1024  # client_max_body_size 1m
_TIMEOUT = 60.0  # proxy_connect/read/send_timeout
_IMPLICIT_KEEPALIVE = 0  # a proxy_pass host with no upstream block caches no connections
_HTTP_PORT = 80
# default_type: nginx's own default (the stock nginx.conf sets application/octet-stream).
_DEFAULT_TYPE = "text/plain"
# ngx_http_proxy_hide_headers: upstream response fields nginx passes to no client
# unless proxy_pass_header names them.
_HIDDEN_BY_DEFAULT = (
    "date",
    "server",
    "x-pad",
    "x-accel-expires",
    "x-accel-redirect",
    "x-accel-limit-rate",
    "x-accel-buffering",
    "x-accel-charset",
)
# ngx_http_proxy_headers: sent upstream unless proxy_set_header names the field (Host is
# `host_header`; the others there are hop-by-hop fields the runtime never forwards).
_CONNECTION_DEFAULT = ("Connection", "close")


def freeze(draft: ConfigDraft) -> Config:
    if draft.events is None:
        raise ConfigError(draft.source, 'no "events" section in configuration')
    if not draft.servers:
        raise ConfigError(draft.source, 'no "server" block in "http": nothing to listen on')
    upstreams = _Upstreams(draft)
    tls_specs = listen_tls(draft)
    servers = tuple(_server(server, upstreams, draft, tls_specs) for server in draft.servers)
    upstreams.check_url_hosts()
    _check_default_servers(draft)
    _warn_conflicting_names(draft)
    return Config(
        servers=servers,
        upstreams=upstreams.specs(),
        workers=draft.workers,
        worker_connections=draft.worker_connections,
        client_timeouts=ClientTimeouts(**draft.client_timeouts),
        keepalive_requests=draft.keepalive_requests,
        keepalive_header=draft.keepalive_header,
        client_limits=draft.client_limits or ClientLimits(),
        access_log=draft.access_log or AccessLogSpec(),
        maps=tuple(spec for spec, _ in draft.maps),
        pid_file=draft.pid_file,
        worker_shutdown_timeout=(
            Config((), ()).worker_shutdown_timeout
            if draft.shutdown_timeout is None
            else draft.shutdown_timeout
        ),
        error_log=draft.error_log[0] if draft.error_log is not None else None,
        daemon=draft.daemon,
        log_formats=tuple(draft.log_formats),
        cache_zones=tuple(zone for zone, _ in draft.cache_zones),
        limit_zones=limit_zones(draft),
        warnings=tuple(draft.warnings),
        source=draft.source,
    )


class _Upstreams:
    """The upstream blocks, and the implicit groups `proxy_pass http://host:port` makes."""

    def __init__(self, draft: ConfigDraft) -> None:
        self._explicit = {
            u.name.lower(): UpstreamSpec(
                name=u.name,
                servers=tuple(u.peers),
                balance=u.balance,
                hash_key=u.hash_key,
                consistent=u.consistent,
                random_two=u.random_two,
                random_method=u.random_method,
                least_time=u.least_time,
                keepalive=u.keepalive,
                keepalive_timeout=u.keepalive_timeout,
                keepalive_requests=u.keepalive_requests,
                queue=u.queue,
                queue_timeout=u.queue_timeout,
            )
            for u in draft.upstreams
        }
        self._implicit: dict[str, UpstreamSpec] = {}
        self._url_hosts: list[tuple[ProxyTarget, Stmt]] = []

    def name_for(self, target: ProxyTarget, stmt: Stmt) -> str:
        explicit = self._explicit.get(target.host.lower())
        if explicit is not None:
            if target.port is not None:
                raise stmt.error(
                    f'upstream "{target.host}" may not have port {target.port}'
                    ' in "proxy_pass" directive'
                )
            return explicit.name
        # Named as nginx's $proxy_host shows it: host, or host:port unless port 80.
        name = target.proxy_host
        if name not in self._implicit:
            peer = PeerSpec(host=target.host.strip("[]"), port=target.port or target.default_port)
            self._implicit[name] = UpstreamSpec(
                name=name, servers=(peer,), keepalive=_IMPLICIT_KEEPALIVE
            )
        return name

    def url_for(self, template: ProxyTemplate, stmt: Stmt) -> str:
        """The template as written; its literal host, if any, is checked once every
        implicit group is known (`check_url_hosts`)."""
        if template.target is not None:
            self._url_hosts.append((template.target, stmt))
        return template.url

    def check_url_hosts(self) -> None:
        """A literal host in a `proxy_pass` with variables is looked up as nginx looks it
        up per request: an upstream block (when no port is given), an implicit group by
        its $proxy_host, else an IP address. nginx would resolve any other name with a
        `resolver`; Ferryman resolves no names at run time."""
        implicit = {name.lower() for name in self._implicit}
        for target, stmt in self._url_hosts:
            host = target.host.lower()
            if (
                (target.port is None and host in self._explicit)
                or target.proxy_host.lower() in implicit
                or _is_ip(target.host.strip("[]"))
            ):
                continue
            raise stmt.error(
                f'host "{target.host}" in "proxy_pass" with variables names no upstream and'
                " is not an IP address (names are not resolved at run time)"
            )

    def specs(self) -> tuple[UpstreamSpec, ...]:
        return (*self._explicit.values(), *self._implicit.values())


def _server(
    server: ServerDraft,
    upstreams: _Upstreams,
    draft: ConfigDraft,
    tls_specs: dict[str, TlsSpec],
) -> ServerSpec:
    if not server.locations and not server.script:
        draft.warn(server.stmt, _NO_HANDLER.format(what="server"))
    return ServerSpec(
        listen=tuple(with_tls(spec, tls_specs) for spec, _ in server.listens),
        routes=tuple(_route(loc, upstreams, draft) for loc in server.locations),
        server_names=tuple(name for name, _ in server.names),
        script=tuple(server.script),
        add_headers=_add_headers(server.level),
        real_ip=real_ip_spec(server.level),
    )


_NO_HANDLER = (
    'this {what} has neither "proxy_pass", "return" nor "root": nginx would serve files'
    ' from its default "html" root; Ferryman answers what has no other route with 404'
)


def _route(location: LocationDraft, upstreams: _Upstreams, draft: ConfigDraft) -> RouteSpec:
    level = location.level
    upstream = uri = url = upstream_tls = None
    redirects: tuple[tuple[str, str], ...] | None = None
    if location.proxy is not None:
        target, stmt = location.proxy
        if isinstance(target, ProxyTemplate):
            url = upstreams.url_for(target, stmt)
            redirects = redirect_rules(level, location, None, None)
        else:
            upstream, uri = upstreams.name_for(target, stmt), target.uri
            upstream_tls = upstream_tls_spec(level, target.https, stmt, draft)
            redirects = redirect_rules(level, location, stmt.args[0], uri)
    elif (
        not location.script
        and not location.locations
        and level.value("root", None) is None
        and "alias" not in level.values
    ):
        draft.warn(location.stmt, _NO_HANDLER.format(what="location"))
    proxying = location.proxy is not None
    headers = level.array("proxy_set_header")
    cache = cache_spec(level, draft) if proxying else None
    if cache is None:
        check_cache_conditions(level, draft)
    return RouteSpec(
        upstream=upstream,
        path=location.path,
        match=location.match,
        upstream_uri=uri,
        upstream_url=url,
        host_header=next((v for n, v, _ in headers if n.lower() == "host"), _HOST_HEADER),
        set_headers=_set_headers(headers, proxying),
        connect_timeout=level.value("proxy_connect_timeout", _TIMEOUT),
        read_timeout=level.value("proxy_read_timeout", _TIMEOUT),
        send_timeout=level.value("proxy_send_timeout", _TIMEOUT),
        next_upstream_tries=_next_upstream_tries(level),
        next_upstream=level.value("proxy_next_upstream", ("error", "timeout")),
        next_upstream_timeout=level.value("proxy_next_upstream_timeout", 0.0),
        # nginx adds no X-Forwarded-* of its own; users set them with proxy_set_header.
        forwarded_headers=False,
        http_version=level.value("proxy_http_version", _HTTP_VERSION),
        hide_headers=_hide_headers(level, proxying),
        pass_headers=tuple(level.array("proxy_pass_header")),
        add_headers=_add_headers(level),
        script=tuple(location.script),
        client_max_body_size=level.value("client_max_body_size", _CLIENT_MAX_BODY_SIZE),
        default_type=level.value("default_type", _DEFAULT_TYPE),
        # nginx forwards a client's Upgrade only through `proxy_set_header Upgrade ...`.
        pass_upgrade=False,
        **route_limits(level, draft),
        access=access_rules(level),
        auth_basic=auth_basic_spec(level),
        cache=cache,
        upstream_tls=upstream_tls,
        redirects=redirects,
        **_upstream_request(level, proxying),
        **static_fields(level, proxying),
        routes=tuple(_route(inner, upstreams, draft) for inner in location.locations),
    )


def _set_headers(
    headers: list[tuple[str, str, Stmt]], proxying: bool
) -> tuple[tuple[str, str], ...]:
    """The effective proxy_set_header list but Host, then nginx's `Connection close`
    unless the list names Connection (`""` there: no Connection at all)."""
    out = tuple((n, v) for n, v, _ in headers if n.lower() != "host")
    if proxying and all(n.lower() != "connection" for n, _ in out):
        out += (_CONNECTION_DEFAULT,)
    return out


def _hide_headers(level: Level, proxying: bool) -> tuple[str, ...]:
    """nginx's hidden fields, then proxy_hide_header's, less proxy_pass_header's (as
    ngx_http_upstream_hide_headers_hash builds them)."""
    configured: list[str] = level.array("proxy_hide_header")
    if not proxying:
        return tuple(configured)
    passed = set(level.array("proxy_pass_header"))
    hidden = dict.fromkeys((*_HIDDEN_BY_DEFAULT, *configured))
    return tuple(name for name in hidden if name not in passed)


def _upstream_request(level: Level, proxying: bool) -> dict[str, Any]:
    """proxy_method, proxy_set_body, proxy_pass_request_headers/_body and
    proxy_ignore_headers, with nginx's inheritance (an inner level's own replaces)."""
    if not proxying:
        return {}
    return {
        "upstream_method": level.value("proxy_method", None),
        "upstream_body": level.value("proxy_set_body", None),
        "pass_request_headers": level.value("proxy_pass_request_headers", True),
        "pass_request_body": level.value("proxy_pass_request_body", True),
        "ignore_headers": level.value("proxy_ignore_headers", ()),
    }


def _next_upstream_tries(level: Level) -> int:
    # `proxy_next_upstream off`: one try. Otherwise proxy_next_upstream_tries (0: all).
    if level.value("proxy_next_upstream", ()) == ("off",):
        return 1
    tries: int = level.value("proxy_next_upstream_tries", 0)
    return tries


def _add_headers(level: Level) -> tuple[HeaderAdd, ...]:
    return tuple(level.array("add_header"))


def _check_default_servers(draft: ConfigDraft) -> None:
    seen: set[str] = set()
    for server in draft.servers:
        for spec, stmt in server.listens:
            if spec.default_server:
                if spec.address in seen:
                    raise stmt.error(
                        f'a duplicate default server for {spec.address} in "listen" directive'
                    )
                seen.add(spec.address)


def _warn_conflicting_names(draft: ConfigDraft) -> None:
    # nginx keeps the first server with a name on an address and ignores the others.
    claimed: set[tuple[str, str]] = set()
    for server in draft.servers:
        addresses = {spec.address for spec, _ in server.listens}
        for name, stmt in server.names:
            for address in sorted(addresses):
                if (address, name) in claimed:
                    draft.warn(stmt, f'conflicting server name "{name}" on {address}, ignored')
                claimed.add((address, name))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
