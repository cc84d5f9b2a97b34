"""The translation's working state: what the directives of a file have said so far, before
it becomes frozen `Config` objects (`freeze.py`).

Owns nginx's configuration levels: `Level` is one level of the location configuration
(http, server, location), where an inner level replaces what it sets and inherits the
rest; `Scope` is where the walker stands (context, the drafts it fills, the directives
already seen there). Mutable on purpose and private to the nginx front end; nothing
outside it ever sees a draft.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ferryman.config.nginx.syntax import Stmt
from ferryman.config.nginx.values import ProxyTarget, ProxyTemplate
from ferryman.config.schema import (
    AccessLogSpec,
    CacheZoneSpec,
    ClientLimits,
    LimitZoneSpec,
    ListenSpec,
    MapSpec,
    PeerSpec,
    ScriptStep,
)

__all__ = [
    "ConfigDraft",
    "Context",
    "Level",
    "LocationDraft",
    "Scope",
    "ServerDraft",
    "UpstreamDraft",
]


class Context(enum.Enum):
    """The blocks a directive can sit in (nginx's NGX_*_CONF masks)."""

    MAIN = "main"
    EVENTS = "events"
    HTTP = "http"
    SERVER = "server"
    LOCATION = "location"
    UPSTREAM = "upstream"


@dataclass(eq=False)
class Level:
    """One level of nginx's location configuration: http, a server, or a location.

    `values` holds what a single-valued directive set here (`proxy_read_timeout`), by
    directive name; an inner level inherits it unless it sets its own. `arrays` holds
    the list directives (`proxy_set_header`, `add_header`, `proxy_hide_header`,
    `proxy_pass_header`) with nginx's array rule: an inner level inherits the outer list
    whole, and only if it has none of that directive itself.
    """

    parent: Level | None = None
    values: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, list[Any]] = field(default_factory=dict)

    def value(self, name: str, default: Any) -> Any:
        level: Level | None = self
        while level is not None:
            if name in level.values:
                return level.values[name]
            level = level.parent
        return default

    def array(self, name: str) -> list[Any]:
        level: Level | None = self
        while level is not None:
            if name in level.arrays:
                return level.arrays[name]
            level = level.parent
        return []

    def append(self, name: str, item: Any) -> None:
        self.arrays.setdefault(name, []).append(item)

    def child(self) -> Level:
        return Level(parent=self)


@dataclass(eq=False)
class LocationDraft:
    stmt: Stmt
    match: str
    path: str
    level: Level
    proxy: tuple[ProxyTarget | ProxyTemplate, Stmt] | None = None
    script: list[ScriptStep] = field(default_factory=list)
    locations: list[LocationDraft] = field(default_factory=list)


@dataclass(eq=False)
class ServerDraft:
    stmt: Stmt
    level: Level
    listens: list[tuple[ListenSpec, Stmt]] = field(default_factory=list)
    names: list[tuple[str, Stmt]] = field(default_factory=list)
    script: list[ScriptStep] = field(default_factory=list)
    locations: list[LocationDraft] = field(default_factory=list)


@dataclass(eq=False)
class UpstreamDraft:
    stmt: Stmt
    name: str
    peers: list[PeerSpec] = field(default_factory=list)
    balance: str = "round_robin"
    balance_stmt: Stmt | None = None
    # The balancing method's options (UpstreamSpec's fields of the same names).
    hash_key: str = ""
    consistent: bool = False
    random_two: bool = False
    random_method: str = ""
    least_time: str = "header"
    # The first `server ... backup`, refused if a method without backups comes later.
    backup_stmt: Stmt | None = None
    # nginx keeps no idle upstream connections unless the block says `keepalive N`.
    keepalive: int = 0
    keepalive_timeout: float = 60.0
    keepalive_requests: int = 1000
    queue: int = 0
    queue_timeout: float = 60.0


