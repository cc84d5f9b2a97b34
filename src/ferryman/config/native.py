"""The native YAML front end: text -> `Config`, validated once, every error with a path.

Owns the YAML dialect (a strict subset, see `_Loader`) and the mapping from native keys
onto `config/schema.py`. Errors name the file and key path, e.g.
`demo.yaml: upstreams.echo.servers[2].weight`, or `demo.yaml:7` for YAML syntax.
Knows nothing about sockets, the runtime, or nginx.conf.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
import yaml.constructor
import yaml.nodes
import yaml.reader

from ferryman.config.schema import (
    AccessLogSpec,
    ClientTimeouts,
    Config,
    ListenSpec,
    PeerSpec,
    RouteSpec,
    ServerSpec,
    UpstreamSpec,
)
from ferryman.config.units import parse_address, parse_duration, parse_host_name, parse_ip
from ferryman.errors import ConfigError

__all__ = ["ACCESS_LOG_FORMATS", "balancer_names", "load_native"]

ACCESS_LOG_FORMATS = ("combined", "json")
_FALLBACK_BALANCERS = ("round_robin", "least_conn")

# nginx takes any positive weight; 1000 is our own cap, far above any sane ratio, so
# that a stray extra digit is caught at load rather than starving the other peers.
_MAX_WEIGHT = 1000
_MAX_COUNT = 1_000_000
# A name usable in a key path and as `proxy_pass http://<name>` in nginx terms.
_UPSTREAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
# RFC 9110 section 5.1: a field name is a token.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 section 5.5: no CR, LF or NUL (or other controls but tab) in a field value.
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
_ROUTE_PATH = re.compile(r"/[\x21-\x7e]*")
_SERVER_NAME = re.compile(r"[\x21-\x7e]+")
_FILE_PATH = re.compile(r"[^\x00-\x1f\x7f]+")

# Schema defaults, read from the dataclasses so that there is one source of truth.
_CONFIG = Config(servers=(), upstreams=())
_UPSTREAM = UpstreamSpec(name="", servers=())
_PEER = PeerSpec(host="", port=1)
_ROUTE = RouteSpec(upstream="")
_TIMEOUTS = ClientTimeouts()
_ACCESS_LOG = AccessLogSpec()


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
    "hosts",
    "servers",
    "timeouts",
    "upstreams",
    "worker_connections",
    "workers",
)


def _config(data: object, path: _Path) -> Config:
    top = _section(data, path, _TOP_KEYS, required=("upstreams", "servers"))
    upstreams = _upstreams(*top.at("upstreams"))
    names = {u.name for u in upstreams}
    return Config(
        servers=_servers(*top.at("servers"), names),
        upstreams=upstreams,
        workers=_workers(*top.at("workers")) if top.has("workers") else _CONFIG.workers,
        worker_connections=top.integer(
            "worker_connections", _CONFIG.worker_connections, 1, _MAX_COUNT
        ),
        client_timeouts=_timeouts(*top.at("timeouts")) if top.has("timeouts") else _TIMEOUTS,
        access_log=_access_log(*top.at("access_log")) if top.has("access_log") else _ACCESS_LOG,
        hosts=_hosts(*top.at("hosts")) if top.has("hosts") else (),
        source=path.source,
    )


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


def _access_log(value: object, path: _Path) -> AccessLogSpec:
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
        log_format = _choice(*section.at("format"), ACCESS_LOG_FORMATS)
    return AccessLogSpec(path=log_path, format=log_format)


def _timeouts(value: object, path: _Path) -> ClientTimeouts:
    section = _section(value, path, ("client_header", "client_body", "keepalive", "send"))
    return ClientTimeouts(
        header=section.duration("client_header", _TIMEOUTS.header, positive=True),
        body=section.duration("client_body", _TIMEOUTS.body, positive=True),
        # 0 disables client keep-alive, as `keepalive_timeout 0` does in nginx.
        keepalive=section.duration("keepalive", _TIMEOUTS.keepalive),
        send=section.duration("send", _TIMEOUTS.send, positive=True),
    )


# --- upstreams -------------------------------------------------------------------

_UPSTREAM_KEYS = ("balance", "keepalive", "keepalive_requests", "keepalive_timeout", "servers")
_PEER_KEYS = ("address", "backup", "down", "fail_timeout", "max_fails", "weight")


def _upstreams(value: object, path: _Path) -> tuple[UpstreamSpec, ...]:
    mapping = _string_keys(value, path)
    if not mapping:
        raise path.error("upstreams must define at least one upstream")
    upstreams = []
    for name, body in mapping.items():
        at = path.key(name)
        if not _UPSTREAM_NAME.fullmatch(name):
            raise at.error(f"invalid upstream name {name!r} (letters, digits, _ . -)")
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
    return UpstreamSpec(
        name=name,
        servers=peers,
        balance=balance,
        keepalive=section.integer("keepalive", _UPSTREAM.keepalive, 0, _MAX_COUNT),
        keepalive_timeout=section.duration("keepalive_timeout", _UPSTREAM.keepalive_timeout),
        keepalive_requests=section.integer(
            "keepalive_requests", _UPSTREAM.keepalive_requests, 1, _MAX_COUNT
        ),
    )


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


# --- servers and routes ----------------------------------------------------------

_SERVER_KEYS = ("listen", "routes", "server_names")
_ROUTE_KEYS = (
    "connect_timeout",
    "forwarded_headers",
    "host_header",
    "next_upstream_tries",
    "path",
    "read_timeout",
    "send_timeout",
    "set_headers",
    "upstream",
)


def _servers(value: object, path: _Path, upstreams: set[str]) -> tuple[ServerSpec, ...]:
    return tuple(
        _server(item, path.index(i), upstreams) for i, item in enumerate(_items(value, path))
    )


def _server(value: object, path: _Path, upstreams: set[str]) -> ServerSpec:
    section = _section(value, path, _SERVER_KEYS, required=("listen", "routes"))
    names: tuple[str, ...] = ()
    if section.has("server_names"):
        raw, at = section.at("server_names")
        items = _items(raw, at, allow_single=True)
        names = tuple(_text(name, at.index(i), _SERVER_NAME) for i, name in enumerate(items))
    raw, at = section.at("routes")
    routes = tuple(_route(item, at.index(i), upstreams) for i, item in enumerate(_items(raw, at)))
    _check_unique([r.path for r in routes], at, "path")
    return ServerSpec(listen=_listens(*section.at("listen")), routes=routes, server_names=names)


def _listens(value: object, path: _Path) -> tuple[ListenSpec, ...]:
    listens = []
    for i, item in enumerate(_items(value, path, allow_single=True)):
        at = path.index(i) if isinstance(value, list) else path
        # A YAML int is a bare port, like `listen 8080;`.
        text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
        if not isinstance(text, str):
            raise at.error(f"{at.name} must be an address string, not {_kind(item)}")
        try:
            host, port = parse_address(text)
        except ValueError as exc:
            raise at.error(f"{at.name}: {exc}") from None
        # A bare port listens on every IPv4 address, as nginx's `listen 8080;` does.
        listens.append(ListenSpec(host="0.0.0.0" if host is None else host, port=port))
    # nginx refuses the same listen twice in one server ("a duplicate listen").
    _check_unique([spec.address for spec in listens], path, "address")
    return tuple(listens)


def _route(value: object, path: _Path, upstreams: set[str]) -> RouteSpec:
    section = _section(value, path, _ROUTE_KEYS, required=("upstream",))
    upstream = _text(*section.at("upstream"), _UPSTREAM_NAME)
    if upstream not in upstreams:
        known = ", ".join(sorted(upstreams))
        raise path.key("upstream").error(f"upstream {upstream!r} is not defined (have: {known})")
    return RouteSpec(
        upstream=upstream,
        path=section.text("path", _ROUTE.path, _ROUTE_PATH),
        host_header=section.text("host_header", _ROUTE.host_header, _SERVER_NAME),
        set_headers=_set_headers(*section.at("set_headers")) if section.has("set_headers") else (),
        connect_timeout=section.duration("connect_timeout", _ROUTE.connect_timeout, positive=True),
        read_timeout=section.duration("read_timeout", _ROUTE.read_timeout, positive=True),
        send_timeout=section.duration("send_timeout", _ROUTE.send_timeout, positive=True),
        next_upstream_tries=section.integer(
            "next_upstream_tries", _ROUTE.next_upstream_tries, 0, _MAX_COUNT
        ),
        forwarded_headers=section.boolean("forwarded_headers", _ROUTE.forwarded_headers),
    )


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


def _check_unique(values: list[str], path: _Path, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise path.error(f"{path.name} has the {what} {value!r} more than once")
        seen.add(value)
