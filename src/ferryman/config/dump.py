"""`Config` -> native YAML text: what `ferryman convert nginx.conf` prints.

The inverse of `native.py`: `load_native(dump_native(c), c.source) == c` for every
config (`warnings`, which are not part of equality, are not written). Fields equal
to the schema's defaults are left out so the file reads like one a person wrote;
durations and sizes are written in units (`30s`, `1m`) when that is exact. Knows
nothing about nginx.conf.
"""

from __future__ import annotations

from typing import Any

import yaml

from ferryman.config.schema import (
    AccessLogSpec,
    AccessRule,
    AdminSpec,
    BreakSpec,
    CacheSpec,
    CacheZoneSpec,
    ClientLimits,
    ClientTimeouts,
    ClusterSpec,
    Config,
    ErrorPageSpec,
    ForwardSpec,
    HeaderAdd,
    HealthCheckSpec,
    IfSpec,
    LimitZoneSpec,
    ListenSpec,
    MapSpec,
    PacSpec,
    PeerSpec,
    RealIpSpec,
    ReturnSpec,
    RewriteSpec,
    RouteSpec,
    ScriptStep,
    ServerSpec,
    SetSpec,
    StaticSpec,
    TlsSpec,
    UpstreamSpec,
    UpstreamTlsSpec,
)
from ferryman.config.units import parse_duration

__all__ = ["dump_native"]

# Schema defaults, from the dataclasses themselves.
_CONFIG = Config(servers=(), upstreams=())
_STATIC = StaticSpec(root="/")
_UPSTREAM = UpstreamSpec(name="", servers=())
_PEER = PeerSpec(host="", port=1)
_ROUTE = RouteSpec()
_TIMEOUTS = ClientTimeouts()
_LIMITS = ClientLimits()
_ACCESS_LOG = AccessLogSpec()

# Milliseconds per unit, largest first, as `parse_duration` wants them.
_DURATION_UNITS: tuple[tuple[str, int], ...] = (
    ("w", 604800_000),
    ("d", 86400_000),
    ("h", 3600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
)
_SIZE_UNITS = (("g", 1024**3), ("m", 1024**2), ("k", 1024))


class _Flow(dict[str, Any]):
    """A mapping written on one line: `{address: "a:1", weight: 10}`."""


class _FlowList(list[Any]):
    """A list written on one line: `["", close]`."""


class _Dumper(yaml.SafeDumper):
    pass


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)


def _represent_flow_list(dumper: yaml.SafeDumper, data: _FlowList) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


def _represent_float(dumper: yaml.SafeDumper, data: float) -> yaml.Node:
    # Plain decimals only: the native loader reads YAML 1.2 core floats, which have no
    # exponent form (`1.0e-05` would come back as a string).
    text = repr(data)
    if "e" in text or "E" in text:
        text = f"{data:.18f}".rstrip("0")
        text += "0" if text.endswith(".") else ""
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # A newline or tab reads best escaped in double quotes ("hello\n") than folded.
    style = '"' if any(ch in data for ch in "\n\r\t") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(_Flow, _represent_flow)
_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_FlowList, _represent_flow_list)
_Dumper.add_representer(float, _represent_float)


def dump_native(config: Config) -> str:
    """The native YAML for `config`."""
    document = _document(config)
    return yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,  # never fold a long template across lines
    )


