"""The native YAML front end: text -> `Config`, validated once, every error with a path.

Owns the YAML dialect (a strict subset, see `_Loader`) and the mapping from native keys
onto `config/schema.py`. Errors name the file and key path, e.g.
`demo.yaml: upstreams.echo.servers[2].weight`, or `demo.yaml:7` for YAML syntax.
Knows nothing about sockets, the runtime, or nginx.conf.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml
import yaml.constructor
import yaml.nodes
import yaml.reader

from ferryman.cluster.url import parse_redis_url
from ferryman.config.schema import (
    CACHE_USE_STALE,
    FORWARD_ANONYMITY,
    IF_OPERATORS,
    IGNORABLE_HEADERS,
    MATCH_KINDS,
    TLS_PROTOCOLS,
    AccessLogSpec,
    AccessRule,
    AdminSpec,
    AuthBasicSpec,
    BreakSpec,
    CacheSpec,
    CacheZoneSpec,
    ClientLimits,
    ClientTimeouts,
    ClusterSpec,
    Config,
    DestinationRule,
    ErrorPageSpec,
    ForwardSpec,
    HeaderAdd,
    HealthCheckSpec,
    IfSpec,
    LimitConnSpec,
    LimitReqSpec,
    LimitZoneSpec,
    ListenSpec,
    MapSpec,
    PacSpec,
    PeerSpec,
    ProxyAuthSpec,
    RealIpSpec,
    ReturnSpec,
    RewriteSpec,
    RouteSpec,
    ScriptStep,
    ServerSpec,
    SetSpec,
    StaticSpec,
    TlsCertificate,
    TlsSpec,
    TraceSpec,
    UpstreamSpec,
    UpstreamTlsSpec,
)
from ferryman.config.units import (
    parse_address,
    parse_duration,
    parse_host_name,
    parse_ip,
    parse_size,
)
from ferryman.errors import ConfigError
from ferryman.filters.destination import compile_destinations
from ferryman.filters.real_ip import HEADERS as REAL_IP_HEADERS
from ferryman.filters.real_ip import parse_network

__all__ = [
    "ACCESS_LOG_FORMATS",
    "ERROR_LOG_LEVELS",
    "HTTP_VERSIONS",
    "LEAST_TIME_MEASURES",
    "RANDOM_METHODS",
    "REWRITE_FLAGS",
    "balancer_names",
    "check_regex",
    "load_native",
]

ACCESS_LOG_FORMATS = ("combined", "json")
_FALLBACK_BALANCERS = ("round_robin", "least_conn")

# nginx takes any positive weight; 1000 is our own cap, far above any sane ratio, so
# that a stray extra digit is caught at load rather than starving the other peers.
_MAX_WEIGHT = 1000
_MAX_COUNT = 1_000_000
# A name usable in a key path and as `proxy_pass http://<name>` in nginx terms; `:` and
# brackets for the implicit groups nginx.conf's `proxy_pass http://host:port` makes,
# named `host:port` or `[v6]:port` as nginx's $proxy_host shows them.
_UPSTREAM_NAME = re.compile(r"[A-Za-z0-9_\[][A-Za-z0-9_.:\[\]-]{0,99}")
# RFC 9110 section 5.1: a field name is a token.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 section 5.5: no CR, LF or NUL (or other controls but tab) in a field value.
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
# A location path: printable, spaces and non-ASCII allowed (paths are matched decoded).
_ROUTE_PATH = re.compile(r"/[^\x00-\x1f\x7f]*")
# A URL template: printable ASCII, as in a request line (RFC 9112 section 3.2).
_URL_TEXT = re.compile(r"[\x21-\x7e]+")
_NAMED_ROUTE = re.compile(r"@[\x21-\x7e]+")
_SERVER_NAME = re.compile(r"[\x21-\x7e]+")
_FILE_PATH = re.compile(r"[^\x00-\x1f\x7f]+")
_ANY_TEXT = re.compile(r".*", re.DOTALL)
_VARIABLE_NAME = re.compile(r"[A-Za-z0-9_]+")
_LOG_FORMAT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")

HTTP_VERSIONS = ("1.0", "1.1")
REWRITE_FLAGS = ("", "last", "break", "redirect", "permanent")
# nginx's error_log levels, least severe first.
ERROR_LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
# `return` statuses: HTTP's range, and nginx's 444 (close the connection, no answer).
_CLOSE_WITHOUT_ANSWER = 444

# Schema defaults, read from the dataclasses so that there is one source of truth.
_CONFIG = Config(servers=(), upstreams=())
_UPSTREAM = UpstreamSpec(name="", servers=())
_PEER = PeerSpec(host="", port=1)
_ROUTE = RouteSpec(upstream="")
_TIMEOUTS = ClientTimeouts()
_ACCESS_LOG = AccessLogSpec()
_REAL_IP = RealIpSpec(trusted=())
_ADMIN = AdminSpec()


class _Loader(yaml.SafeLoader):
    """YAML 1.2 core scalars instead of PyYAML's YAML 1.1 ones.

    YAML 1.1 turns `yes`/`no`/`on`/`off` into booleans (so `access_log: off` would be
    False), `010` into 8, `+5` and `1_0` into ints, `1:30` into 90 and dates into
    `datetime.date`. Here only true/false are booleans and only plain ASCII decimals
    are numbers; everything else stays a string and is judged by the key that reads it.
    Duplicate keys are errors rather than silently keeping the last one.
    """

    def construct_mapping(
        self, node: yaml.nodes.MappingNode, deep: bool = False
    ) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.nodes.ScalarNode) or key_node.value == "<<":
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


# (tag, pattern, possible first characters). At most 18 digits: longer digit strings
# stay strings (and fail the key's type check) instead of reaching int()'s digit limit.
_CORE_SCALARS = (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:0|-?[1-9][0-9]{0,17})$", list("-0123456789")),
    ("tag:yaml.org,2002:float", r"^-?(?:0|[1-9][0-9]{0,17})\.[0-9]{1,18}$", list("-0123456789")),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", ["<"]),
)
# Replace (not extend) SafeLoader's YAML 1.1 table; add_implicit_resolver then writes
# into this class's own dict, leaving yaml.SafeLoader untouched.
_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in _CORE_SCALARS:
    _Loader.add_implicit_resolver(_tag, re.compile(_pattern), _first)


def load_native(text: str, source: str) -> Config:
    """Parse and validate a native YAML configuration; `source` prefixes every error."""
    data = _parse_yaml(text, source)
    if data is None:
        raise ConfigError(source, "the file is empty (expected `upstreams` and `servers`)")
    return _config(data, _Path(source))


def balancer_names() -> tuple[str, ...]:
    """Names `balance` may take: the registry's if it exists, else the two built-ins."""
    try:
        # Imported lazily: balancing/ is built separately and must not be a hard
        # dependency of loading a file.
        registry = importlib.import_module("ferryman.balancing.registry")
    except ModuleNotFoundError as exc:
        if exc.name not in ("ferryman.balancing.registry", "ferryman.balancing"):
            raise  # the registry exists but is broken: say so, don't hide it
        return _FALLBACK_BALANCERS
    return tuple(str(name) for name in registry.known_balancers())


def check_regex(pattern: str, *, icase: bool = False) -> None:
    """Raise ValueError (with `re`'s reason) unless `pattern` compiles with Python's `re`,
    which is what runs every regex of a configuration."""
    try:
        re.compile(pattern, re.IGNORECASE if icase else 0)
    except re.error as exc:
        raise ValueError(str(exc)) from None
    except (RecursionError, OverflowError):
        raise ValueError("the pattern is too complex") from None