@dataclass(eq=False)
class ConfigDraft:
    source: str
    # Relative paths (include, logs, pid) are taken relative to this directory.
    base_dir: str
    lenient: bool
    # `ferryman nginx -p PREFIX`: nginx's rule, where runtime files (pid, error_log,
    # access_log, proxy_cache_path) resolve against the prefix and configuration files
    # (include, certificates, user files) against the main file's directory. None
    # (`ferryman run`): everything resolves against `base_dir`.
    prefix: str | None = None
    # `daemon on|off`; None: not said (each command picks its default, nginx's is on).
    daemon: bool | None = None
    workers: int = 1
    # nginx's default worker_connections is 512 (ngx_event_core_init_conf).
    worker_connections: int = 512
    events: Stmt | None = None
    error_log: tuple[tuple[str, str], Stmt] | None = None
    pid_file: str | None = None
    # worker_shutdown_timeout (None: the schema's default; nginx's own is unlimited).
    shutdown_timeout: float | None = None
    servers: list[ServerDraft] = field(default_factory=list)
    upstreams: list[UpstreamDraft] = field(default_factory=list)
    maps: list[tuple[MapSpec, Stmt]] = field(default_factory=list)
    log_formats: list[tuple[str, str]] = field(default_factory=list)
    access_log: AccessLogSpec | None = None
    client_timeouts: dict[str, float] = field(default_factory=dict)
    # keepalive_requests (client side; nginx's default 1000).
    keepalive_requests: int = 1000
    # keepalive_timeout's second parameter: `Keep-Alive: timeout=N` (0: none).
    keepalive_header: int = 0
    # large_client_header_buffers (None: the schema's defaults).
    client_limits: ClientLimits | None = None
    # proxy_cache_path zones, with the statement that defined each.
    cache_zones: list[tuple[CacheZoneSpec, Stmt]] = field(default_factory=list)
    # limit_req_zone / limit_conn_zone zones, with the statement that defined each.
    limit_zones: list[tuple[LimitZoneSpec, Stmt]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Files already parsed (an `include` in every location reads its file once), and
    # the chain of includes being translated, to refuse a cycle.
    parsed: dict[str, tuple[Stmt, ...]] = field(default_factory=dict)
    including: list[str] = field(default_factory=list)

    @property
    def runtime_dir(self) -> str:
        """Where relative paths of files the server writes (pid, logs, cache) resolve."""
        return self.prefix if self.prefix is not None else self.base_dir

    def warn(self, stmt: Stmt, message: str) -> None:
        self.warnings.append(f"{stmt.where}: {message}")


Walk = Callable[[Sequence[Stmt], "Scope"], None]


@dataclass(eq=False)
class Scope:
    """Where the walker stands: the block's context and the drafts its directives fill."""

    context: Context
    config: ConfigDraft
    walk: Walk
    level: Level | None = None
    server: ServerDraft | None = None
    location: LocationDraft | None = None
    upstream: UpstreamDraft | None = None
    # Single-valued directives already seen in this block ("is duplicate").
    seen: set[str] = field(default_factory=set)

    def inner(self, context: Context, **drafts: Any) -> Scope:
        """The scope of a block opened here; drafts not given are carried over."""
        return replace(self, context=context, seen=set(), **drafts)

    # The directive table guarantees the context, so a missing draft is our bug.
    def the_level(self) -> Level:
        assert self.level is not None, f"no level in {self.context}"
        return self.level

    def the_server(self) -> ServerDraft:
        assert self.server is not None, f"no server in {self.context}"
        return self.server

    def the_location(self) -> LocationDraft:
        assert self.location is not None, f"no location in {self.context}"
        return self.location

    def the_upstream(self) -> UpstreamDraft:
        assert self.upstream is not None, f"no upstream in {self.context}"
        return self.upstream

    def script(self) -> list[ScriptStep]:
        """The rewrite-module steps of this block (server or location)."""
        if self.context is Context.LOCATION:
            return self.the_location().script
        return self.the_server().script
