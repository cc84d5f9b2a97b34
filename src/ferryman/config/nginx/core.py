"""Translate functions for nginx's core: main and events, `include`, the `http`,
`server` and `location` blocks, `listen`, `server_name`, client timeouts, logs, and the
directives accepted as no-ops because they cannot change what a client or upstream sees.

Each function takes the `Scope` the walker stands in and one statement the directive
table has already checked for context, block shape, arity and duplicates. Knows
nothing about proxying (`proxy.py`), upstream blocks (`upstream.py`) or the frozen
schema beyond the small specs it fills.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re

from ferryman.config.nginx import tls, values
from ferryman.config.nginx.draft import Context, Level, LocationDraft, Scope, ServerDraft
from ferryman.config.nginx.syntax import Stmt, parse_file
from ferryman.config.nginx.values import unsupported
from ferryman.config.schema import AccessLogSpec, ClientLimits, ListenSpec

__all__ = [
    "access_log",
    "charset",
    "client_timeout",
    "error_log",
    "events",
    "http",
    "include",
    "keepalive_requests",
    "listen",
    "location",
    "log_format",
    "no_op",
    "no_op_buffers",
    "no_op_flag",
    "no_op_number",
    "no_op_size",
    "no_op_time",
    "pid",
    "process_mode",
    "server",
    "server_name",
    "skip_block",
    "user",
    "worker_connections",
    "worker_processes",
    "worker_shutdown_timeout",
]

_MAX_WORKERS = 1024
_MAX_CONNECTIONS = 1_000_000
_ERROR_LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
_GLOB_MAGIC = re.compile(r"[*?[]")
# A server without `listen` listens on *:80 (nginx run as root; *:8000 otherwise).
_DEFAULT_LISTEN = ListenSpec("0.0.0.0", 80)


# --- main and events ---------------------------------------------------------------


def worker_processes(scope: Scope, stmt: Stmt) -> None:
    (text,) = stmt.args
    if text == "auto":
        scope.config.workers = os.cpu_count() or 1
    else:
        scope.config.workers = values.number(stmt, text, 1, _MAX_WORKERS)


def worker_connections(scope: Scope, stmt: Stmt) -> None:
    scope.config.worker_connections = values.number(stmt, stmt.args[0], 1, _MAX_CONNECTIONS)


def pid(scope: Scope, stmt: Stmt) -> None:
    scope.config.pid_file = values.path(stmt, scope.config.runtime_dir, stmt.args[0])


def worker_shutdown_timeout(scope: Scope, stmt: Stmt) -> None:
    """How long old workers finish in-flight requests on reload or stop; nginx waits
    forever without it, Ferryman uses its own bound (Config.worker_shutdown_timeout)."""
    scope.config.shutdown_timeout = values.time(stmt, stmt.args[0], positive=True)


def user(scope: Scope, stmt: Stmt) -> None:
    # Naming the user Ferryman already runs as changes nothing, so it says nothing (nginx
    # started as root with `user root` is silent too); any other user is not switched to.
    if stmt.args[0] == _running_user():
        return
    scope.config.warn(
        stmt, '"user" is ignored: Ferryman does not switch users, it runs as the user it starts as'
    )


def _running_user() -> str | None:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None


def process_mode(scope: Scope, stmt: Stmt) -> None:
    """`daemon on|off` is kept (workers.py detaches on `on`). `master_process` is accepted
    either way: Ferryman always runs a master with workers (`off` is nginx's debugging
    mode, which changes nothing a client sees)."""
    on = values.flag(stmt, stmt.args[0])
    if stmt.name == "daemon":
        scope.config.daemon = on


def events(scope: Scope, stmt: Stmt) -> None:
    scope.config.events = stmt
    scope.walk(stmt.block or (), scope.inner(Context.EVENTS))


def include(scope: Scope, stmt: Stmt) -> None:
    """nginx `include`: a file, or a glob (matching files in name order, none is fine),
    relative to the main file's directory; the statements join the current block."""
    config = scope.config
    pattern = values.path(stmt, config.base_dir, stmt.args[0])
    if _GLOB_MAGIC.search(pattern):
        files = sorted(name for name in glob.glob(pattern) if os.path.isfile(name))
    elif os.path.isfile(pattern):
        files = [pattern]
    else:
        raise stmt.error(f'open() "{pattern}" failed (2: No such file or directory)')
    for file in files:
        if file in config.including:
            raise stmt.error(f'include of "{file}" makes a cycle')
        if file not in config.parsed:
            config.parsed[file] = parse_file(file)
        config.including.append(file)
        try:
            scope.walk(config.parsed[file], scope)
        finally:
            config.including.pop()


