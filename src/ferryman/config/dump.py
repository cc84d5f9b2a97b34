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
    ClientTimeouts,
    Config,
    HeaderAdd,
    HealthCheckSpec,
    ListenSpec,
    MapSpec,
    PeerSpec,
    ReturnSpec,
    RewriteSpec,
    RouteSpec,
    ScriptStep,
    ServerSpec,
    SetSpec,
    UpstreamSpec,
)
from ferryman.config.units import parse_duration

__all__ = ["dump_native"]

# Schema defaults, from the dataclasses themselves.
_CONFIG = Config(servers=(), upstreams=())
_UPSTREAM = UpstreamSpec(name="", servers=())
_PEER = PeerSpec(host="", port=1)
_ROUTE = RouteSpec()
_TIMEOUTS = ClientTimeouts()
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
    _put(doc, "pid_file", c.pid_file, None)
    _put(doc, "hosts_file", c.hosts_file, None)
    if c.resolve_interval != _CONFIG.resolve_interval:
        doc["resolve_interval"] = _duration(c.resolve_interval)
    if c.error_log is not None:
        doc["error_log"] = _Flow(path=c.error_log[0], level=c.error_log[1])
    if c.hosts:
        doc["hosts"] = dict(c.hosts)
    if c.client_timeouts != _TIMEOUTS:
        doc["timeouts"] = _timeouts(c.client_timeouts)
    if c.log_formats:
        doc["log_formats"] = dict(c.log_formats)
    if c.access_log != _ACCESS_LOG:
        doc["access_log"] = _access_log(c.access_log)
    if c.maps:
        doc["maps"] = [_map(m) for m in c.maps]
    if c.upstreams:
        doc["upstreams"] = {u.name: _upstream(u) for u in c.upstreams}
    doc["servers"] = [_server(s) for s in c.servers]
    return doc


def _put(doc: dict[str, Any], key: str, value: object, default: object) -> None:
    if value != default:
        doc[key] = value


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
    if s.routes:
        out["routes"] = [_route(r) for r in s.routes]
    return out


def _listen(spec: ListenSpec) -> object:
    if spec.default_server:
        return _Flow(address=spec.address, default_server=True)
    return spec.address


def _route(r: RouteSpec) -> dict[str, Any]:
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
    if r.routes:
        out["routes"] = [_route(inner) for inner in r.routes]
    return out


def _header(h: HeaderAdd) -> _Flow:
    out = _Flow(name=h.name, value=h.value)
    _put(out, "always", h.always, False)
    return out


def _step(step: ScriptStep) -> dict[str, Any]:
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