def _document(c: Config) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    _put(doc, "workers", c.workers, _CONFIG.workers)
    _put(doc, "worker_connections", c.worker_connections, _CONFIG.worker_connections)
    _put(doc, "max_connections", c.max_connections, _CONFIG.max_connections)
    _put(doc, "pid_file", c.pid_file, None)
    _put(doc, "daemon", c.daemon, None)
    _put(doc, "hosts_file", c.hosts_file, None)
    if c.resolve_interval != _CONFIG.resolve_interval:
        doc["resolve_interval"] = _duration(c.resolve_interval)
    if c.worker_shutdown_timeout != _CONFIG.worker_shutdown_timeout:
        doc["worker_shutdown_timeout"] = _duration(c.worker_shutdown_timeout)
    if c.error_log is not None:
        doc["error_log"] = _Flow(path=c.error_log[0], level=c.error_log[1])
    if c.hosts:
        doc["hosts"] = dict(c.hosts)
    if c.client_timeouts != _TIMEOUTS:
        doc["timeouts"] = _timeouts(c.client_timeouts)
    if c.client_limits != _LIMITS:
        doc["client_limits"] = _client_limits(c.client_limits)
    if c.log_formats:
        doc["log_formats"] = dict(c.log_formats)
    if c.access_log != _ACCESS_LOG:
        doc["access_log"] = _access_log(c.access_log)
    if c.admin is not None:
        doc["admin"] = _admin(c.admin)
    if c.trace is not None:
        doc["trace"] = _Flow(header=c.trace.header)
    if c.cluster is not None:
        doc["cluster"] = _cluster(c.cluster)
    _put(doc, "keepalive_requests", c.keepalive_requests, _CONFIG.keepalive_requests)
    _put(doc, "keepalive_header", c.keepalive_header, _CONFIG.keepalive_header)
    if c.maps:
        doc["maps"] = [_map(m) for m in c.maps]
    if c.cache_zones:
        doc["cache_zones"] = [_cache_zone(z) for z in c.cache_zones]
    if c.limit_zones:
        doc["limit_zones"] = [_limit_zone(z) for z in c.limit_zones]
    if c.upstreams:
        doc["upstreams"] = {u.name: _upstream(u) for u in c.upstreams}
    doc["servers"] = [_server(s) for s in c.servers]
    return doc


def _put(doc: dict[str, Any], key: str, value: object, default: object) -> None:
    if value != default:
        doc[key] = value


def _client_limits(limits: ClientLimits) -> _Flow:
    out = _Flow()
    if limits.request_line != _LIMITS.request_line:
        out["request_line"] = _size(limits.request_line)
    if limits.header_bytes != _LIMITS.header_bytes:
        out["header_bytes"] = _size(limits.header_bytes)
    if limits.headers != _LIMITS.headers:
        out["headers"] = limits.headers
    return out


def _timeouts(t: ClientTimeouts) -> _Flow:
    out = _Flow()
    for key, value, default in (
        ("client_header", t.header, _TIMEOUTS.header),
        ("client_body", t.body, _TIMEOUTS.body),
        ("keepalive", t.keepalive, _TIMEOUTS.keepalive),
        ("send", t.send, _TIMEOUTS.send),
    ):
        if value != default:
            out[key] = _duration(value)
    return out


def _access_log(log: AccessLogSpec) -> object:
    if log.path is None and log.format == _ACCESS_LOG.format:
        return "off"
    return _Flow(path=log.path, format=log.format)


def _map(m: MapSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"source": m.source, "variable": m.variable}
    if m.entries:
        out["entries"] = [_FlowList((key, value)) for key, value in m.entries]
    _put(out, "default", m.default, "")
    return out


def _upstream(u: UpstreamSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "balance", u.balance, _UPSTREAM.balance)
    _put(out, "hash_key", u.hash_key, _UPSTREAM.hash_key)
    _put(out, "consistent", u.consistent, _UPSTREAM.consistent)
    _put(out, "random_two", u.random_two, _UPSTREAM.random_two)
    _put(out, "random_method", u.random_method, _UPSTREAM.random_method)
    _put(out, "least_time", u.least_time, _UPSTREAM.least_time)
    _put(out, "keepalive", u.keepalive, _UPSTREAM.keepalive)
    if u.keepalive_timeout != _UPSTREAM.keepalive_timeout:
        out["keepalive_timeout"] = _duration(u.keepalive_timeout)
    _put(out, "keepalive_requests", u.keepalive_requests, _UPSTREAM.keepalive_requests)
    if u.keepalive_surplus_timeout != _UPSTREAM.keepalive_surplus_timeout:
        out["keepalive_surplus_timeout"] = _duration(u.keepalive_surplus_timeout)
    if u.health_check is not None:
        out["health_check"] = _health(u.health_check)
    _put(out, "queue", u.queue, _UPSTREAM.queue)
    if u.queue_timeout != _UPSTREAM.queue_timeout:
        out["queue_timeout"] = _duration(u.queue_timeout)
    out["servers"] = [_peer(p) for p in u.servers]
    return out


