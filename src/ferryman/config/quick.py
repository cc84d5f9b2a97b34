"""The CLI's quick form as a `Config`: `ferryman proxy --listen ... --backends a:1,b:2`.

One upstream named "backends", one server, one route "/". The same schema as a config
file, so the runtime cannot tell the two apart; errors name the flag at fault
(`--backends`) instead of a key path. Knows nothing about argparse or the runtime.
"""

from __future__ import annotations

import math

from ferryman.config.native import ACCESS_LOG_FORMATS, balancer_names
from ferryman.config.schema import (
    AccessLogSpec,
    Config,
    ListenSpec,
    PeerSpec,
    RouteSpec,
    ServerSpec,
    UpstreamSpec,
)
from ferryman.config.units import parse_address
from ferryman.errors import ConfigError

__all__ = ["UPSTREAM_NAME", "quick_config"]

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
) -> Config:
    """The config for the quick form; `access_log` None (or "off") turns the log off."""
    _check_options(balance, workers, log_format, max_fails, fail_timeout, keepalive)
    peers = tuple(
        PeerSpec(host=host, port=port, max_fails=max_fails, fail_timeout=fail_timeout)
        for host, port in _backends(backends)
    )
    if keepalive_requests < 1:
        raise ConfigError("--keepalive-requests", f"must be >= 1, not {keepalive_requests!r}")
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
        source=_SOURCE,
    )


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