# --- http, server, location ----------------------------------------------------------


def http(scope: Scope, stmt: Stmt) -> None:
    scope.walk(stmt.block or (), scope.inner(Context.HTTP, level=Level()))


def server(scope: Scope, stmt: Stmt) -> None:
    draft = ServerDraft(stmt=stmt, level=scope.the_level().child())
    scope.config.servers.append(draft)
    scope.walk(stmt.block or (), scope.inner(Context.SERVER, level=draft.level, server=draft))
    if not draft.listens:
        draft.listens.append((_DEFAULT_LISTEN, stmt))


def location(scope: Scope, stmt: Stmt) -> None:
    match, path = _location_kind(stmt)
    parent = scope.location
    if parent is not None:
        _check_nesting(stmt, parent, match, path)
    if _CONTROL.search(path):
        raise stmt.error(f'control characters in location "{path}"')
    if match in ("regex", "regex_icase"):
        path = values.regex(stmt, path, icase=match == "regex_icase")
    elif match == "named" and not _NAMED.fullmatch(path):
        raise stmt.error(f'invalid named location "{path}" (printable ASCII, no spaces)')
    elif match != "named" and not path.startswith("/"):
        raise stmt.error(f'location "{path}" does not start with "/" and can never match')
    draft = LocationDraft(stmt=stmt, match=match, path=path, level=scope.the_level().child())
    siblings = parent.locations if parent is not None else scope.the_server().locations
    _check_duplicate(stmt, siblings, draft)
    siblings.append(draft)
    scope.walk(stmt.block or (), scope.inner(Context.LOCATION, level=draft.level, location=draft))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAMED = re.compile(r"@[\x21-\x7e]+")
# `location MOD PATH` modifiers, and the same glued to the path (`location =/`).
_MODIFIERS = {"=": "exact", "^~": "prefix_priority", "~": "regex", "~*": "regex_icase"}
_GLUED = (("~*", "regex_icase"), ("^~", "prefix_priority"), ("=", "exact"), ("~", "regex"))


def _location_kind(stmt: Stmt) -> tuple[str, str]:
    if len(stmt.args) == 2:
        modifier, path = stmt.args
        if modifier not in _MODIFIERS:
            raise stmt.error(f'invalid location modifier "{modifier}"')
        return _MODIFIERS[modifier], path
    (name,) = stmt.args
    for prefix, match in _GLUED:
        if name.startswith(prefix):
            return match, name[len(prefix) :]
    return ("named" if name.startswith("@") else "prefix"), name


def _check_nesting(stmt: Stmt, parent: LocationDraft, match: str, path: str) -> None:
    # nginx's rules (ngx_http_core_location), in its words.
    if parent.match == "exact":
        raise stmt.error(f'location "{path}" cannot be inside the exact location "{parent.path}"')
    if parent.match == "named":
        raise stmt.error(f'location "{path}" cannot be inside the named location "{parent.path}"')
    if match == "named":
        raise stmt.error(f'named location "{path}" can be on the server level only')
    if match not in ("regex", "regex_icase") and not path.startswith(parent.path):
        raise stmt.error(f'location "{path}" is outside location "{parent.path}"')


def _check_duplicate(stmt: Stmt, siblings: list[LocationDraft], draft: LocationDraft) -> None:
    key = _duplicate_key(draft)
    if key is not None and any(_duplicate_key(other) == key for other in siblings):
        raise stmt.error(f'duplicate location "{draft.path}"')