def _health(h: HealthCheckSpec) -> dict[str, Any]:
    d = HealthCheckSpec()
    out: dict[str, Any] = {}
    _put(out, "type", h.kind, d.kind)
    _put(out, "path", h.path, d.path)
    if h.interval != d.interval:
        out["interval"] = _duration(h.interval)
    if h.timeout != d.timeout:
        out["timeout"] = _duration(h.timeout)
    if h.statuses != d.statuses:
        out["status"] = [f"{a}-{b}" if a != b else str(a) for a, b in h.statuses]
    _put(out, "body", h.body, d.body)
    _put(out, "passes", h.passes, d.passes)
    _put(out, "fails", h.fails, d.fails)
    return out


def _peer(p: PeerSpec) -> object:
    out = _Flow(address=p.address)
    _put(out, "weight", p.weight, _PEER.weight)
    _put(out, "max_fails", p.max_fails, _PEER.max_fails)
    if p.fail_timeout != _PEER.fail_timeout:
        out["fail_timeout"] = _duration(p.fail_timeout)
    _put(out, "backup", p.backup, _PEER.backup)
    _put(out, "down", p.down, _PEER.down)
    _put(out, "max_conns", p.max_conns, _PEER.max_conns)
    if p.slow_start != _PEER.slow_start:
        out["slow_start"] = _duration(p.slow_start)
    _put(out, "resolve", p.resolve, _PEER.resolve)
    return out if len(out) > 1 else p.address


def _server(s: ServerSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"listen": [_listen(spec) for spec in s.listen]}
    if s.server_names:
        out["server_names"] = list(s.server_names)
    if s.script:
        out["script"] = [_step(step) for step in s.script]
    if s.add_headers:
        out["add_headers"] = [_header(h) for h in s.add_headers]
    if s.real_ip is not None:
        out["real_ip"] = _real_ip(s.real_ip)
    if s.trace is not None:
        out["trace"] = _Flow(header=s.trace.header)
    if s.forward is not None:
        out["forward"] = _forward(s.forward)
    if s.routes:
        out["routes"] = [_route(r) for r in s.routes]
    return out


def _forward(f: ForwardSpec) -> dict[str, Any]:
    """ServerSpec.forward (proxy/forward.py), defaults left out."""
    default = ForwardSpec()
    out: dict[str, Any] = {}
    if f.connect_ports != default.connect_ports:
        out["connect_ports"] = _FlowList(f.connect_ports)
    for key in ("anonymity", "user_agent", "allow_private", "deny_status", "keepalive"):
        _put(out, key, getattr(f, key), getattr(default, key))
    if f.auth is not None:
        out["auth"] = _Flow(realm=f.auth.realm, user_file=f.auth.user_file)
    if f.destinations:
        out["destinations"] = [_Flow({r.action: r.value}) for r in f.destinations]
    if f.access:
        out["access"] = [_access_rule(rule) for rule in f.access]
    _limits(out, f, default)
    if f.cache is not None:
        out["cache"] = _cache(f.cache)
    for key in (
        "resolve_timeout",
        "connect_timeout",
        "read_timeout",
        "send_timeout",
        "keepalive_timeout",
    ):
        if getattr(f, key) != getattr(default, key):
            out[key] = _duration(getattr(f, key))
    if f.pac is not None:
        pac: dict[str, Any] = {}
        pac_default = PacSpec()
        for key in ("path", "file", "proxy"):
            _put(pac, key, getattr(f.pac, key), getattr(pac_default, key))
        if f.pac.direct != pac_default.direct:
            pac["direct"] = list(f.pac.direct)
        out["pac"] = pac
    return out