def _parse_yaml(text: str, source: str) -> object:
    try:
        # _Loader is a SafeLoader subclass: no Python objects are ever constructed.
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if mark is None:
            raise ConfigError(source, f"invalid YAML: {problem}") from None
        column = f" (column {mark.column + 1})"
        raise ConfigError(f"{source}:{mark.line + 1}", f"invalid YAML: {problem}{column}") from None
    except yaml.reader.ReaderError as exc:
        # A control or non-printable character; it has a character offset, not a mark.
        line = text.count("\n", 0, exc.position) + 1
        char = f" (U+{exc.character:04X})" if isinstance(exc.character, int) else ""
        raise ConfigError(f"{source}:{line}", f"invalid YAML: {exc.reason}{char}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, f"invalid YAML: {exc}") from None


# --- paths and typed reads ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Path:
    """Where a value sits: the file and the key path down to it."""

    source: str
    parts: tuple[str, ...] = ()

    def key(self, name: str) -> _Path:
        return _Path(self.source, (*self.parts, name))

    def index(self, i: int) -> _Path:
        return _Path(self.source, (*self.parts[:-1], f"{self.parts[-1]}[{i}]"))

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else "the top level"

    def error(self, reason: str) -> ConfigError:
        where = f"{self.source}: {'.'.join(self.parts)}" if self.parts else self.source
        return ConfigError(where, reason)


@dataclass(frozen=True, slots=True)
class _Section:
    """A mapping whose keys have been checked; reads optional keys with their defaults."""

    path: _Path
    values: Mapping[str, object]

    def has(self, key: str) -> bool:
        return key in self.values

    def at(self, key: str) -> tuple[object, _Path]:
        return self.values[key], self.path.key(key)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        return _integer(*self.at(key), low, high) if self.has(key) else default

    def boolean(self, key: str, default: bool) -> bool:
        return _boolean(*self.at(key)) if self.has(key) else default

    def duration(self, key: str, default: float, *, positive: bool = False) -> float:
        return _duration(*self.at(key), positive) if self.has(key) else default

    def text(self, key: str, default: str, pattern: re.Pattern[str]) -> str:
        return _text(*self.at(key), pattern) if self.has(key) else default


def _section(
    value: object, path: _Path, allowed: Iterable[str], required: Iterable[str] = ()
) -> _Section:
    mapping = _string_keys(value, path)
    expected = sorted(allowed)
    for key in mapping:
        if key not in expected:
            raise path.key(key).error(f"unknown key (expected one of: {', '.join(expected)})")
    for key in required:
        if key not in mapping:
            raise path.error(f"missing required key {key!r}")
    return _Section(path, mapping)


def _string_keys(value: object, path: _Path) -> dict[str, object]:
    if not isinstance(value, dict):
        raise path.error(f"{path.name} must be a mapping, not {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise path.key(str(key)).error(f"keys must be strings, not {_kind(key)}")
    return value


def _items(value: object, path: _Path, *, allow_single: bool = False) -> list[object]:
    if allow_single and isinstance(value, str | int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list):
        raise path.error(f"{path.name} must be a list, not {_kind(value)}")
    if not value:
        raise path.error(f"{path.name} must not be empty")
    return value


def _integer(value: object, path: _Path, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise path.error(f"{path.name} must be an integer from {low} to {high}, not {value!r}")
    return value


def _boolean(value: object, path: _Path) -> bool:
    if not isinstance(value, bool):
        raise path.error(f"{path.name} must be true or false, not {value!r}")
    return value


def _duration(value: object, path: _Path, positive: bool) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise path.error(f"{path.name}: {exc}") from None
    if positive and seconds <= 0:
        raise path.error(f"{path.name} must be longer than 0, not {value!r}")
    return seconds


def _text(value: object, path: _Path, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str):
        raise path.error(f"{path.name} must be a string, not {_kind(value)} (quote it)")
    if not pattern.fullmatch(value):
        raise path.error(f"{path.name} has an invalid value {value!r}")
    return value


def _choice(value: object, path: _Path, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise path.error(f"{path.name} must be one of: {', '.join(choices)}; not {value!r}")
    return value


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# --- the document ------------------------------------------------------------------

_TOP_KEYS = (
    "access_log",
    "admin",
    "cache_zones",
    "client_limits",
    "cluster",
    "daemon",
    "error_log",
    "hosts",
    "keepalive_header",
    "keepalive_requests",
    "limit_zones",
    "log_formats",
    "maps",
    "max_connections",
    "pid_file",
    "hosts_file",
    "resolve_interval",
    "servers",
    "timeouts",
    "trace",
    "upstreams",
    "worker_connections",
    "worker_shutdown_timeout",
    "workers",
)


def _config(data: object, path: _Path) -> Config:
    top = _section(data, path, _TOP_KEYS, required=("servers",))
    upstreams = _upstreams(*top.at("upstreams")) if top.has("upstreams") else ()
    names = {u.name for u in upstreams}
    log_formats = _log_formats(*top.at("log_formats")) if top.has("log_formats") else ()
    formats = (*ACCESS_LOG_FORMATS, *(name for name, _ in log_formats))
    cache_zones = _cache_zones(*top.at("cache_zones")) if top.has("cache_zones") else ()
    servers = _servers(*top.at("servers"), names)
    _check_cache_zones(servers, {z.name for z in cache_zones}, path.key("servers"))
    limit_zones = _limit_zones(*top.at("limit_zones")) if top.has("limit_zones") else ()
    _check_limit_zones(servers, limit_zones, path.key("servers"))
    cluster = _cluster(*top.at("cluster")) if top.has("cluster") else None
    _check_shared_zones(top, cache_zones, limit_zones, cluster)
    return Config(
        servers=servers,
        upstreams=upstreams,
        cache_zones=cache_zones,
        limit_zones=limit_zones,
        workers=_workers(*top.at("workers")) if top.has("workers") else _CONFIG.workers,
        worker_connections=top.integer(
            "worker_connections", _CONFIG.worker_connections, 1, _MAX_COUNT
        ),
        # Across all workers; 0 turns the global cap off.
        max_connections=top.integer("max_connections", _CONFIG.max_connections, 0, _MAX_COUNT),
        client_timeouts=_timeouts(*top.at("timeouts")) if top.has("timeouts") else _TIMEOUTS,
        client_limits=(
            _client_limits(*top.at("client_limits")) if top.has("client_limits") else _LIMITS
        ),
        access_log=(
            _access_log(*top.at("access_log"), formats) if top.has("access_log") else _ACCESS_LOG
        ),
        hosts=_hosts(*top.at("hosts")) if top.has("hosts") else (),
        # Client connections: close after this many requests (0: no limit here).
        keepalive_requests=top.integer(
            "keepalive_requests", _CONFIG.keepalive_requests, 0, _MAX_COUNT
        ),
        keepalive_header=top.integer("keepalive_header", _CONFIG.keepalive_header, 0, 86400),
        maps=_maps(*top.at("maps")) if top.has("maps") else (),
        pid_file=_optional_path(*top.at("pid_file")) if top.has("pid_file") else None,
        hosts_file=_optional_path(*top.at("hosts_file")) if top.has("hosts_file") else None,
        resolve_interval=top.duration("resolve_interval", _CONFIG.resolve_interval, positive=True),
        worker_shutdown_timeout=top.duration(
            "worker_shutdown_timeout", _CONFIG.worker_shutdown_timeout, positive=True
        ),
        error_log=_error_log(*top.at("error_log")) if top.has("error_log") else None,
        # nginx `daemon on|off` (workers.py detaches); absent: the command's default.
        daemon=_boolean(*top.at("daemon")) if top.has("daemon") else None,
        log_formats=log_formats,
        admin=_admin(*top.at("admin")) if top.has("admin") else None,
        trace=_trace(*top.at("trace")) if top.has("trace") else None,
        cluster=cluster,
        source=path.source,
    )


_CLUSTER_KEYS = (
    "cache_max_object",
    "health",
    "lease_ttl",
    "password",
    "password_file",
    "prefix",
    "timeout",
    "tls_ca",
    "tls_verify",
    "url",
    "username",
)
_CLUSTER = ClusterSpec(url="")
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _cluster(value: object, path: _Path) -> ClusterSpec:
    """The Redis shared by a cluster of instances (cluster/, docs/cluster.md)."""
    section = _section(value, path, _CLUSTER_KEYS, required=("url",))
    url, at = section.at("url")
    if not isinstance(url, str):
        raise at.error(f"url must be a string, not {_kind(url)}")
    try:
        parse_redis_url(url)
    except ValueError as exc:
        raise at.error(f"url: {exc}") from None
    password = _optional_text(section, "password")
    password_file = None
    if section.has("password_file"):
        if password is not None:
            raise path.key("password_file").error("give password or password_file, not both")
        password_file = _text(*section.at("password_file"), _FILE_PATH)
        _read_secret(password_file, path.key("password_file"))  # readable now, read again at start
    timeout = section.duration("timeout", _CLUSTER.timeout, positive=True)
    if timeout > 5:
        raise path.key("timeout").error("timeout is on every request's path: at most 5s")
    return ClusterSpec(
        url=url,
        password=password,
        password_file=password_file,
        username=_optional_text(section, "username"),
        tls_ca=_optional_path(*section.at("tls_ca")) if section.has("tls_ca") else None,
        tls_verify=section.boolean("tls_verify", _CLUSTER.tls_verify),
        timeout=timeout,
        prefix=section.text("prefix", _CLUSTER.prefix, _PREFIX),
        health=section.boolean("health", _CLUSTER.health),
        cache_max_object=_cache_size(section, "cache_max_object", _CLUSTER.cache_max_object),
        lease_ttl=section.duration("lease_ttl", _CLUSTER.lease_ttl, positive=True),
    )


def _optional_text(section: _Section, key: str) -> str | None:
    if not section.has(key):
        return None
    value, at = section.at(key)
    if not isinstance(value, str) or not value or "\n" in value or "\r" in value:
        raise at.error(f"{at.name} must be a one-line string")
    return value


def _read_secret(name: str, path: _Path) -> str:
    try:
        with open(name, encoding="utf-8") as f:
            line = f.readline().rstrip("\r\n")
    except OSError as exc:
        raise path.error(f"cannot read {name}: {exc.strerror}") from None
    if not line:
        raise path.error(f"{name} is empty")
    return line


def _check_shared_zones(
    top: _Section,
    cache_zones: tuple[CacheZoneSpec, ...],
    limit_zones: tuple[LimitZoneSpec, ...],
    cluster: ClusterSpec | None,
) -> None:
    """A zone can only be shared through a `cluster` section's Redis."""
    if cluster is not None:
        return
    shared = [("cache_zones", i) for i, z in enumerate(cache_zones) if z.shared]
    shared += [("limit_zones", i) for i, z in enumerate(limit_zones) if z.shared]
    if shared:
        key, i = shared[0]
        at = top.at(key)[1].index(i).key("shared")
        raise at.error("shared: true needs a `cluster` section (the Redis to share)")


def _admin(value: object, path: _Path) -> AdminSpec:
    """The admin listener. Anyone who reaches it can drain peers and read the
    configuration, so an address other than loopback must carry a token."""
    section = _section(value, path, ("listen", "token", "token_file"))
    host, port = _ADMIN.host, _ADMIN.port
    if section.has("listen"):
        raw, at = section.at("listen")
        text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
        if not isinstance(text, str):
            raise at.error(f"listen must be an address string, not {_kind(raw)}")
        try:
            parsed, port = parse_address(text)
        except ValueError as exc:
            raise at.error(f"listen: {exc}") from None
        host = host if parsed is None else parsed
    token = section.text("token", "", _SERVER_NAME) or None
    token_file = _optional_path(*section.at("token_file")) if section.has("token_file") else None
    if token is not None and token_file is not None:
        raise path.error("give token or token_file, not both")
    if token is None and token_file is None and not _is_loopback(host):
        raise path.key("token").error(
            f"the admin listener on {host} (not loopback) needs a token or token_file"
        )
    return AdminSpec(host=host, port=port, token=token, token_file=token_file)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _trace(value: object, path: _Path) -> TraceSpec:
    section = _section(value, path, ("header",))
    return TraceSpec(header=section.text("header", TraceSpec().header, _FIELD_NAME))


def _workers(value: object, path: _Path) -> int:
    if value == "auto":
        # nginx `worker_processes auto`: one per CPU.
        return os.cpu_count() or 1
    if isinstance(value, str):
        raise path.error(f"workers must be an integer from 1 to 1024 or 'auto', not {value!r}")
    return _integer(value, path, 1, 1024)


def _hosts(value: object, path: _Path) -> tuple[tuple[str, str], ...]:
    pairs = []
    for name, address in _string_keys(value, path).items():
        at = path.key(name)
        if not isinstance(address, str):
            raise at.error(f"{name} must be an IP address string, not {_kind(address)}")
        try:
            pairs.append((parse_host_name(name), parse_ip(address)))
        except ValueError as exc:
            raise at.error(f"hosts entries map a host name to an IP address: {exc}") from None
    return tuple(pairs)


def _access_log(value: object, path: _Path, formats: tuple[str, ...]) -> AccessLogSpec:
    if value == "off":
        return AccessLogSpec(path=None, format=_ACCESS_LOG.format)
    if not isinstance(value, dict):
        raise path.error(
            f"access_log must be 'off' or a mapping with path and format, not {value!r}"
        )
    section = _section(value, path, ("path", "format"))
    log_path = _ACCESS_LOG.path
    if section.has("path"):
        raw, at = section.at("path")
        # null turns the log off; "-" is standard output.
        log_path = None if raw is None else _text(raw, at, _FILE_PATH)
    log_format = _ACCESS_LOG.format
    if section.has("format"):
        # combined, json, or the name of one of log_formats.
        log_format = _choice(*section.at("format"), formats)
    return AccessLogSpec(path=log_path, format=log_format)


def _log_formats(value: object, path: _Path) -> tuple[tuple[str, str], ...]:
    formats = []
    for name, template in _string_keys(value, path).items():
        at = path.key(name)
        if not _LOG_FORMAT_NAME.fullmatch(name):
            raise at.error(f"invalid log format name {name!r} (letters, digits, _ . -)")
        if name == "combined":
            # As in nginx: the built-in `combined` cannot be redefined.
            raise at.error("the combined format is built in and cannot be redefined")
        formats.append((name, _text(template, at, _ANY_TEXT)))
    return tuple(formats)


def _optional_path(value: object, path: _Path) -> str | None:
    return None if value is None else _text(value, path, _FILE_PATH)


def _error_log(value: object, path: _Path) -> tuple[str, str]:
    section = _section(value, path, ("path", "level"), required=("path",))
    log_path = _text(*section.at("path"), _FILE_PATH)
    level = _choice(*section.at("level"), ERROR_LOG_LEVELS) if section.has("level") else "error"
    return log_path, level


def _timeouts(value: object, path: _Path) -> ClientTimeouts:
    section = _section(value, path, ("client_header", "client_body", "keepalive", "send"))
    return ClientTimeouts(
        header=section.duration("client_header", _TIMEOUTS.header, positive=True),
        body=section.duration("client_body", _TIMEOUTS.body, positive=True),
        # 0 disables client keep-alive, as `keepalive_timeout 0` does in nginx.
        keepalive=section.duration("keepalive", _TIMEOUTS.keepalive),
        send=section.duration("send", _TIMEOUTS.send, positive=True),
    )


_LIMITS = ClientLimits()
# A request line or head bigger than this is no longer a limit but a memory hazard.
_MAX_HEAD_LIMIT = 16 * 1024 * 1024


def _client_limits(value: object, path: _Path) -> ClientLimits:
    section = _section(value, path, ("request_line", "header_bytes", "headers"))
    line = _limit_size(section, "request_line", _LIMITS.request_line)
    head = _limit_size(section, "header_bytes", _LIMITS.header_bytes)
    if line > head:
        # nginx: the request line must fit in one of the header buffers.
        raise path.key("request_line").error(
            f"request_line ({line}) must not exceed header_bytes ({head})"
        )
    return ClientLimits(
        request_line=line,
        header_bytes=head,
        headers=section.integer("headers", _LIMITS.headers, 1, 100_000),
    )


def _limit_size(section: _Section, key: str, default: int) -> int:
    if not section.has(key):
        return default
    raw, at = section.at(key)
    try:
        size = parse_size(raw)
    except ValueError as exc:
        raise at.error(f"{at.name}: {exc}") from None
    if not 1 <= size <= _MAX_HEAD_LIMIT:
        raise at.error(f"{at.name} must be between 1 and 16m, not {raw!r}")
    return size


# --- maps --------------------------------------------------------------------------

_MAP_KEYS = ("default", "entries", "source", "variable")


def _maps(value: object, path: _Path) -> tuple[MapSpec, ...]:
    maps = tuple(_map(item, path.index(i)) for i, item in enumerate(_items(value, path)))
    _check_unique([m.variable for m in maps], path, "variable")
    return maps


def _map(value: object, path: _Path) -> MapSpec:
    section = _section(value, path, _MAP_KEYS, required=("source", "variable"))
    entries: list[tuple[str, str]] = []
    if section.has("entries"):
        raw, at = section.at("entries")
        for i, item in enumerate(_items(raw, at)):
            entries.append(_map_entry(item, at.index(i)))
    _check_unique(
        [key.lower() for key, _ in entries if not key.startswith("~")], path.key("entries"), "key"
    )
    return MapSpec(
        source=_text(*section.at("source"), _ANY_TEXT),
        variable=_variable_name(*section.at("variable")),
        entries=tuple(entries),
        default=section.text("default", "", _ANY_TEXT),
    )


def _map_entry(value: object, path: _Path) -> tuple[str, str]:
    if not (isinstance(value, list) and len(value) == 2):
        raise path.error(f"{path.name} must be a [pattern, value] pair, not {value!r}")
    key, result = (_text(item, path, _ANY_TEXT) for item in value)
    if key.startswith("~"):
        # `~regex` matches case-sensitively, `~*regex` case-insensitively.
        icase = key.startswith("~*")
        _regex(key[2 if icase else 1 :], path, icase=icase)
    return key, result


def _variable_name(value: object, path: _Path) -> str:
    name = _text(value, path, _ANY_TEXT)
    if not _VARIABLE_NAME.fullmatch(name):
        raise path.error(f"{path.name} must be a variable name without '$', not {name!r}")
    return name


def _regex(pattern: str, path: _Path, *, icase: bool = False) -> str:
    try:
        check_regex(pattern, icase=icase)
    except ValueError as exc:
        raise path.error(f"{path.name}: cannot compile regex {pattern!r}: {exc}") from None
    return pattern


# --- upstreams -------------------------------------------------------------------

_UPSTREAM_KEYS = (
    "balance",
    "consistent",
    "hash_key",
    "health_check",
    "keepalive",
    "keepalive_requests",
    "keepalive_surplus_timeout",
    "keepalive_timeout",
    "least_time",
    "queue",
    "queue_timeout",
    "random_method",
    "random_two",
    "servers",
)
# The options of one balancing method, by the `balance` values they belong to.
_METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "hash_key": ("hash",),
    "consistent": ("hash",),
    "random_two": ("random",),
    "random_method": ("random",),
    "least_time": ("least_time", "random", "peak_ewma"),
}
RANDOM_METHODS = ("least_conn", "least_time")
LEAST_TIME_MEASURES = ("header", "last_byte")
# As nginx (its hash, ip_hash and random modules refuse `server ... backup`): a key or a
# random draw picks among the primaries only.
_NO_BACKUP = ("hash", "ip_hash", "random")
# A template (variables are checked when the runtime compiles it): no control characters.
_TEMPLATE = re.compile(r"[^\x00-\x1f\x7f]+")
_PEER_KEYS = (
    "address",
    "backup",
    "down",
    "fail_timeout",
    "max_conns",
    "max_fails",
    "resolve",
    "slow_start",
    "weight",
)


def _upstreams(value: object, path: _Path) -> tuple[UpstreamSpec, ...]:
    mapping = _string_keys(value, path)
    if not mapping:
        raise path.error("upstreams must define at least one upstream (or be left out)")
    upstreams = []
    for name, body in mapping.items():
        at = path.key(name)
        if not _UPSTREAM_NAME.fullmatch(name):
            raise at.error(f"invalid upstream name {name!r} (letters, digits, _ . - : [ ])")
        upstreams.append(_upstream(name, body, at))
    return tuple(upstreams)


def _upstream(name: str, value: object, path: _Path) -> UpstreamSpec:
    section = _section(value, path, _UPSTREAM_KEYS, required=("servers",))
    raw, at = section.at("servers")
    peers = tuple(_peer(item, at.index(i)) for i, item in enumerate(_items(raw, at)))
    if all(peer.backup for peer in peers):
        # nginx refuses this too ("no servers in upstream"): backups need a primary.
        raise at.error("servers must include at least one server that is not a backup")
    balance = _UPSTREAM.balance
    if section.has("balance"):
        balance = _choice(*section.at("balance"), balancer_names())
    spec = UpstreamSpec(
        name=name,
        servers=peers,
        balance=balance,
        keepalive=section.integer("keepalive", _UPSTREAM.keepalive, 0, _MAX_COUNT),
        keepalive_timeout=section.duration("keepalive_timeout", _UPSTREAM.keepalive_timeout),
        keepalive_requests=section.integer(
            "keepalive_requests", _UPSTREAM.keepalive_requests, 1, _MAX_COUNT
        ),
        keepalive_surplus_timeout=section.duration(
            "keepalive_surplus_timeout", _UPSTREAM.keepalive_surplus_timeout
        ),
        queue=section.integer("queue", _UPSTREAM.queue, 0, _MAX_COUNT),
        queue_timeout=section.duration("queue_timeout", _UPSTREAM.queue_timeout),
        health_check=_health_check(*section.at("health_check"))
        if section.has("health_check")
        else None,
    )
    return _method_options(spec, section)


_HEALTH_KEYS = ("body", "fails", "interval", "passes", "path", "status", "timeout", "type")
_STATUS_RANGE = re.compile(r"([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?")
_HEALTH = HealthCheckSpec()


def _health_check(value: object, path: _Path) -> HealthCheckSpec:
    """`health_check: {type: http|tcp, path, interval, timeout, status: "200-399" or a
    list of codes and ranges, body: REGEX, passes, fails}`."""
    section = _section(value, path, _HEALTH_KEYS)
    kind = _choice(*section.at("type"), ("http", "tcp")) if section.has("type") else "http"
    statuses = _HEALTH.statuses
    if section.has("status"):
        raw, at = section.at("status")
        ranges = []
        for i, item in enumerate(_items(raw, at, allow_single=True)):
            m = _STATUS_RANGE.fullmatch(str(item))
            if m is None or (m[2] is not None and int(m[2]) < int(m[1])):
                raise at.index(i).error(f"want a status or a range like 200-399, not {item!r}")
            ranges.append((int(m[1]), int(m[2] or m[1])))
        statuses = tuple(ranges)
    body = section.text("body", "", _TEMPLATE) if section.has("body") else ""
    if body:
        try:
            re.compile(body)
        except re.error as exc:
            raise path.key("body").error(f"body: cannot compile regex {body!r}: {exc}") from None
    return HealthCheckSpec(
        kind=kind,
        path=_route_path_text(section) if section.has("path") else _HEALTH.path,
        interval=section.duration("interval", _HEALTH.interval, positive=True),
        timeout=section.duration("timeout", _HEALTH.timeout, positive=True),
        statuses=statuses,
        body=body,
        passes=section.integer("passes", _HEALTH.passes, 1, 100),
        fails=section.integer("fails", _HEALTH.fails, 1, 100),
    )


def _route_path_text(section: _Section) -> str:
    return section.text("path", "/", _ROUTE_PATH)


def _method_options(spec: UpstreamSpec, section: _Section) -> UpstreamSpec:
    """The options of `spec.balance` (hash_key, random_two, ...); each key is refused
    with any other method, so that a file never says more than it does."""
    for key, methods in _METHOD_KEYS.items():
        if section.has(key) and spec.balance not in methods:
            owners = " or ".join(methods)
            raise section.path.key(key).error(
                f"{key} applies to balance: {owners}, not {spec.balance}"
            )
    spec = replace(
        spec,
        hash_key=section.text("hash_key", _UPSTREAM.hash_key, _TEMPLATE),
        consistent=section.boolean("consistent", _UPSTREAM.consistent),
        random_two=section.boolean("random_two", _UPSTREAM.random_two),
        random_method=_choice(*section.at("random_method"), RANDOM_METHODS)
        if section.has("random_method")
        else _UPSTREAM.random_method,
        least_time=_choice(*section.at("least_time"), LEAST_TIME_MEASURES)
        if section.has("least_time")
        else _UPSTREAM.least_time,
    )
    _check_method_options(spec, section)
    return spec


def _check_method_options(spec: UpstreamSpec, section: _Section) -> None:
    if spec.balance == "hash" and not spec.hash_key:
        raise section.path.error("balance: hash needs a hash_key (a template: $request_uri)")
    if section.has("random_method") and not spec.random_two:
        raise section.path.key("random_method").error("random_method needs random_two: true")
    if (
        spec.balance == "random"
        and section.has("least_time")
        and spec.random_method != "least_time"
    ):
        raise section.path.key("least_time").error(
            "least_time applies to balance: random only with random_method: least_time"
        )
    backups = [i for i, peer in enumerate(spec.servers) if peer.backup]
    if spec.balance in _NO_BACKUP and backups:
        at = section.path.key("servers").index(backups[0])
        raise at.error(f"balance: {spec.balance} does not support backup servers (as nginx)")
    ramps = [i for i, peer in enumerate(spec.servers) if peer.slow_start]
    if spec.balance in _NO_BACKUP and ramps:
        # nginx: slow_start "cannot be used along with the hash, ip_hash, and random".
        at = section.path.key("servers").index(ramps[0])
        raise at.error(f"balance: {spec.balance} does not support slow_start (as nginx)")


def _peer(value: object, path: _Path) -> PeerSpec:
    if isinstance(value, str):
        host, port = _peer_address(value, path)
        return PeerSpec(host=host, port=port)
    section = _section(value, path, _PEER_KEYS, required=("address",))
    host, port = _peer_address(*section.at("address"))
    return PeerSpec(
        host=host,
        port=port,
        weight=section.integer("weight", _PEER.weight, 1, _MAX_WEIGHT),
        max_fails=section.integer("max_fails", _PEER.max_fails, 0, _MAX_COUNT),
        fail_timeout=section.duration("fail_timeout", _PEER.fail_timeout),
        backup=section.boolean("backup", _PEER.backup),
        down=section.boolean("down", _PEER.down),
        max_conns=section.integer("max_conns", _PEER.max_conns, 0, _MAX_COUNT),
        slow_start=section.duration("slow_start", _PEER.slow_start),
        resolve=section.boolean("resolve", _PEER.resolve),
    )


def _peer_address(value: object, path: _Path) -> tuple[str, int]:
    if not isinstance(value, str):
        raise path.error(f"{path.name} must be a 'host:port' string, not {_kind(value)}")
    try:
        host, port = parse_address(value)
    except ValueError as exc:
        raise path.error(f"{path.name}: {exc}") from None
    if host is None:
        raise path.error(f"{path.name}: an upstream server needs a host, not just a port")
    return host, port


# --- servers -----------------------------------------------------------------------

_SERVER_KEYS = (
    "add_headers",
    "listen",
    "real_ip",
    "routes",
    "script",
    "server_names",
    "trace",
    "forward",
    # Defaults for the server's routes (see _Inherited).
    *("access", "auth_basic", "deny_body", "deny_status", "hide_headers"),
)
_LISTEN_KEYS = ("address", "default_server", "http2", "proxy_protocol", "tls")
_REAL_IP_KEYS = ("header", "recursive", "trusted")


def _servers(value: object, path: _Path, upstreams: set[str]) -> tuple[ServerSpec, ...]:
    return tuple(
        _server(item, path.index(i), upstreams) for i, item in enumerate(_items(value, path))
    )


def _server(value: object, path: _Path, upstreams: set[str]) -> ServerSpec:
    section = _section(value, path, _SERVER_KEYS, required=("listen",))
    names: tuple[str, ...] = ()
    if section.has("server_names"):
        raw, at = section.at("server_names")
        items = _items(raw, at, allow_single=True)
        names = tuple(_server_name(name, at.index(i)) for i, name in enumerate(items))
    routes: tuple[RouteSpec, ...] = ()
    if section.has("routes"):
        routes = _routes(*section.at("routes"), upstreams, _inherit(section, _Inherited()))
    forward = _forward(section) if section.has("forward") else None
    return ServerSpec(
        forward=forward,
        listen=_listens(*section.at("listen")),
        routes=routes,
        server_names=names,
        script=_script(*section.at("script")) if section.has("script") else (),
        add_headers=_add_headers(*section.at("add_headers")) if section.has("add_headers") else (),
        real_ip=_real_ip(*section.at("real_ip")) if section.has("real_ip") else None,
        trace=_trace(*section.at("trace")) if section.has("trace") else None,
    )


# --- forward proxy (proxy/forward.py) ------------------------------------------------

_FORWARD_KEYS = (
    "access",
    "allow_private",
    "anonymity",
    "auth",
    "cache",
    "connect_ports",
    "connect_timeout",
    "deny_status",
    "destinations",
    "keepalive",
    "keepalive_timeout",
    "limit_conn",
    "limit_conn_status",
    "limit_req",
    "limit_req_status",
    "pac",
    "read_timeout",
    "resolve_timeout",
    "send_timeout",
    "user_agent",
)
# Server keys that mean a reverse proxy's routes; a forward server says its own.
_NOT_WITH_FORWARD = ("access", "auth_basic", "routes", "script", "server_names")
_DESTINATION_ACTIONS = ("allow", "deny")
_PAC_KEYS = ("direct", "file", "path", "proxy")
_FORWARD = ForwardSpec()


def _forward(server: _Section) -> ForwardSpec:
    """A server's `forward` section: the forward proxy (absolute-form and CONNECT)."""
    for key in _NOT_WITH_FORWARD:
        if server.has(key):
            raise server.path.key(key).error(
                f"a forward proxy server has no {key}: put access and limits under forward"
            )
    value, path = server.at("forward")
    section = _section(value, path, _FORWARD_KEYS)
    limits = _route_limits(section)
    del limits["limit_dry_run"]
    return ForwardSpec(
        connect_ports=_connect_ports(section),
        anonymity=_choice(*section.at("anonymity"), FORWARD_ANONYMITY)
        if section.has("anonymity")
        else _FORWARD.anonymity,
        user_agent=section.text("user_agent", "", _FIELD_VALUE),
        auth=_proxy_auth(*section.at("auth")) if section.has("auth") else None,
        destinations=_destinations(*section.at("destinations"))
        if section.has("destinations")
        else (),
        allow_private=section.boolean("allow_private", _FORWARD.allow_private),
        access=_access(*section.at("access")) if section.has("access") else (),
        deny_status=section.integer("deny_status", _FORWARD.deny_status, 400, 599),
        cache=_cache(*section.at("cache")) if section.has("cache") else None,
        resolve_timeout=section.duration(
            "resolve_timeout", _FORWARD.resolve_timeout, positive=True
        ),
        connect_timeout=section.duration(
            "connect_timeout", _FORWARD.connect_timeout, positive=True
        ),
        read_timeout=section.duration("read_timeout", _FORWARD.read_timeout, positive=True),
        send_timeout=section.duration("send_timeout", _FORWARD.send_timeout, positive=True),
        keepalive=section.integer("keepalive", _FORWARD.keepalive, 0, _MAX_COUNT),
        keepalive_timeout=section.duration("keepalive_timeout", _FORWARD.keepalive_timeout),
        pac=_pac(*section.at("pac")) if section.has("pac") else None,
        **limits,
    )


def _connect_ports(section: _Section) -> tuple[int, ...]:
    if not section.has("connect_ports"):
        return _FORWARD.connect_ports
    raw, at = section.at("connect_ports")
    items = _items(raw, at, allow_single=True)
    listed = isinstance(raw, list)
    ports = tuple(
        _integer(item, at.index(i) if listed else at, 1, 65535) for i, item in enumerate(items)
    )
    _check_unique([str(p) for p in ports], at, "port")
    return ports


def _proxy_auth(value: object, path: _Path) -> ProxyAuthSpec:
    """`{realm, user_file}`: an htpasswd file, read by the master at load and on each
    reload (filters/registry.py read_user_files)."""
    section = _section(value, path, _AUTH_BASIC_KEYS, required=_AUTH_BASIC_KEYS)
    return ProxyAuthSpec(
        realm=section.text("realm", "", _FIELD_VALUE),
        user_file=section.text("user_file", "", _FILE_PATH),
    )


def _destinations(value: object, path: _Path) -> tuple[DestinationRule, ...]:
    """`- deny: "*.ads.example"`, `- allow: 10.1.0.0/16`, `- deny: "port:25"`; each
    value is compiled now (filters/destination.py) so a bad one names its key path."""
    rules = []
    for i, item in enumerate(_items(value, path)):
        at = path.index(i)
        section = _section(item, at, _DESTINATION_ACTIONS)
        actions = [key for key in _DESTINATION_ACTIONS if section.has(key)]
        if len(actions) != 1:
            raise at.error("a destination rule has one of allow or deny")
        rule = DestinationRule(actions[0], section.text(actions[0], "", _SERVER_NAME))
        try:
            compile_destinations((rule,))
        except ValueError as exc:
            reason = str(exc).partition(": ")[2]
            raise at.key(actions[0]).error(f"{actions[0]}: {reason}") from None
        rules.append(rule)
    return tuple(rules)


def _pac(value: object, path: _Path) -> PacSpec:
    section = _section(value, path, _PAC_KEYS)
    default = PacSpec()
    direct = default.direct
    if section.has("direct"):
        raw, at = section.at("direct")
        direct = () if raw == [] else _strings(raw, at)
    file = section.text("file", "", _FILE_PATH) if section.has("file") else None
    proxy = section.text("proxy", "", _SERVER_NAME) if section.has("proxy") else None
    return PacSpec(
        path=section.text("path", default.path, _ROUTE_PATH),
        file=file,
        direct=direct,
        proxy=proxy,
    )


def _real_ip(value: object, path: _Path) -> RealIpSpec:
    """nginx set_real_ip_from / real_ip_header / real_ip_recursive."""
    section = _section(value, path, _REAL_IP_KEYS, required=("trusted",))
    raw, at = section.at("trusted")
    trusted = []
    for i, item in enumerate(_items(raw, at, allow_single=True)):
        where = at.index(i) if isinstance(raw, list) else at
        text = _text(item, where, _SERVER_NAME)
        try:
            parse_network(text)
        except ValueError:
            raise where.error(f"{where.name}: {text!r} is not an IP address or CIDR") from None
        trusted.append(text)
    header = _REAL_IP.header
    if section.has("header"):
        header = _choice(*section.at("header"), REAL_IP_HEADERS)
    return RealIpSpec(
        trusted=tuple(trusted),
        header=header,
        recursive=section.boolean("recursive", _REAL_IP.recursive),
    )


def _server_name(value: object, path: _Path) -> str:
    # "" matches requests without a Host; `~regex`; exact or wildcard names.
    if value == "":
        return ""
    name = _text(value, path, _SERVER_NAME)
    if name.startswith("~"):
        _regex(name[1:], path)
    return name


def _listens(value: object, path: _Path) -> tuple[ListenSpec, ...]:
    listens = []
    for i, item in enumerate(_items(value, path, allow_single=True)):
        at = path.index(i) if isinstance(value, list) else path
        listens.append(_listen(item, at))
    # nginx refuses the same listen twice in one server ("a duplicate listen").
    _check_unique([spec.address for spec in listens], path, "address")
    return tuple(listens)


def _listen(item: object, path: _Path) -> ListenSpec:
    default_server = proxy_protocol = False
    tls = None
    if isinstance(item, dict):
        section = _section(item, path, _LISTEN_KEYS, required=("address",))
        default_server = section.boolean("default_server", False)
        proxy_protocol = section.boolean("proxy_protocol", False)
        tls = _tls(*section.at("tls")) if section.has("tls") else None
        if section.has("http2"):
            # HTTP/2 by ALPN (TlsSpec.http2, on by default); no h2c on plain listeners.
            http2 = section.boolean("http2", True)
            if tls is None:
                raise path.key("http2").error("http2 needs tls (h2c is not offered)")
            tls = replace(tls, http2=http2)
        item, path = section.at("address")
    # A YAML int is a bare port, like `listen 8080;`.
    text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
    if not isinstance(text, str):
        raise path.error(f"{path.name} must be an address string, not {_kind(item)}")
    try:
        host, port = parse_address(text)
    except ValueError as exc:
        raise path.error(f"{path.name}: {exc}") from None
    # A bare port listens on every IPv4 address, as nginx's `listen 8080;` does.
    return ListenSpec(
        "0.0.0.0" if host is None else host,
        port,
        proxy_protocol=proxy_protocol,
        default_server=default_server,
        tls=tls,
    )


# --- routes ------------------------------------------------------------------------

_ROUTE_KEYS = (
    "add_headers",
    "error_pages",
    "intercept_errors",
    "redirects",
    "static",
    *("ignore_headers", "pass_request_body", "pass_request_headers"),
    *("upstream_body", "upstream_method"),
    "cache",
    "client_max_body_size",
    "connect_timeout",
    "debug_header",
    "default_type",
    "forwarded_headers",
    "hide_headers",
    "host_header",
    "http_version",
    "match",
    "next_upstream",
    "next_upstream_timeout",
    "next_upstream_tries",
    "pass_headers",
    "pass_upgrade",
    "path",
    "read_timeout",
    "retry_idempotency_key",
    "routes",
    "script",
    "send_timeout",
    "set_headers",
    "upstream",
    "upstream_uri",
    "upstream_url",
    *("access", "auth_basic", "deny_body", "deny_status"),
    *("limit_conn", "limit_conn_status", "limit_dry_run", "limit_req", "limit_req_status"),
    "upstream_tls",
)


def _routes(
    value: object, path: _Path, upstreams: set[str], outer: _Inherited
) -> tuple[RouteSpec, ...]:
    routes = tuple(
        _route(item, path.index(i), upstreams, outer) for i, item in enumerate(_items(value, path))
    )
    _check_unique([key for r in routes if (key := _route_key(r))], path, "location")
    return routes


def _route_key(route: RouteSpec) -> str:
    # As nginx: `= /a` and `/a` may coexist, `/a` and `^~ /a` may not; regexes may repeat.
    kind = {"exact": "= ", "prefix": "", "prefix_priority": "", "named": ""}.get(route.match)
    return "" if kind is None else kind + route.path


def _route(value: object, path: _Path, upstreams: set[str], outer: _Inherited) -> RouteSpec:
    section = _section(value, path, _ROUTE_KEYS)
    own = _inherit(section, outer)
    match = _choice(*section.at("match"), MATCH_KINDS) if section.has("match") else "prefix"
    return RouteSpec(
        upstream=_route_upstream(section, upstreams),
        path=_route_path(section, match),
        match=match,
        upstream_uri=_upstream_uri(*section.at("upstream_uri"))
        if section.has("upstream_uri")
        else None,
        upstream_url=_upstream_url(section, upstreams),
        host_header=section.text("host_header", _ROUTE.host_header, _SERVER_NAME),
        set_headers=_set_headers(*section.at("set_headers")) if section.has("set_headers") else (),
        connect_timeout=section.duration("connect_timeout", _ROUTE.connect_timeout, positive=True),
        read_timeout=section.duration("read_timeout", _ROUTE.read_timeout, positive=True),
        send_timeout=section.duration("send_timeout", _ROUTE.send_timeout, positive=True),
        next_upstream_tries=section.integer(
            "next_upstream_tries", _ROUTE.next_upstream_tries, 0, _MAX_COUNT
        ),
        next_upstream=_next_upstream(section),
        next_upstream_timeout=section.duration(
            "next_upstream_timeout", _ROUTE.next_upstream_timeout
        ),
        retry_idempotency_key=section.boolean(
            "retry_idempotency_key", _ROUTE.retry_idempotency_key
        ),
        debug_header=section.boolean("debug_header", _ROUTE.debug_header),
        forwarded_headers=section.boolean("forwarded_headers", _ROUTE.forwarded_headers),
        http_version=_http_version(*section.at("http_version"))
        if section.has("http_version")
        else _ROUTE.http_version,
        hide_headers=own.hide_headers,
        pass_headers=_field_names(section, "pass_headers"),
        add_headers=_add_headers(*section.at("add_headers")) if section.has("add_headers") else (),
        script=_script(*section.at("script")) if section.has("script") else (),
        client_max_body_size=_body_size(*section.at("client_max_body_size"))
        if section.has("client_max_body_size")
        else _ROUTE.client_max_body_size,
        # A Content-Type field value; "" sends none (nginx `default_type ""`).
        default_type=section.text("default_type", _ROUTE.default_type, _FIELD_VALUE),
        pass_upgrade=section.boolean("pass_upgrade", _ROUTE.pass_upgrade),
        cache=_cache(*section.at("cache")) if section.has("cache") else None,
        upstream_tls=_route_upstream_tls(section),
        **_route_content(section),
        **_route_limits(section),
        access=own.access,
        deny_status=own.deny_status,
        deny_body=own.deny_body,
        auth_basic=own.auth_basic,
        routes=_routes(*section.at("routes"), upstreams, _nested(own, outer))
        if section.has("routes")
        else (),
    )


# --- protection: access rules, basic auth, and what routes inherit ------------------


@dataclass(frozen=True, slots=True)
class _Inherited:
    """What a route takes from its server or the route it is nested in when it does not
    say itself, as nginx inherits allow/deny and auth_basic into a location with none of
    its own; hide_headers comes from the server only (see _nested). `access: []`,
    `hide_headers: []` and `auth_basic: off` say "none here" explicitly."""

    access: tuple[AccessRule, ...] = ()
    deny_status: int = _ROUTE.deny_status
    deny_body: str = _ROUTE.deny_body
    auth_basic: AuthBasicSpec | None = None
    hide_headers: tuple[str, ...] = ()


def _inherit(section: _Section, outer: _Inherited) -> _Inherited:
    return _Inherited(
        access=_access(*section.at("access")) if section.has("access") else outer.access,
        # 4xx/5xx: a denial is an error; the filters answer no 444 (close).
        deny_status=section.integer("deny_status", outer.deny_status, 400, 599),
        deny_body=section.text("deny_body", outer.deny_body, _ANY_TEXT),
        auth_basic=_auth_basic(*section.at("auth_basic"))
        if section.has("auth_basic")
        else outer.auth_basic,
        hide_headers=_hide_headers(section) if section.has("hide_headers") else outer.hide_headers,
    )


def _nested(own: _Inherited, outer: _Inherited) -> _Inherited:
    """What routes nested in a route inherit: its protection, but the server's
    hide_headers (a native nested route never took its parent's hide_headers)."""
    return replace(own, hide_headers=outer.hide_headers)


def _hide_headers(section: _Section) -> tuple[str, ...]:
    return () if section.values["hide_headers"] == [] else _field_names(section, "hide_headers")


_ACCESS_ACTIONS = ("allow", "deny")
_ACCESS_CONDITIONS = ("days", "methods", "paths", "times", "user_agent")
_ACCESS_KEYS = (*_ACCESS_ACTIONS, *_ACCESS_CONDITIONS, "name", "timezone")
_RULE_NAME = re.compile(r"[\x21-\x7e]+")


def _access(value: object, path: _Path) -> tuple[AccessRule, ...]:
    """`- deny: 10.0.0.0/8`, `- allow: [192.168.0.0/16, "::1"]`, `- deny: all` with
    optional conditions (user_agent, methods, paths, days, times, timezone) and a name
    for the log. Values are checked when the rules are compiled (filters/access.py),
    with this same key path; `[]` is no rules (none inherited either)."""
    if value == []:
        return ()
    return tuple(_access_rule(item, path.index(i)) for i, item in enumerate(_items(value, path)))


def _access_rule(value: object, path: _Path) -> AccessRule:
    section = _section(value, path, _ACCESS_KEYS)
    actions = [key for key in _ACCESS_ACTIONS if section.has(key)]
    if len(actions) != 1:
        raise path.error("a rule has one of allow or deny (its addresses, or all)")
    action = actions[0]
    lists = {key: _strings(*section.at(key)) for key in _ACCESS_CONDITIONS if section.has(key)}
    return AccessRule(
        action=action,
        addresses=_strings(*section.at(action)),
        user_agents=lists.get("user_agent", ()),
        methods=lists.get("methods", ()),
        paths=lists.get("paths", ()),
        days=lists.get("days", ()),
        times=lists.get("times", ()),
        timezone=section.text("timezone", "UTC", _FILE_PATH),
        name=section.text("name", "", _RULE_NAME),
    )


def _strings(value: object, path: _Path) -> tuple[str, ...]:
    items = _items(value, path, allow_single=True)
    listed = isinstance(value, list)
    return tuple(
        _text(item, path.index(i) if listed else path, _FIELD_VALUE) for i, item in enumerate(items)
    )


_AUTH_BASIC_KEYS = ("realm", "user_file")


def _auth_basic(value: object, path: _Path) -> AuthBasicSpec | None:
    """`{realm: "...", user_file: htpasswd}`, or `off` (none, not inherited). The file
    is read by the master at load and on each reload (a missing or bad file is refused
    then); workers use what it read."""
    if value == "off":
        return None
    section = _section(value, path, _AUTH_BASIC_KEYS, required=_AUTH_BASIC_KEYS)
    return AuthBasicSpec(
        realm=section.text("realm", "", _FIELD_VALUE),
        user_file=section.text("user_file", "", _FILE_PATH),
    )


def _route_upstream(section: _Section, upstreams: set[str]) -> str | None:
    # No upstream: the route answers by its script (`return`), or 404.
    if not section.has("upstream"):
        return None
    raw, at = section.at("upstream")
    upstream = _text(raw, at, _UPSTREAM_NAME)
    if upstream not in upstreams:
        known = ", ".join(sorted(upstreams)) or "none"
        raise at.error(f"upstream {upstream!r} is not defined (have: {known})")
    return upstream


def _route_path(section: _Section, match: str) -> str:
    if not section.has("path"):
        if match in ("regex", "regex_icase", "named"):
            raise section.path.error(f"a {match} route needs a path")
        return _ROUTE.path
    raw, at = section.at("path")
    if match in ("regex", "regex_icase"):
        return _regex(_text(raw, at, _FILE_PATH), at, icase=match == "regex_icase")
    return _text(raw, at, _NAMED_ROUTE if match == "named" else _ROUTE_PATH)


def _upstream_uri(value: object, path: _Path) -> str:
    # nginx `proxy_pass http://up/URI`: replaces the matched part of the path.
    return _text(value, path, _ROUTE_PATH)


def _upstream_url(section: _Section, upstreams: set[str]) -> str | None:
    """nginx `proxy_pass` with variables: a template of `http://HOST[:PORT][/URI]`, whose
    URI part (if any) is the whole upstream target. Its variables are checked when the
    runtime compiles it."""
    if not section.has("upstream_url"):
        return None
    raw, at = section.at("upstream_url")
    for other in ("upstream", "upstream_uri"):
        if section.has(other):
            raise at.error(f"a route has either upstream_url or {other}, not both")
    url = _text(raw, at, _URL_TEXT)
    if url[:8].lower() == "https://":
        raise at.error(f"https:// upstreams are not supported yet: {url!r}")
    if url[:7].lower() != "http://":
        raise at.error(f"{at.name} must begin with http://, not {url!r}")
    authority = url[7:].partition("/")[0]
    if not authority:
        raise at.error(f"{at.name} has no host: {url!r}")
    if "$" not in authority:
        _check_url_host(authority, at, upstreams)
    return url


def _check_url_host(authority: str, path: _Path, upstreams: set[str]) -> None:
    # A literal host names an upstream (nginx's $proxy_host: port 80 left out) or is an
    # IP address: names are not resolved at run time (nginx would need a `resolver`).
    names = {name.lower() for name in upstreams}
    if authority.lower() in names or authority.lower().removesuffix(":80") in names:
        return
    try:
        if authority.endswith("]") or ":" not in authority:
            parse_ip(authority.removeprefix("[").removesuffix("]"))
        else:
            parse_ip(parse_address(authority)[0] or "")
    except ValueError:
        raise path.error(
            f"host {authority!r} of {path.name} names no upstream and is not an IP address"
            " (names are not resolved at run time)"
        ) from None


def _http_version(value: object, path: _Path) -> str:
    # `1.1` unquoted is a YAML float; take it as the version it spells.
    text = f"{value:.1f}" if isinstance(value, float) else value
    return _choice(text, path, HTTP_VERSIONS)


def _body_size(value: object, path: _Path) -> int | None:
    # null or 0: no limit (nginx `client_max_body_size 0`).
    if value is None:
        return None
    try:
        return parse_size(value) or None
    except ValueError as exc:
        raise path.error(f"{path.name}: {exc}") from None


NEXT_UPSTREAM_CONDITIONS = (
    "error",
    "timeout",
    "invalid_header",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "http_403",
    "http_404",
    "http_429",
    "non_idempotent",
    "off",
)


def _next_upstream(section: _Section) -> tuple[str, ...]:
    if not section.has("next_upstream"):
        return _ROUTE.next_upstream
    raw, at = section.at("next_upstream")
    items = tuple(_items(raw, at, allow_single=True))
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or item not in NEXT_UPSTREAM_CONDITIONS:
            raise at.index(i).error(
                f"must be one of: {', '.join(NEXT_UPSTREAM_CONDITIONS)}; not {item!r}"
            )
        out.append(item)
    if "off" in out and len(out) > 1:
        raise at.error("`off` cannot be combined with other conditions")
    return tuple(out)


def _field_names(section: _Section, key: str) -> tuple[str, ...]:
    if not section.has(key):
        return ()
    raw, at = section.at(key)
    names = tuple(
        _text(item, at.index(i), _FIELD_NAME).lower()
        for i, item in enumerate(_items(raw, at, allow_single=True))
    )
    _check_unique(list(names), at, "header")
    return names


def _set_headers(value: object, path: _Path) -> tuple[tuple[str, str], ...]:
    headers = []
    for name, template in _string_keys(value, path).items():
        at = path.key(name)
        if not _FIELD_NAME.fullmatch(name):
            raise at.error(f"{name!r} is not a valid header name")
        if name.lower() == "host":
            raise at.error("set the Host header with host_header, not set_headers")
        headers.append((name, _text(template, at, _FIELD_VALUE)))
    _check_unique([name.lower() for name, _ in headers], path, "header")
    return tuple(headers)


_ADD_HEADER_KEYS = ("always", "name", "value")


def _add_headers(value: object, path: _Path) -> tuple[HeaderAdd, ...]:
    headers = []
    for i, item in enumerate(_items(value, path)):
        at = path.index(i)
        section = _section(item, at, _ADD_HEADER_KEYS, required=("name", "value"))
        headers.append(
            HeaderAdd(
                name=_text(*section.at("name"), _FIELD_NAME),
                value=_text(*section.at("value"), _FIELD_VALUE),
                always=section.boolean("always", False),
            )
        )
    return tuple(headers)


# --- scripts (nginx's rewrite module: set, rewrite, return, in order) ---------------

_SCRIPT_KINDS = ("return", "rewrite", "set", "if", "break")


# --- static files, error pages, proxy_redirect (proxy/static/, error_pages.py) ------

_STATIC_KEYS = (
    *("alias", "default_type", "etag", "expires", "index", "root", "try_files", "types"),
    *("autoindex", "autoindex_exact_size", "autoindex_localtime", "autoindex_format"),
)
_AUTOINDEX_FORMATS = ("html", "json")
_STATIC = StaticSpec(root="/")
_EXT = re.compile(r"[\x21-\x7e]+")
_MEDIA_TYPE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _route_content(section: _Section) -> dict[str, Any]:
    upstream = section.has("upstream") or section.has("upstream_url")
    static = _static(*section.at("static")) if section.has("static") else None
    if static is not None and upstream:
        raise section.path.key("static").error("a route serves files or proxies, not both")
    redirects = None
    if section.has("redirects"):
        raw, at = section.at("redirects")
        # `off` (nginx `proxy_redirect off`): Location and Refresh pass unchanged.
        redirects = (
            ()
            if raw in ("off", False)
            else tuple(_redirect(item, at.index(i)) for i, item in enumerate(_items(raw, at)))
        )
    return {
        "static": static,
        "error_pages": _error_pages(*section.at("error_pages"))
        if section.has("error_pages")
        else (),
        "intercept_errors": section.boolean("intercept_errors", False),
        "redirects": redirects,
        **_upstream_request(section),
    }


def _upstream_request(section: _Section) -> dict[str, Any]:
    """What goes upstream (proxy/body.py): nginx proxy_method, proxy_set_body,
    proxy_pass_request_headers/_body; and proxy_ignore_headers."""
    ignore: tuple[str, ...] = ()
    if section.has("ignore_headers"):
        raw, at = section.at("ignore_headers")
        items = _items(raw, at, allow_single=True)
        ignore = tuple(
            _choice(item.lower() if isinstance(item, str) else item, at.index(i), IGNORABLE_HEADERS)
            for i, item in enumerate(items)
        )
    return {
        "upstream_method": section.text("upstream_method", "", _FIELD_NAME) or None,
        "upstream_body": section.text("upstream_body", "", _ANY_TEXT)
        if section.has("upstream_body")
        else None,
        "pass_request_headers": section.boolean("pass_request_headers", True),
        "pass_request_body": section.boolean("pass_request_body", True),
        "ignore_headers": tuple(dict.fromkeys(ignore)),
    }


def _static(value: object, path: _Path) -> StaticSpec:
    section = _section(value, path, _STATIC_KEYS)
    if section.has("root") == section.has("alias"):
        raise path.error("static needs exactly one of root and alias")
    root = _text(*section.at("root"), _ANY_TEXT) if section.has("root") else None
    alias = _text(*section.at("alias"), _ANY_TEXT) if section.has("alias") else None
    types = None
    if section.has("types"):
        raw, at = section.at("types")
        mapping = _string_keys(raw, at)
        types = tuple(
            (_text(ext, at.key(ext), _EXT).lower(), _text(kind, at.key(ext), _MEDIA_TYPE))
            for ext, kind in mapping.items()
        )
    return StaticSpec(
        root=root,
        alias=alias,
        index=_strings(*section.at("index")) if section.has("index") else _STATIC.index,
        try_files=_try_files(*section.at("try_files")) if section.has("try_files") else (),
        expires=_expires(*section.at("expires")) if section.has("expires") else None,
        etag=section.boolean("etag", _STATIC.etag),
        types=types,
        default_type=section.text("default_type", _STATIC.default_type, _FIELD_VALUE),
        autoindex=section.boolean("autoindex", _STATIC.autoindex),
        autoindex_exact_size=section.boolean("autoindex_exact_size", _STATIC.autoindex_exact_size),
        autoindex_localtime=section.boolean("autoindex_localtime", _STATIC.autoindex_localtime),
        autoindex_format=_choice(*section.at("autoindex_format"), _AUTOINDEX_FORMATS)
        if section.has("autoindex_format")
        else _STATIC.autoindex_format,
    )


def _try_files(value: object, path: _Path) -> tuple[str, ...]:
    items = _strings(value, path)
    if len(items) < 2:
        raise path.error("try_files needs at least two entries: names, then a fallback")
    return items


def _expires(value: object, path: _Path) -> float | str | None:
    """`off`, `epoch`, `max`, or a duration (`-1s`: already expired)."""
    if value is False or value == "off":
        return None
    if value in ("epoch", "max"):
        return str(value)
    text = str(value)
    negative = text.startswith("-")
    seconds = _duration(text.lstrip("-"), path, False)
    return -seconds if negative else seconds


def _error_pages(value: object, path: _Path) -> tuple[ErrorPageSpec, ...]:
    out = []
    for i, item in enumerate(_items(value, path)):
        at = path.index(i)
        section = _section(item, at, ("codes", "status", "target"), required=("codes", "target"))
        raw, codes_at = section.at("codes")
        codes = tuple(
            _integer(code, codes_at.index(j), 300, 599)
            for j, code in enumerate(_items(raw, codes_at, allow_single=True))
        )
        status = section.integer("status", -1, 0, 599) if section.has("status") else None
        out.append(ErrorPageSpec(codes, _text(*section.at("target"), _ANY_TEXT), status))
    return tuple(out)


def _redirect(value: object, path: _Path) -> tuple[str, str]:
    section = _section(value, path, ("source", "target"), required=("source", "target"))
    source = _text(*section.at("source"), _ANY_TEXT)
    if source.startswith("~"):
        icase = source.startswith("~*")
        _regex(source[2 if icase else 1 :], path.key("source"), icase=icase)
    return source, _text(*section.at("target"), _ANY_TEXT)


def _if_step(value: object, path: _Path) -> ScriptStep:
    section = _section(value, path, ("operand", "operator", "steps", "value"), ("operand",))
    operator = _choice(*section.at("operator"), IF_OPERATORS) if section.has("operator") else ""
    text = section.text("value", "", _ANY_TEXT)
    if "~" in operator:
        _regex(text, path.key("value"), icase=operator.endswith("*"))
    steps = _script(*section.at("steps")) if section.has("steps") else ()
    return IfSpec(section.text("operand", "", _ANY_TEXT), operator, text, steps)


def _break_step(value: object, path: _Path) -> ScriptStep:
    if value is not True:
        raise path.error("break takes `true`")
    return BreakSpec()


def _script(value: object, path: _Path) -> tuple[ScriptStep, ...]:
    steps = []
    for i, item in enumerate(_items(value, path)):
        at = path.index(i)
        mapping = _string_keys(item, at)
        if len(mapping) != 1 or next(iter(mapping)) not in _SCRIPT_KINDS:
            raise at.error(
                f"{at.name} must be a mapping with one key, set, rewrite, return, if or break; "
                f"not {sorted(mapping)}"
            )
        ((kind, body),) = mapping.items()
        steps.append(_SCRIPT_STEPS[kind](body, at.key(kind)))
    return tuple(steps)


def _set_step(value: object, path: _Path) -> ScriptStep:
    section = _section(value, path, ("value", "variable"), required=("value", "variable"))
    return SetSpec(
        variable=_variable_name(*section.at("variable")),
        value=_text(*section.at("value"), _ANY_TEXT),
    )


def _rewrite_step(value: object, path: _Path) -> ScriptStep:
    section = _section(value, path, ("flag", "pattern", "replacement"), ("pattern", "replacement"))
    raw, at = section.at("pattern")
    replacement, at_replacement = section.at("replacement")
    if replacement == "":
        raise at_replacement.error("replacement must not be empty")
    return RewriteSpec(
        pattern=_regex(_text(raw, at, _ANY_TEXT), at),
        replacement=_text(replacement, at_replacement, _ANY_TEXT),
        flag=_choice(*section.at("flag"), REWRITE_FLAGS) if section.has("flag") else "",
    )


def _return_step(value: object, path: _Path) -> ScriptStep:
    section = _section(value, path, ("status", "text"), required=("status",))
    raw, at = section.at("status")
    status = _integer(raw, at, 100, 999)
    if not (status <= 599 or status == _CLOSE_WITHOUT_ANSWER):
        raise at.error(f"status must be from 100 to 599, or 444; not {status}")
    return ReturnSpec(status=status, text=section.text("text", "", _ANY_TEXT))


_SCRIPT_STEPS = {
    "set": _set_step,
    "rewrite": _rewrite_step,
    "return": _return_step,
    "if": _if_step,
    "break": _break_step,
}


def _check_unique(values: list[str], path: _Path, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise path.error(f"{path.name} has the {what} {value!r} more than once")
        seen.add(value)


# --- caching -------------------------------------------------------------------------

_CACHE_ZONE_KEYS = ("inactive", "max_size", "memory_size", "name", "path", "shared")
_CACHE_KEYS = (
    "background_update",
    "bypass",
    "key",
    "lock",
    "lock_timeout",
    "methods",
    "min_uses",
    "no_cache",
    "purge",
    "status_header",
    "store_set_cookie",
    "use_stale",
    "valid",
    "zone",
)
_CACHE_ZONE = CacheZoneSpec(name="")
_CACHE = CacheSpec(zone="")
_ZONE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
# nginx proxy_cache_methods: GET, HEAD or POST.
CACHE_METHODS = ("GET", "HEAD", "POST")
_STATUS_LIST = re.compile(r"[0-9]{3}(?:[ \t]+[0-9]{3})*")


def _cache_zones(value: object, path: _Path) -> tuple[CacheZoneSpec, ...]:
    zones = tuple(_cache_zone(item, path.index(i)) for i, item in enumerate(_items(value, path)))
    _check_unique([z.name for z in zones], path, "cache zone")
    return zones


def _cache_zone(value: object, path: _Path) -> CacheZoneSpec:
    section = _section(value, path, _CACHE_ZONE_KEYS, required=("name",))
    return CacheZoneSpec(
        name=section.text("name", "", _ZONE_NAME),
        path=_optional_path(*section.at("path")) if section.has("path") else None,
        max_size=_cache_size(section, "max_size", _CACHE_ZONE.max_size),
        memory_size=_cache_size(section, "memory_size", _CACHE_ZONE.memory_size),
        inactive=section.duration("inactive", _CACHE_ZONE.inactive, positive=True),
        shared=section.boolean("shared", False),
    )


def _cache_size(section: _Section, key: str, default: int) -> int:
    if not section.has(key):
        return default
    raw, at = section.at(key)
    try:
        return parse_size(raw)
    except ValueError as exc:
        raise at.error(f"{at.name}: {exc}") from None


def _cache(value: object, path: _Path) -> CacheSpec:
    section = _section(value, path, _CACHE_KEYS, required=("zone",))
    return CacheSpec(
        zone=section.text("zone", "", _ZONE_NAME),
        key=section.text("key", _CACHE.key, _TEMPLATE),
        valid=_cache_valid(*section.at("valid")) if section.has("valid") else (),
        bypass=_templates(section, "bypass"),
        no_cache=_templates(section, "no_cache"),
        use_stale=_cache_use_stale(section),
        lock=section.boolean("lock", _CACHE.lock),
        lock_timeout=section.duration("lock_timeout", _CACHE.lock_timeout, positive=True),
        background_update=section.boolean("background_update", _CACHE.background_update),
        methods=_cache_methods(section),
        min_uses=section.integer("min_uses", _CACHE.min_uses, 1, _MAX_COUNT),
        store_set_cookie=section.boolean("store_set_cookie", _CACHE.store_set_cookie),
        purge=section.boolean("purge", _CACHE.purge),
        status_header=section.boolean("status_header", _CACHE.status_header),
    )


def _cache_valid(value: object, path: _Path) -> tuple[tuple[tuple[int, ...], float], ...]:
    """`{"200 302": 10m, "404": 1m, any: 1m}`: statuses (or `any`) -> how long such a
    response is fresh when it says nothing itself (nginx proxy_cache_valid)."""
    if not isinstance(value, dict) or not value:
        raise path.error(f"{path.name} must be a non-empty mapping of statuses to durations")
    out = []
    for raw_key, raw_value in value.items():
        at = path.key(str(raw_key))
        is_number = isinstance(raw_key, int) and not isinstance(raw_key, bool)
        text = str(raw_key) if is_number else raw_key
        if text == "any":
            statuses: tuple[int, ...] = ()
        elif isinstance(text, str) and _STATUS_LIST.fullmatch(text):
            statuses = tuple(int(s) for s in text.split())
            if any(not 100 <= s <= 599 for s in statuses):
                raise at.error(f"statuses must be from 100 to 599, not {text!r}")
        else:
            raise at.error(f'must be `any` or statuses like "200 302", not {raw_key!r}')
        out.append((statuses, _duration(raw_value, at, False)))
    return tuple(out)


def _templates(section: _Section, key: str) -> tuple[str, ...]:
    if not section.has(key):
        return ()
    raw, at = section.at(key)
    return tuple(
        _text(item, at.index(i), _TEMPLATE)
        for i, item in enumerate(_items(raw, at, allow_single=True))
    )


def _cache_use_stale(section: _Section) -> tuple[str, ...]:
    if not section.has("use_stale"):
        return ()
    raw, at = section.at("use_stale")
    items = _items(raw, at, allow_single=True)
    if items == ["off"]:
        return ()
    for i, item in enumerate(items):
        _choice(item, at.index(i), CACHE_USE_STALE)
    _check_unique([str(item) for item in items], at, "condition")
    return tuple(str(item) for item in items)


def _cache_methods(section: _Section) -> tuple[str, ...]:
    if not section.has("methods"):
        return _CACHE.methods
    raw, at = section.at("methods")
    items = _items(raw, at, allow_single=True)
    methods = [_choice(item, at.index(i), CACHE_METHODS) for i, item in enumerate(items)]
    _check_unique(methods, at, "method")
    return tuple(methods)


def _check_cache_zones(servers: tuple[ServerSpec, ...], zones: set[str], path: _Path) -> None:
    """Every route's `cache.zone` names a zone of `cache_zones`."""

    def walk(routes: tuple[RouteSpec, ...], at: _Path) -> None:
        for i, route in enumerate(routes):
            here = at.index(i)
            if route.cache is not None and route.cache.zone not in zones:
                known = ", ".join(sorted(zones)) or "none"
                at_zone = here.key("cache").key("zone")
                raise at_zone.error(
                    f"cache zone {route.cache.zone!r} is not in cache_zones ({known})"
                )
            walk(route.routes, here.key("routes"))

    for si, server in enumerate(servers):
        walk(server.routes, path.index(si).key("routes"))
        forward = server.forward
        if forward is not None and forward.cache is not None and forward.cache.zone not in zones:
            known = ", ".join(sorted(zones)) or "none"
            at_zone = path.index(si).key("forward").key("cache").key("zone")
            raise at_zone.error(
                f"cache zone {forward.cache.zone!r} is not in cache_zones ({known})"
            )


# --- TLS (tls/): listen.tls, routes' upstream_tls, servers' https_redirect ------------

_TLS_KEYS = (
    "certificates",
    "ciphers",
    "client_ca",
    "hsts",
    "prefer_server_ciphers",
    "protocols",
    "session_tickets",
    "verify_client",
)
_TLS_CERT_KEYS = ("cert", "key", "names")
_UPSTREAM_TLS_KEYS = (
    "cert",
    "ciphers",
    "key",
    "name",
    "protocols",
    "server_name",
    "trusted_ca",
    "verify",
)
# An OpenSSL cipher list: names, `:`/`,`/space separated, with `!`, `+`, `-`, `@`.
_CIPHERS = re.compile(r"[A-Za-z0-9_!+\-@=:, .]+")
_SNI_NAME = re.compile(r"(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(\.\*)?")


def _tls(value: object, path: _Path) -> TlsSpec:
    section = _section(value, path, _TLS_KEYS, required=("certificates",))
    raw, at = section.at("certificates")
    certs = tuple(_tls_certificate(item, at.index(i)) for i, item in enumerate(_items(raw, at)))
    verify = (
        _choice(*section.at("verify_client"), ("off", "on", "optional"))
        if section.has("verify_client")
        else _TLS.verify_client
    )
    client_ca = _file(*section.at("client_ca")) if section.has("client_ca") else None
    if verify != "off" and client_ca is None:
        raise path.key("verify_client").error(f"verify_client {verify} needs client_ca")
    return TlsSpec(
        certificates=certs,
        protocols=_tls_protocols(section),
        ciphers=section.text("ciphers", _TLS.ciphers, _CIPHERS),
        prefer_server_ciphers=section.boolean("prefer_server_ciphers", _TLS.prefer_server_ciphers),
        verify_client=verify,
        client_ca=client_ca,
        session_tickets=section.boolean("session_tickets", _TLS.session_tickets),
        hsts=section.text("hsts", "", _FIELD_VALUE),
    )


def _tls_certificate(value: object, path: _Path) -> TlsCertificate:
    section = _section(value, path, _TLS_CERT_KEYS, required=("cert", "key"))
    names: tuple[str, ...] = ()
    if section.has("names"):
        raw, at = section.at("names")
        items = _items(raw, at, allow_single=True)
        names = tuple(_text(n, at.index(i), _SNI_NAME).lower() for i, n in enumerate(items))
    return TlsCertificate(
        cert=_file(*section.at("cert")), key=_file(*section.at("key")), names=names
    )


def _tls_protocols(section: _Section) -> tuple[str, ...]:
    if not section.has("protocols"):
        return TLS_PROTOCOLS
    raw, at = section.at("protocols")
    items = _items(raw, at, allow_single=True)
    protocols = tuple(_choice(p, at.index(i), TLS_PROTOCOLS) for i, p in enumerate(items))
    # Older protocols are refused outright: TLS 1.0 and 1.1 are deprecated (RFC 8996).
    return tuple(p for p in TLS_PROTOCOLS if p in protocols)


def _file(value: object, path: _Path) -> str:
    return _text(value, path, _FILE_PATH)


def _route_upstream_tls(section: _Section) -> UpstreamTlsSpec | None:
    """`upstream_tls: true` or a mapping: the route's upstream is reached over TLS
    (nginx `proxy_pass https://`), verified by default."""
    if not section.has("upstream_tls"):
        return None
    raw, at = section.at("upstream_tls")
    if not section.has("upstream"):
        raise at.error("upstream_tls needs an upstream (upstream_url with TLS: not yet)")
    if raw is True or raw is False:
        return UpstreamTlsSpec() if raw else None
    tls = _section(raw, at, _UPSTREAM_TLS_KEYS)
    spec = UpstreamTlsSpec(
        verify=tls.boolean("verify", _UPSTREAM_TLS.verify),
        trusted_ca=_file(*tls.at("trusted_ca")) if tls.has("trusted_ca") else None,
        server_name=tls.boolean("server_name", _UPSTREAM_TLS.server_name),
        name=tls.text("name", "", _SNI_NAME),
        cert=_file(*tls.at("cert")) if tls.has("cert") else None,
        key=_file(*tls.at("key")) if tls.has("key") else None,
        protocols=_tls_protocols(tls),
        ciphers=tls.text("ciphers", _UPSTREAM_TLS.ciphers, _CIPHERS),
    )
    if (spec.cert is None) != (spec.key is None):
        raise at.error("cert and key go together")
    if spec.verify and not spec.server_name:
        # Python's ssl checks the name it sends as SNI: no SNI, no name check.
        raise at.error("server_name: false needs verify: false (the name check needs SNI)")
    return spec


_TLS = TlsSpec(certificates=())
_UPSTREAM_TLS = UpstreamTlsSpec()


# --- rate and connection limits (nginx limit_req / limit_conn) --------------------------

_LIMIT_ZONE_KEYS = ("key", "kind", "name", "rate", "shared", "size")
_LIMIT_REQ_KEYS = ("burst", "delay", "nodelay", "zone")
_LIMIT_CONN_KEYS = ("limit", "zone")
_LIMIT_ZONE = LimitZoneSpec(name="", key="", kind="req")
_LIMIT_ZONE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
# nginx limit_req_zone rate=: a whole number of requests per second or per minute.
_RATE = re.compile(r"([0-9]{1,9})r/([sm])")
# nginx refuses zones under 8 pages ("zone is too small").
_MIN_LIMIT_ZONE = 32 * 1024


def _limit_zones(value: object, path: _Path) -> tuple[LimitZoneSpec, ...]:
    zones = tuple(_limit_zone(item, path.index(i)) for i, item in enumerate(_items(value, path)))
    _check_unique([z.name for z in zones], path, "limit zone")
    return zones


def _limit_zone(value: object, path: _Path) -> LimitZoneSpec:
    section = _section(value, path, _LIMIT_ZONE_KEYS, required=("key", "kind", "name"))
    kind = _choice(*section.at("kind"), ("req", "conn"))
    if kind == "req" and not section.has("rate"):
        raise path.error("a req zone needs a rate (e.g. 10r/s or 30r/m)")
    if kind == "conn" and section.has("rate"):
        raise path.key("rate").error("a conn zone has no rate (limit_conn sets the limit)")
    size = _LIMIT_ZONE.size
    if section.has("size"):
        raw, at = section.at("size")
        size = _size_value(raw, at)
        if size < _MIN_LIMIT_ZONE:
            raise at.error(f"zone is too small: {raw!r} (at least 32k)")
    return LimitZoneSpec(
        name=section.text("name", "", _LIMIT_ZONE_NAME),
        key=section.text("key", "", _TEMPLATE),
        kind=kind,
        rate=_rate(*section.at("rate")) if kind == "req" else 0.0,
        size=size,
        shared=section.boolean("shared", False),
    )


def _size_value(value: object, path: _Path) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not isinstance(value, str):
        raise path.error(f"{path.name} must be a size such as 10m, not {_kind(value)}")
    try:
        return parse_size(value)
    except ValueError as exc:
        raise path.error(f"{path.name}: {exc}") from None


def _rate(value: object, path: _Path) -> float:
    """Requests per second from `10r/s`, `30r/m` (nginx's spelling) or a number."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e9:
        return float(value)
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        raise path.error(f"rate must be like 10r/s or 30r/m (more than 0), not {value!r}")
    count = int(match.group(1))
    return count / 60 if match.group(2) == "m" else float(count)


def _route_limits(section: _Section) -> dict[str, Any]:
    """The route's limit_* fields (nginx limit_req, limit_conn and their statuses).
    Unlike access rules they are not inherited by nested routes: each route says its own."""
    return {
        "limit_req": _limit_reqs(*section.at("limit_req")) if section.has("limit_req") else (),
        # nginx limit_req_status / limit_conn_status: 400 to 599.
        "limit_req_status": section.integer("limit_req_status", _ROUTE.limit_req_status, 400, 599),
        "limit_conn": _limit_conns(*section.at("limit_conn")) if section.has("limit_conn") else (),
        "limit_conn_status": section.integer(
            "limit_conn_status", _ROUTE.limit_conn_status, 400, 599
        ),
        "limit_dry_run": section.boolean("limit_dry_run", _ROUTE.limit_dry_run),
    }


def _limit_reqs(value: object, path: _Path) -> tuple[LimitReqSpec, ...]:
    limits = tuple(_limit_req(item, path.index(i)) for i, item in enumerate(_items(value, path)))
    _check_unique([limit.zone for limit in limits], path, "limit_req zone")
    return limits


def _limit_req(value: object, path: _Path) -> LimitReqSpec:
    section = _section(value, path, _LIMIT_REQ_KEYS, required=("zone",))
    nodelay = section.boolean("nodelay", False)
    if nodelay and section.has("delay"):
        raise path.error("nodelay and delay exclude each other (nodelay: no request waits)")
    return LimitReqSpec(
        zone=section.text("zone", "", _LIMIT_ZONE_NAME),
        burst=section.integer("burst", 0, 0, _MAX_COUNT),
        nodelay=nodelay,
        delay=section.integer("delay", 0, 0, _MAX_COUNT),
    )


def _limit_conns(value: object, path: _Path) -> tuple[LimitConnSpec, ...]:
    limits = tuple(_limit_conn(item, path.index(i)) for i, item in enumerate(_items(value, path)))
    _check_unique([limit.zone for limit in limits], path, "limit_conn zone")
    return limits


def _limit_conn(value: object, path: _Path) -> LimitConnSpec:
    section = _section(value, path, _LIMIT_CONN_KEYS, required=("zone", "limit"))
    # nginx stores the count in 16 bits.
    return LimitConnSpec(
        zone=section.text("zone", "", _LIMIT_ZONE_NAME), limit=section.integer("limit", 1, 1, 65535)
    )


def _check_limit_zones(
    servers: tuple[ServerSpec, ...], zones: tuple[LimitZoneSpec, ...], path: _Path
) -> None:
    """Every route's limit_req / limit_conn names a zone of `limit_zones` of its kind."""
    kinds = {z.name: z.kind for z in zones}

    def check(limits: tuple[LimitReqSpec | LimitConnSpec, ...], kind: str, at: _Path) -> None:
        for i, limit in enumerate(limits):
            if kinds.get(limit.zone) != kind:
                known = ", ".join(sorted(n for n, k in kinds.items() if k == kind)) or "none"
                reason = f"{limit.zone!r} is not a {kind} zone of limit_zones ({known})"
                raise at.index(i).key("zone").error(reason)

    def walk(routes: tuple[RouteSpec, ...], at: _Path) -> None:
        for i, route in enumerate(routes):
            here = at.index(i)
            check(route.limit_req, "req", here.key("limit_req"))
            check(route.limit_conn, "conn", here.key("limit_conn"))
            walk(route.routes, here.key("routes"))

    for si, server in enumerate(servers):
        walk(server.routes, path.index(si).key("routes"))
        if server.forward is not None:
            at = path.index(si).key("forward")
            check(server.forward.limit_req, "req", at.key("limit_req"))
            check(server.forward.limit_conn, "conn", at.key("limit_conn"))
