"""The one configuration model. Every front end (native YAML, nginx.conf, the CLI's quick
flags) produces these frozen objects; the runtime never sees a dict.

Defaults follow nginx where nginx has one, so that a translated nginx.conf and a native
file with the same intent behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "AccessLogSpec",
    "ClientTimeouts",
    "Config",
    "ListenSpec",
    "PeerSpec",
    "RouteSpec",
    "ServerSpec",
    "UpstreamSpec",
]


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """One `server` line of an upstream. `host` may be a name; it is resolved at start."""

    host: str
    port: int
    weight: int = 1
    # nginx defaults: max_fails=1 fail_timeout=10s (ngx_http_upstream_server).
    max_fails: int = 1
    fail_timeout: float = 10.0
    backup: bool = False
    down: bool = False

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    name: str
    servers: tuple[PeerSpec, ...]
    balance: str = "round_robin"
    # Idle kept-alive connections cached per peer in each worker. nginx's `keepalive N`
    # is per worker for the whole group; per peer is easier to reason about and never
    # starves one peer's connections because another is busy.
    keepalive: int = 32
    keepalive_timeout: float = 60.0
    keepalive_requests: int = 1000


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A `location`: requests whose path starts with `path` go to `upstream`."""

    upstream: str
    path: str = "/"
    # Template for the Host sent upstream; `$host` is the client's (nginx: `$proxy_host`
    # by default, but the reference config and most users set `$host`).
    host_header: str = "$host"
    # Extra request headers (name, template); an empty value removes the header, as in
    # nginx's proxy_set_header.
    set_headers: tuple[tuple[str, str], ...] = ()
    connect_timeout: float = 60.0
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    # How many peers one request may try; 0 means every peer once (nginx's default).
    next_upstream_tries: int = 0
    # Add X-Forwarded-For/-Proto/-Host (the common nginx recipe).
    forwarded_headers: bool = True


@dataclass(frozen=True, slots=True)
class ListenSpec:
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    listen: tuple[ListenSpec, ...]
    routes: tuple[RouteSpec, ...]
    server_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    # nginx: client_header_timeout 60s, client_body_timeout 60s, keepalive_timeout 75s.
    header: float = 60.0
    body: float = 60.0
    keepalive: float = 75.0
    # nginx: send_timeout 60s (between two successive writes to the client).
    send: float = 60.0


@dataclass(frozen=True, slots=True)
class AccessLogSpec:
    """`path` None means off; "-" means standard output."""

    path: str | None = "-"
    format: str = "combined"


@dataclass(frozen=True, slots=True)
class Config:
    servers: tuple[ServerSpec, ...]
    upstreams: tuple[UpstreamSpec, ...]
    workers: int = 1
    worker_connections: int = 1024
    client_timeouts: ClientTimeouts = field(default_factory=ClientTimeouts)
    access_log: AccessLogSpec = field(default_factory=AccessLogSpec)
    # Name -> address overrides applied before the system resolver (Docker's --add-host).
    hosts: tuple[tuple[str, str], ...] = ()
    source: str = "<memory>"

    def upstream(self, name: str) -> UpstreamSpec:
        for u in self.upstreams:
            if u.name == name:
                return u
        raise KeyError(name)