def _cluster(c: ClusterSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"url": c.url}
    default = ClusterSpec(url="")
    keys = ("password", "password_file", "username", "tls_ca", "tls_verify", "prefix", "health")
    for key in keys:
        _put(out, key, getattr(c, key), getattr(default, key))
    if c.timeout != default.timeout:
        out["timeout"] = _duration(c.timeout)
    if c.cache_max_object != default.cache_max_object:
        out["cache_max_object"] = _size(c.cache_max_object)
    if c.lease_ttl != default.lease_ttl:
        out["lease_ttl"] = _duration(c.lease_ttl)
    return out


def _admin(a: AdminSpec) -> _Flow:
    out = _Flow(listen=a.address)
    _put(out, "token", a.token, None)
    _put(out, "token_file", a.token_file, None)
    return out


def _real_ip(r: RealIpSpec) -> _Flow:
    out = _Flow(trusted=_FlowList(r.trusted))
    _put(out, "header", r.header, "X-Forwarded-For")
    _put(out, "recursive", r.recursive, False)
    return out


def _listen(spec: ListenSpec) -> object:
    if spec.tls is not None:
        out: dict[str, Any] = {"address": spec.address}
        _put(out, "default_server", spec.default_server, False)
        _put(out, "proxy_protocol", spec.proxy_protocol, False)
        _put(out, "http2", spec.tls.http2, _TLS.http2)
        out["tls"] = _tls(spec.tls)
        return out
    if spec.proxy_protocol:
        out = _Flow(address=spec.address, proxy_protocol=True)
        _put(out, "default_server", spec.default_server, False)
        return out
    if spec.default_server:
        return _Flow(address=spec.address, default_server=True)
    return spec.address


def _route(r: RouteSpec, outer: RouteSpec = _ROUTE) -> dict[str, Any]:
    """`outer`: the route this one is nested in, whose access rules, deny_* and
    auth_basic it would inherit (native.py's _Inherited): only differences are written,
    as `[]` / `off` where it has none."""
    out: dict[str, Any] = {"path": r.path}
    _put(out, "match", r.match, _ROUTE.match)
    _put(out, "upstream", r.upstream, None)
    _put(out, "upstream_uri", r.upstream_uri, None)
    _put(out, "upstream_url", r.upstream_url, None)
    _put(out, "http_version", r.http_version, _ROUTE.http_version)
    _put(out, "host_header", r.host_header, _ROUTE.host_header)
    if r.set_headers:
        out["set_headers"] = dict(r.set_headers)
    _put(out, "forwarded_headers", r.forwarded_headers, _ROUTE.forwarded_headers)
    _put(out, "pass_upgrade", r.pass_upgrade, _ROUTE.pass_upgrade)
    for key, value, default in (
        ("connect_timeout", r.connect_timeout, _ROUTE.connect_timeout),
        ("read_timeout", r.read_timeout, _ROUTE.read_timeout),
        ("send_timeout", r.send_timeout, _ROUTE.send_timeout),
    ):
        if value != default:
            out[key] = _duration(value)
    _put(out, "next_upstream_tries", r.next_upstream_tries, _ROUTE.next_upstream_tries)
    if r.next_upstream != _ROUTE.next_upstream:
        out["next_upstream"] = list(r.next_upstream)
    if r.next_upstream_timeout != _ROUTE.next_upstream_timeout:
        out["next_upstream_timeout"] = _duration(r.next_upstream_timeout)
    _put(out, "retry_idempotency_key", r.retry_idempotency_key, _ROUTE.retry_idempotency_key)
    _put(out, "debug_header", r.debug_header, _ROUTE.debug_header)
    if r.client_max_body_size != _ROUTE.client_max_body_size:
        out["client_max_body_size"] = _size(r.client_max_body_size)
    _put(out, "default_type", r.default_type, _ROUTE.default_type)
    # Field names on one line: nginx.conf's translations carry nginx's eight hidden ones.
    if r.hide_headers:
        out["hide_headers"] = _FlowList(r.hide_headers)
    if r.pass_headers:
        out["pass_headers"] = _FlowList(r.pass_headers)
    if r.add_headers:
        out["add_headers"] = [_header(h) for h in r.add_headers]
    if r.script:
        out["script"] = [_step(step) for step in r.script]
    if r.cache is not None:
        out["cache"] = _cache(r.cache)
    if r.upstream_tls is not None:
        out["upstream_tls"] = _upstream_tls(r.upstream_tls)
    _content(out, r)
    _limits(out, r, _ROUTE)
    _protection(out, r, outer)
    if r.routes:
        out["routes"] = [_route(inner, r) for inner in r.routes]
    return out