def _duplicate_key(draft: LocationDraft) -> tuple[str, str] | None:
    # `= /a` and `/a` may coexist; `/a` and `^~ /a` may not; regexes may repeat.
    kind = {"exact": "exact", "prefix": "prefix", "prefix_priority": "prefix"}.get(draft.match)
    if draft.match == "named":
        kind = "named"
    return (kind, draft.path) if kind is not None else None


# --- listen and server_name ----------------------------------------------------------

# listen parameters that change nothing Ferryman does: it always sets SO_REUSEPORT and
# binds every listen address itself.
_LISTEN_NO_OPS = ("reuseport", "bind")
_LISTEN_PLANNED = ("quic",)
_LISTEN_OTHERS = (
    "setfib=",
    "fastopen=",
    "rcvbuf=",
    "sndbuf=",
    "accept_filter=",
    "deferred",
    "ipv6only=",
    "so_keepalive=",
    "multipath",
)


def listen(scope: Scope, stmt: Stmt) -> None:
    address, *params = stmt.args
    spec = ListenSpec(*_listen_address(stmt, address))
    for param in params:
        if param in ("default_server", "default"):
            spec = dataclasses.replace(spec, default_server=True)
        elif param == "proxy_protocol":
            # Connections must start with a PROXY header (server/proxy_protocol.py);
            # its address is $proxy_protocol_addr, the client's only through realip.
            spec = dataclasses.replace(spec, proxy_protocol=True)
        elif param == "ssl":
            # TLS settings come from the ssl_* directives when the file is frozen.
            spec = dataclasses.replace(spec, tls=tls.SSL_MARK)
        elif param == "http2":
            # Read when the file is frozen (tls.listen_tls), with `http2 on`.
            continue
        elif param.startswith("backlog="):
            values.number(stmt, param.removeprefix("backlog="), 1)
        elif param in _LISTEN_NO_OPS:
            continue
        elif param in _LISTEN_PLANNED or param.startswith(_LISTEN_OTHERS):
            raise stmt.error(f'the "{param}" parameter of "listen" is not supported yet')
        else:
            raise stmt.error(f'invalid parameter "{param}"')
    if "http2" in params and spec.tls is None:
        # nginx would speak h2c by prior knowledge here; Ferryman offers h2 by ALPN only.
        raise stmt.error('the "http2" parameter of "listen" without "ssl" is not supported yet')
    draft = scope.the_server()
    if any(other.address == spec.address for other, _ in draft.listens):
        raise stmt.error(f"a duplicate listen {spec.address}")
    draft.listens.append((spec, stmt))


def _listen_address(stmt: Stmt, text: str) -> tuple[str, int]:
    # `listen 80` and `listen *:80` are every IPv4 address; `listen 127.0.0.1` is port 80.
    if text.isascii() and text.isdigit():
        return "0.0.0.0", _listen_port(stmt, text)
    if text.startswith("*:"):
        return "0.0.0.0", _listen_port(stmt, text[2:])
    host, port = values.host_port(stmt, text, what="listen")
    return host, 80 if port is None else port


