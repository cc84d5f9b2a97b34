"""The CLI's quick forms as a `Config`: `ferryman proxy --listen ... --backends a:1,b:2`
and `ferryman forward --listen 127.0.0.1:3128 ...` (a forward proxy).

Reverse: one upstream named "backends", one server, one route "/". Forward: one
server with a `forward` section. The same schema as a config
file, so the runtime cannot tell the two apart; errors name the flag at fault
(`--backends`) instead of a key path. Knows nothing about argparse or the runtime.
"""

from __future__ import annotations

import math

from ferryman.config.native import ACCESS_LOG_FORMATS, balancer_names
from ferryman.config.schema import (
    FORWARD_ANONYMITY,
    AccessLogSpec,
    Config,
    DestinationRule,
    ForwardSpec,
    ListenSpec,
    PeerSpec,
    ProxyAuthSpec,
    RouteSpec,
    ServerSpec,
    UpstreamSpec,
)
from ferryman.config.units import parse_address
from ferryman.errors import ConfigError
from ferryman.filters.destination import compile_destinations

__all__ = ["UPSTREAM_NAME", "forward_config", "quick_config"]

UPSTREAM_NAME = "backends"
_SOURCE = "<command line>"


def quick_config(
    listen: str,
    backends: list[str],
    *,
    balance: str = "round_robin",
    workers: int = 1,
    access_log: str | None = "-",
    log_format: str = "combined",
    max_fails: int = 1,
    fail_timeout: float = 10.0,
    keepalive: int = 32,
    forwarded_headers: bool = True,
    keepalive_requests: int = 1000,
    worker_connections: int = 1024,
) -> Config:
    """The config for the quick form; `access_log` None (or "off") turns the log off."""
    _check_options(balance, workers, log_format, max_fails, fail_timeout, keepalive)
    peers = tuple(
        PeerSpec(host=host, port=port, max_fails=max_fails, fail_timeout=fail_timeout)
        for host, port in _backends(backends)
    )
    if keepalive_requests < 1:
        raise ConfigError("--keepalive-requests", f"must be >= 1, not {keepalive_requests!r}")
    if worker_connections < 1:
        raise ConfigError("--worker-connections", f"must be >= 1, not {worker_connections!r}")
    upstream = UpstreamSpec(
        name=UPSTREAM_NAME,
        servers=peers,
        balance=balance,
        keepalive=keepalive,
        keepalive_requests=keepalive_requests,
    )
    server = ServerSpec(
        listen=(_listen(listen),),
        routes=(RouteSpec(upstream=UPSTREAM_NAME, forwarded_headers=forwarded_headers),),
    )
    log_path = None if access_log in (None, "off") else access_log
    return Config(
        servers=(server,),
        upstreams=(upstream,),
        workers=workers,
        access_log=AccessLogSpec(path=log_path, format=log_format),
        # One knob for both sides, as the benchmark's nginx sets both.
        keepalive_requests=keepalive_requests,
        worker_connections=worker_connections,
        source=_SOURCE,
    )


def forward_config(
    listen: str,
    *,
    connect_ports: str = "443",
    anonymity: str = "transparent",
    allow_private: bool = False,
    auth_file: str | None = None,
    realm: str = "proxy",
    user_agent: str = "",
    destinations: tuple[tuple[str, str], ...] = (),
    workers: int = 1,
    access_log: str | None = "-",
    log_format: str = "combined",
) -> Config:
    """`ferryman forward`: one forward-proxy server (ForwardSpec) on `listen`.
    `destinations` are (allow|deny, value) in the order the flags were given."""
    _check_options("round_robin", workers, log_format, 1, 10.0, 0)
    if anonymity not in FORWARD_ANONYMITY:
        choices = ", ".join(FORWARD_ANONYMITY)
        raise ConfigError("--anonymity", f"must be one of: {choices}; not {anonymity!r}")
    rules = tuple(DestinationRule(action, value) for action, value in destinations)
    try:
        compile_destinations(rules)
    except ValueError as exc:
        raise ConfigError("--allow-dest/--deny-dest", str(exc)) from None
    forward = ForwardSpec(
        connect_ports=_ports(connect_ports),
        anonymity=anonymity,
        user_agent=user_agent,
        auth=ProxyAuthSpec(realm=realm, user_file=auth_file) if auth_file else None,
        destinations=rules,
        allow_private=allow_private,
    )
    server = ServerSpec(listen=(_listen(listen),), routes=(), forward=forward)
    log_path = None if access_log in (None, "off") else access_log
    return Config(
        servers=(server,),
        upstreams=(),
        workers=workers,
        access_log=AccessLogSpec(path=log_path, format=log_format),
        source=_SOURCE,
    )


def _ports(text: str) -> tuple[int, ...]:
    ports = []
    for part in text.split(","):
        if not (part.isascii() and part.isdigit() and len(part) <= 5) or not (
            0 < int(part) < 65536
        ):
            raise ConfigError("--connect-ports", f"want ports 1-65535, comma separated: {text!r}")
        ports.append(int(part))
    return tuple(dict.fromkeys(ports))


def _check_options(
    balance: str,
    workers: int,
    log_format: str,
    max_fails: int,
    fail_timeout: float,
    keepalive: int,
) -> None:
    known = balancer_names()
    if balance not in known:
        raise ConfigError("--balance", f"must be one of: {', '.join(known)}; not {balance!r}")
    if log_format not in ACCESS_LOG_FORMATS:
        formats = ", ".join(ACCESS_LOG_FORMATS)
        raise ConfigError("--log-format", f"must be one of: {formats}; not {log_format!r}")
    for flag, value, low in (
        ("--workers", workers, 1),
        ("--max-fails", max_fails, 0),
        ("--keepalive", keepalive, 0),
    ):
        if isinstance(value, bool) or value < low:
            raise ConfigError(flag, f"must be an integer >= {low}, not {value!r}")
    if not math.isfinite(fail_timeout) or fail_timeout < 0:
        raise ConfigError("--fail-timeout", f"must be a duration >= 0, not {fail_timeout!r}")


def _listen(text: str) -> ListenSpec:
    try:
        host, port = parse_address(text)
    except ValueError as exc:
        raise ConfigError("--listen", str(exc)) from None
    # A bare port listens on every IPv4 address, as nginx's `listen 8080;` does.
    return ListenSpec(host="0.0.0.0" if host is None else host, port=port)


def _backends(texts: list[str]) -> list[tuple[str, int]]:
    if not texts:
        raise ConfigError("--backends", "give at least one host:port")
    addresses = []
    for text in texts:
        try:
            host, port = parse_address(text)
        except ValueError as exc:
            raise ConfigError("--backends", str(exc)) from None
        if host is None:
            raise ConfigError("--backends", f"{text!r} needs a host (write host:port)")
        addresses.append((host, port))
    return addresses