# ---- TLS (tls/) ----

_TLS = TlsSpec(certificates=())
_UPSTREAM_TLS = UpstreamTlsSpec()


def _tls(t: TlsSpec) -> dict[str, Any]:
    certs = []
    for c in t.certificates:
        cert = _Flow(cert=c.cert, key=c.key)
        if c.names:
            cert["names"] = _FlowList(c.names)
        certs.append(cert)
    out: dict[str, Any] = {"certificates": certs}
    if t.protocols != _TLS.protocols:
        out["protocols"] = _FlowList(t.protocols)
    _put(out, "ciphers", t.ciphers, _TLS.ciphers)
    _put(out, "prefer_server_ciphers", t.prefer_server_ciphers, _TLS.prefer_server_ciphers)
    _put(out, "verify_client", t.verify_client, _TLS.verify_client)
    _put(out, "client_ca", t.client_ca, None)
    _put(out, "session_tickets", t.session_tickets, _TLS.session_tickets)
    _put(out, "hsts", t.hsts, _TLS.hsts)
    return out


def _upstream_tls(t: UpstreamTlsSpec) -> object:
    out: dict[str, Any] = {}
    for key in ("verify", "trusted_ca", "server_name", "name", "cert", "key", "ciphers"):
        _put(out, key, getattr(t, key), getattr(_UPSTREAM_TLS, key))
    if t.protocols != _UPSTREAM_TLS.protocols:
        out["protocols"] = _FlowList(t.protocols)
    return out or True


def _protection(out: dict[str, Any], r: RouteSpec, outer: RouteSpec) -> None:
    if r.access != outer.access:
        out["access"] = [_access_rule(rule) for rule in r.access]
    _put(out, "deny_status", r.deny_status, outer.deny_status)
    _put(out, "deny_body", r.deny_body, outer.deny_body)
    if r.auth_basic != outer.auth_basic:
        auth = r.auth_basic
        out["auth_basic"] = (
            "off" if auth is None else _Flow(realm=auth.realm, user_file=auth.user_file)
        )


def _access_rule(rule: AccessRule) -> _Flow:
    # `deny: 10.0.0.0/8` for one address, a list for several.
    out = _Flow({rule.action: _one_or_list(rule.addresses)})
    for key, values in (
        ("user_agent", rule.user_agents),
        ("methods", rule.methods),
        ("paths", rule.paths),
        ("days", rule.days),
        ("times", rule.times),
    ):
        if values:
            out[key] = _one_or_list(values)
    _put(out, "timezone", rule.timezone, "UTC")
    _put(out, "name", rule.name, "")
    return out


def _one_or_list(values: tuple[str, ...]) -> object:
    return values[0] if len(values) == 1 else _FlowList(values)