def _listen_port(stmt: Stmt, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise stmt.error(f'invalid port in "{text}" of the "listen" directive')
    return int(text)


_WILDCARD = re.compile(r"\*\.[^*]+|\.[^*]+|[^*]+\.\*|[^*]*")
# Host names are ASCII on the wire (IDNs travel as punycode), so a name with anything
# else could never match.
_SERVER_NAME_CHARS = re.compile(r"[\x21-\x7e]*")


def server_name(scope: Scope, stmt: Stmt) -> None:
    draft = scope.the_server()
    for name in stmt.args:
        if not _SERVER_NAME_CHARS.fullmatch(name):
            raise stmt.error(f'server name "{name}" is invalid (printable ASCII, no spaces)')
        if name.startswith("~"):
            if name == "~":
                raise stmt.error(f'empty regex in server name "{name}"')
            # nginx: a regex with an upper-case letter matches case-insensitively.
            icase = any("A" <= ch <= "Z" for ch in name)
            draft.names.append(("~" + values.regex(stmt, name[1:], icase=icase), stmt))
            continue
        if name.lower() == "$hostname":
            raise stmt.error('"$hostname" in "server_name" is not supported yet')
        if not _WILDCARD.fullmatch(name) or name in (".", "*."):
            raise stmt.error(f'server name "{name}" is invalid')
        # nginx lower-cases names that are not regexes.
        draft.names.append((name.lower(), stmt))


# --- client timeouts and logs -----------------------------------------------------

# nginx directive -> ClientTimeouts field.
_CLIENT_TIMEOUTS = {
    "client_header_timeout": "header",
    "client_body_timeout": "body",
    "keepalive_timeout": "keepalive",
    "send_timeout": "send",
}


# Config.keepalive_header's bound (config/native.py refuses the same).
_MAX_KEEPALIVE_HEADER = 86400


def client_timeout(scope: Scope, stmt: Stmt) -> None:
    if scope.context is not Context.HTTP:
        raise unsupported(stmt, f'"{stmt.name}" is only supported in the http context')
    if len(stmt.args) > 1:
        # keepalive_timeout's second argument adds `Keep-Alive: timeout=N` (whole
        # seconds, as ngx_http_core_keepalive's ngx_parse_time(value, 1)) to kept-alive
        # answers.
        header = values.time(stmt, stmt.args[1])
        if header > _MAX_KEEPALIVE_HEADER:
            raise stmt.error(f'invalid value "{stmt.args[1]}" in "{stmt.name}" directive')
        scope.config.keepalive_header = int(header)
    # keepalive_timeout 0 turns client keep-alive off; the others must be positive.
    positive = stmt.name != "keepalive_timeout"
    seconds = values.time(stmt, stmt.args[0], positive=positive)
    scope.config.client_timeouts[_CLIENT_TIMEOUTS[stmt.name]] = seconds


# A head bigger than this is no longer a limit but a memory hazard (config/native.py
# refuses the same).
_MAX_HEAD_LIMIT = 16 * 1024 * 1024


def large_client_header_buffers(scope: Scope, stmt: Stmt) -> None:
    """`large_client_header_buffers NUMBER SIZE` (nginx default 4 8k): a request line
    longer than SIZE is 414, a head larger than NUMBER * SIZE is 431. nginx has no field
    count limit; Ferryman's own (ClientLimits.headers) stays."""
    if scope.context is not Context.HTTP:
        raise unsupported(stmt, f'"{stmt.name}" is only supported in the http context')
    number = values.number(stmt, stmt.args[0], 1, 1024)
    size = values.size(stmt, stmt.args[1])
    if size < 1 or number * size > _MAX_HEAD_LIMIT:
        raise stmt.error(f'invalid value "{stmt.args[1]}" in "{stmt.name}" directive')
    scope.config.client_limits = ClientLimits(request_line=size, header_bytes=number * size)


def error_log(scope: Scope, stmt: Stmt) -> None:
    """Ferryman has one error log: the first `error_log` of the main (or, with none
    there, the http) context sets it, and every other one must repeat it."""
    file, level = stmt.args[0], stmt.args[1] if len(stmt.args) > 1 else "error"
    if file.startswith(("syslog:", "memory:")):
        raise stmt.error(f'"{file.split(":")[0]}:" in "error_log" is not supported yet')
    if level not in _ERROR_LOG_LEVELS:
        raise stmt.error(f'invalid log level "{level}"')
    spec = (file if file == "stderr" else values.path(stmt, scope.config.runtime_dir, file), level)
    current = scope.config.error_log
    if current is None and scope.context in (Context.MAIN, Context.HTTP):
        scope.config.error_log = (spec, stmt)
    elif current is None:
        raise unsupported(
            stmt,
            f'"error_log" in the {scope.context.value} context needs the same one in the main'
            " context: Ferryman has one error log",
        )
    elif current[0] != spec:
        raise unsupported(
            stmt,
            f'"error_log" differs from the one at {current[1].where}: Ferryman has one error'
            " log, so every error_log must name the same file and level",
        )


def log_format(scope: Scope, stmt: Stmt) -> None:
    name, *parts = stmt.args
    if not _LOG_FORMAT_NAME.fullmatch(name):
        raise stmt.error(f'invalid log format name "{name}" (letters, digits, _ . -)')
    if parts and parts[0].startswith("escape="):
        escape = parts.pop(0).removeprefix("escape=")
        if escape not in ("default", "json", "none"):
            raise stmt.error(f'unknown log format escaping "{escape}"')
        if escape != "default":
            raise stmt.error(f'"escape={escape}" in "log_format" is not supported yet')
    if not parts:
        raise stmt.error('invalid number of arguments in "log_format" directive')
    if name == "combined" or any(name == other for other, _ in scope.config.log_formats):
        raise stmt.error(f'duplicate "log_format" name "{name}"')
    scope.config.log_formats.append((name, "".join(parts)))


_ACCESS_LOG_NO_OPS = ("buffer=", "flush=")
_LOG_FORMAT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def access_log(scope: Scope, stmt: Stmt) -> None:
    config = scope.config
    if scope.context is not Context.HTTP:
        raise unsupported(stmt, '"access_log" is only supported in the http context')
    if config.access_log is not None:
        raise unsupported(stmt, 'more than one "access_log" is not supported yet')
    file, *rest = stmt.args
    if file == "off":
        if rest:
            raise stmt.error('invalid number of arguments in "access_log" directive')
        config.access_log = AccessLogSpec(path=None)
        return
    if file.startswith("syslog:"):
        raise stmt.error('"syslog:" in "access_log" is not supported yet')
    fmt = rest[0] if rest else "combined"
    if fmt != "combined" and all(fmt != name for name, _ in config.log_formats):
        raise stmt.error(f'unknown log format "{fmt}"')
    for param in rest[1:]:
        if not param.startswith(_ACCESS_LOG_NO_OPS):
            raise stmt.error(f'the "{param}" parameter of "access_log" is not supported yet')
    config.access_log = AccessLogSpec(path=values.path(stmt, config.runtime_dir, file), format=fmt)


# --- accepted as no-ops -------------------------------------------------------------


def no_op(scope: Scope, stmt: Stmt) -> None:
    """Accepted and ignored: it changes nothing a client or an upstream sees here."""


def no_op_flag(scope: Scope, stmt: Stmt) -> None:
    values.flag(stmt, stmt.args[0])


def no_op_number(scope: Scope, stmt: Stmt) -> None:
    values.number(stmt, stmt.args[0], 0)


def no_op_size(scope: Scope, stmt: Stmt) -> None:
    values.size(stmt, stmt.args[0])


def no_op_buffers(scope: Scope, stmt: Stmt) -> None:
    """`proxy_buffers NUMBER SIZE` and the like: checked, changes nothing here."""
    values.number(stmt, stmt.args[0], 1)
    values.size(stmt, stmt.args[1])


def keepalive_requests(scope: Scope, stmt: Stmt) -> None:
    """Client connections close after this many requests (http context only)."""
    count = values.number(stmt, stmt.args[0], 0)
    if scope.context is not Context.HTTP:
        raise unsupported(stmt, '"keepalive_requests" is only supported in the http context')
    scope.config.keepalive_requests = count


def no_op_time(scope: Scope, stmt: Stmt) -> None:
    values.time(stmt, stmt.args[0])


def skip_block(scope: Scope, stmt: Stmt) -> None:
    """`types { ... }`: MIME types of files nginx serves; Ferryman serves no files.
    `return` bodies take `default_type`, or the type of one of nginx's built-in
    extensions (.html, .gif, .jpg) the runtime knows, whatever the block says."""


def charset(scope: Scope, stmt: Stmt) -> None:
    # `charset off` is nginx's default; any charset adds `; charset=...` to the
    # Content-Type of proxied text responses, which Ferryman does not do.
    if stmt.args[0] != "off":
        raise stmt.error(f'"charset {stmt.args[0]}" is not supported yet (only "off")')
