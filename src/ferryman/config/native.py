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
from dataclasses import dataclass, replace
from typing import Any

import yaml
import yaml.constructor
import yaml.nodes
import yaml.reader

from ferryman.config.schema import (
    MATCH_KINDS,
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
from ferryman.config.units import (
    parse_address,
    parse_duration,
    parse_host_name,
    parse_ip,
    parse_size,
)
from ferryman.errors import ConfigError

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
    "error_log",
    "hosts",
    "log_formats",
    "maps",
    "pid_file",
    "hosts_file",
    "resolve_interval",
    "servers",
    "timeouts",
    "upstreams",
    "worker_connections",
    "workers",
)


def _config(data: object, path: _Path) -> Config:
    top = _section(data, path, _TOP_KEYS, required=("servers",))
    upstreams = _upstreams(*top.at("upstreams")) if top.has("upstreams") else ()
    names = {u.name for u in upstreams}
    log_formats = _log_formats(*top.at("log_formats")) if top.has("log_formats") else ()
    formats = (*ACCESS_LOG_FORMATS, *(name for name, _ in log_formats))
    return Config(
        servers=_servers(*top.at("servers"), names),
        upstreams=upstreams,
        workers=_workers(*top.at("workers")) if top.has("workers") else _CONFIG.workers,
        worker_connections=top.integer(
            "worker_connections", _CONFIG.worker_connections, 1, _MAX_COUNT
        ),
        client_timeouts=_timeouts(*top.at("timeouts")) if top.has("timeouts") else _TIMEOUTS,
        access_log=(
            _access_log(*top.at("access_log"), formats) if top.has("access_log") else _ACCESS_LOG
        ),
        hosts=_hosts(*top.at("hosts")) if top.has("hosts") else (),
        maps=_maps(*top.at("maps")) if top.has("maps") else (),
        pid_file=_optional_path(*top.at("pid_file")) if top.has("pid_file") else None,
        hosts_file=_optional_path(*top.at("hosts_file")) if top.has("hosts_file") else None,
        resolve_interval=top.duration("resolve_interval", _CONFIG.resolve_interval, positive=True),
        error_log=_error_log(*top.at("error_log")) if top.has("error_log") else None,
        log_formats=log_formats,
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

_SERVER_KEYS = ("add_headers", "listen", "routes", "script", "server_names")
_LISTEN_KEYS = ("address", "default_server")


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
        routes = _routes(*section.at("routes"), upstreams)
    return ServerSpec(
        listen=_listens(*section.at("listen")),
        routes=routes,
        server_names=names,
        script=_script(*section.at("script")) if section.has("script") else (),
        add_headers=_add_headers(*section.at("add_headers")) if section.has("add_headers") else (),
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
    default_server = False
    if isinstance(item, dict):
        section = _section(item, path, _LISTEN_KEYS, required=("address",))
        default_server = section.boolean("default_server", False)
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
    return ListenSpec("0.0.0.0" if host is None else host, port, default_server=default_server)


# --- routes ------------------------------------------------------------------------

_ROUTE_KEYS = (
    "add_headers",
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
)


def _routes(value: object, path: _Path, upstreams: set[str]) -> tuple[RouteSpec, ...]:
    routes = tuple(
        _route(item, path.index(i), upstreams) for i, item in enumerate(_items(value, path))
    )
    _check_unique([key for r in routes if (key := _route_key(r))], path, "location")
    return routes


def _route_key(route: RouteSpec) -> str:
    # As nginx: `= /a` and `/a` may coexist, `/a` and `^~ /a` may not; regexes may repeat.
    kind = {"exact": "= ", "prefix": "", "prefix_priority": "", "named": ""}.get(route.match)
    return "" if kind is None else kind + route.path


def _route(value: object, path: _Path, upstreams: set[str]) -> RouteSpec:
    section = _section(value, path, _ROUTE_KEYS)
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
        hide_headers=_field_names(section, "hide_headers"),
        pass_headers=_field_names(section, "pass_headers"),
        add_headers=_add_headers(*section.at("add_headers")) if section.has("add_headers") else (),
        script=_script(*section.at("script")) if section.has("script") else (),
        client_max_body_size=_body_size(*section.at("client_max_body_size"))
        if section.has("client_max_body_size")
        else _ROUTE.client_max_body_size,
        # A Content-Type field value; "" sends none (nginx `default_type ""`).
        default_type=section.text("default_type", _ROUTE.default_type, _FIELD_VALUE),
        pass_upgrade=section.boolean("pass_upgrade", _ROUTE.pass_upgrade),
        routes=_routes(*section.at("routes"), upstreams) if section.has("routes") else (),
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

_SCRIPT_KINDS = ("return", "rewrite", "set")


def _script(value: object, path: _Path) -> tuple[ScriptStep, ...]:
    steps = []
    for i, item in enumerate(_items(value, path)):
        at = path.index(i)
        mapping = _string_keys(item, at)
        if len(mapping) != 1 or next(iter(mapping)) not in _SCRIPT_KINDS:
            raise at.error(
                f"{at.name} must be a mapping with one key, set, rewrite or return; "
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


_SCRIPT_STEPS = {"set": _set_step, "rewrite": _rewrite_step, "return": _return_step}


def _check_unique(values: list[str], path: _Path, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise path.error(f"{path.name} has the {what} {value!r} more than once")
        seen.add(value)