_CACHE_ZONE = CacheZoneSpec(name="")
_CACHE = CacheSpec(zone="")


def _cache_zone(z: CacheZoneSpec) -> _Flow:
    out = _Flow(name=z.name)
    _put(out, "path", z.path, None)
    if z.max_size != _CACHE_ZONE.max_size:
        out["max_size"] = _size(z.max_size)
    if z.memory_size != _CACHE_ZONE.memory_size:
        out["memory_size"] = _size(z.memory_size)
    if z.inactive != _CACHE_ZONE.inactive:
        out["inactive"] = _duration(z.inactive)
    _put(out, "shared", z.shared, False)
    return out


def _cache(c: CacheSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"zone": c.zone}
    _put(out, "key", c.key, _CACHE.key)
    if c.valid:
        out["valid"] = {
            " ".join(str(s) for s in statuses) or "any": _duration(seconds)
            for statuses, seconds in c.valid
        }
    for key, items in (("bypass", c.bypass), ("no_cache", c.no_cache), ("use_stale", c.use_stale)):
        if items:
            out[key] = _FlowList(items)
    _put(out, "lock", c.lock, _CACHE.lock)
    if c.lock_timeout != _CACHE.lock_timeout:
        out["lock_timeout"] = _duration(c.lock_timeout)
    _put(out, "background_update", c.background_update, _CACHE.background_update)
    if c.methods != _CACHE.methods:
        out["methods"] = _FlowList(c.methods)
    _put(out, "min_uses", c.min_uses, _CACHE.min_uses)
    _put(out, "store_set_cookie", c.store_set_cookie, _CACHE.store_set_cookie)
    _put(out, "purge", c.purge, _CACHE.purge)
    _put(out, "status_header", c.status_header, _CACHE.status_header)
    return out


def _header(h: HeaderAdd) -> _Flow:
    out = _Flow(name=h.name, value=h.value)
    _put(out, "always", h.always, False)
    return out


def _content(out: dict[str, Any], r: RouteSpec) -> None:
    """Static files, error pages, proxy_redirect (proxy/static/, error_pages.py,
    redirects.py)."""
    if r.static is not None:
        out["static"] = _static(r.static)
    if r.error_pages:
        out["error_pages"] = [_error_page(p) for p in r.error_pages]
    _put(out, "intercept_errors", r.intercept_errors, _ROUTE.intercept_errors)
    # What goes upstream (proxy/body.py) and the upstream fields ignored.
    _put(out, "upstream_method", r.upstream_method, None)
    _put(out, "upstream_body", r.upstream_body, None)
    _put(out, "pass_request_headers", r.pass_request_headers, _ROUTE.pass_request_headers)
    _put(out, "pass_request_body", r.pass_request_body, _ROUTE.pass_request_body)
    if r.ignore_headers:
        out["ignore_headers"] = _FlowList(r.ignore_headers)
    if r.redirects == ():
        out["redirects"] = "off"
    elif r.redirects is not None:
        out["redirects"] = [_Flow(source=a, target=b) for a, b in r.redirects]


def _static(spec: StaticSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "root", spec.root, None)
    _put(out, "alias", spec.alias, None)
    if spec.index != _STATIC.index:
        out["index"] = _FlowList(spec.index)
    if spec.try_files:
        out["try_files"] = _FlowList(spec.try_files)
    if spec.expires is not None:
        out["expires"] = spec.expires if isinstance(spec.expires, str) else _signed(spec.expires)
    _put(out, "etag", spec.etag, _STATIC.etag)
    if spec.types is not None:
        out["types"] = dict(spec.types)
    _put(out, "default_type", spec.default_type, _STATIC.default_type)
    _put(out, "autoindex", spec.autoindex, _STATIC.autoindex)
    _put(out, "autoindex_exact_size", spec.autoindex_exact_size, _STATIC.autoindex_exact_size)
    _put(out, "autoindex_localtime", spec.autoindex_localtime, _STATIC.autoindex_localtime)
    _put(out, "autoindex_format", spec.autoindex_format, _STATIC.autoindex_format)
    return out


def _signed(seconds: float) -> object:
    return "-" + str(_duration(-seconds)) if seconds < 0 else _duration(seconds)


def _error_page(page: ErrorPageSpec) -> _Flow:
    out = _Flow(codes=_FlowList(page.codes), target=page.target)
    _put(out, "status", page.status, None)
    return out


def _step(step: ScriptStep) -> dict[str, Any]:
    if isinstance(step, BreakSpec):
        return {"break": True}
    if isinstance(step, IfSpec):
        cond: dict[str, Any] = {"operand": step.operand}
        _put(cond, "operator", step.operator, "")
        _put(cond, "value", step.value, "")
        cond["steps"] = [_step(inner) for inner in step.steps]
        return {"if": cond}
    if isinstance(step, SetSpec):
        return {"set": _Flow(variable=step.variable, value=step.value)}
    if isinstance(step, RewriteSpec):
        body = _Flow(pattern=step.pattern, replacement=step.replacement)
        _put(body, "flag", step.flag, "")
        return {"rewrite": body}
    assert isinstance(step, ReturnSpec)
    body = _Flow(status=step.status)
    _put(body, "text", step.text, "")
    return {"return": body}


def _duration(seconds: float) -> object:
    """`1m30s`, `500ms`, ... when the units say exactly `seconds`; else the number."""
    millis = round(seconds * 1000)
    if millis == 0 and seconds == 0:
        return "0s"
    if millis <= 0 or abs(millis - seconds * 1000) > 1e-6:
        return seconds
    parts = []
    for unit, size in _DURATION_UNITS:
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    text = "".join(parts)
    return text if parse_duration(text) == seconds else seconds


def _size(size: int | None) -> object:
    if size is None:
        return None
    for unit, factor in _SIZE_UNITS:
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return size


# ---- rate and connection limits (filters/rate_limit.py, filters/conn_limit.py) ----


_LIMIT_ZONE = LimitZoneSpec(name="", key="", kind="req")


def _limit_zone(z: LimitZoneSpec) -> _Flow:
    out = _Flow(name=z.name, kind=z.kind, key=z.key)
    if z.kind == "req":
        out["rate"] = _rate(z.rate)
    if z.size != _LIMIT_ZONE.size:
        out["size"] = _size(z.size)
    _put(out, "shared", z.shared, False)
    return out


def _rate(rate: float) -> object:
    """`10r/s` or `30r/m` when that is exactly the rate (as native.py reads them)."""
    if rate == int(rate):
        return f"{int(rate)}r/s"
    per_minute = round(rate * 60)
    if per_minute > 0 and per_minute / 60 == rate:
        return f"{per_minute}r/m"
    return rate


def _limits(
    out: dict[str, Any], r: RouteSpec | ForwardSpec, default: RouteSpec | ForwardSpec
) -> None:
    """limit_req and limit_conn, as routes and forward proxies both carry them."""
    if r.limit_req:
        out["limit_req"] = []
        for limit in r.limit_req:
            item = _Flow(zone=limit.zone)
            _put(item, "burst", limit.burst, 0)
            _put(item, "nodelay", limit.nodelay, False)
            _put(item, "delay", limit.delay, 0)
            out["limit_req"].append(item)
    _put(out, "limit_req_status", r.limit_req_status, default.limit_req_status)
    if r.limit_conn:
        out["limit_conn"] = [_Flow(zone=c.zone, limit=c.limit) for c in r.limit_conn]
    _put(out, "limit_conn_status", r.limit_conn_status, default.limit_conn_status)
    if isinstance(r, RouteSpec):
        _put(out, "limit_dry_run", r.limit_dry_run, _ROUTE.limit_dry_run)
