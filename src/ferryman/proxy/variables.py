"""nginx-style `$variables` in header templates, compiled once at load.

A template becomes either constant bytes or a function of the request context, so
nothing is parsed per request. Unknown variables are refused at load. The context is
anything with `head` (RequestHead), `remote_addr`, `remote_port`, `scheme`,
`server_port` and `server_name`; the later variables also read `uri`, `args`,
`proxy_host`, `upstream_addr`, `status`, `body_bytes`, `response`, `started`,
`upstream_start`, `capture(n)` and `var(name)` (the exchange provides them all).

User variables (nginx `set` and `map`) must be declared at compile time: a template
naming one that no `set` or `map` defines is refused, as nginx refuses it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from ferryman.errors import ConfigError
from ferryman.http.fields import host_name
from ferryman.http.messages import RequestHead
from ferryman.tls.info import TLS_VARIABLES

__all__ = [
    "Template",
    "compile_log_format",
    "compile_template",
    "is_request_host",
    "known_variable",
    "request_host",
]

Template = bytes | Callable[[Any], bytes]
_VAR = re.compile(r"\$(\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)")


def request_host(head: RequestHead) -> bytes | None:
    """$host as the request gives it: the name of its Host (or of an absolute target),
    None when it has neither (then $host is the server's name). Typed, so that the
    exchange computes the usual upstream Host natively (`is_request_host`)."""
    name = head.host_name
    if name is not None:
        return name
    host = head.host
    return None if host is None else host_name(host)


def _host(ctx: Any) -> bytes:
    host = request_host(ctx.head)
    return ctx.server_name if host is None else host  # type: ignore[no-any-return]


def is_request_host(template: Template) -> bool:
    """Whether `template` is exactly `$host` (the default Host sent upstream)."""
    return template is _host


def _http_host(ctx: Any) -> bytes:
    return ctx.head.host or b""  # type: ignore[no-any-return]


def _request_uri(ctx: Any) -> bytes:
    return ctx.head.target  # type: ignore[no-any-return]


def _args(ctx: Any) -> bytes:
    return ctx.args  # type: ignore[no-any-return]


def _is_args(ctx: Any) -> bytes:
    return b"?" if ctx.args else b""


def _request(ctx: Any) -> bytes:
    return ctx.head.request_line  # type: ignore[no-any-return]


def _status(ctx: Any) -> bytes:
    return b"%d" % ctx.status if ctx.status else b"000"


def _request_time(ctx: Any) -> bytes:
    started: float = ctx.started
    return b"%.3f" % (time.monotonic() - started) if started else b"0.000"


def _upstream_time(ctx: Any) -> bytes:
    start: float = ctx.upstream_start
    return b"%.3f" % (time.monotonic() - start) if start else b""


def _time_local(ctx: Any) -> bytes:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z").encode()


def _time_iso8601(ctx: Any) -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z").encode()


def _msec(ctx: Any) -> bytes:
    return b"%.3f" % time.time()


def _proxy_add_xff(ctx: Any) -> bytes:
    prior = [v for n, v in ctx.head.headers if n.lower() == b"x-forwarded-for"]
    prior.append(ctx.remote_addr)
    return b", ".join(prior)


def _request_filename(ctx: Any) -> bytes:
    """nginx $request_filename: the file $uri maps to under the route's root or alias
    (ngx_http_map_uri_to_path). A route that serves no files has no root here (nginx
    would use its default `html` directory): empty, which no file test passes."""
    route = ctx.route
    static = route.static if route is not None else None
    return static.path_for(ctx, ctx.uri) if static is not None else b""  # type: ignore[no-any-return]


_SIMPLE: dict[str, Callable[[Any], bytes]] = {
    "host": _host,
    "http_host": _http_host,
    "remote_addr": lambda c: c.remote_addr,
    "remote_port": lambda c: c.remote_port,
    # nginx realip and PROXY protocol: the socket peer, and the PROXY header's source.
    "realip_remote_addr": lambda c: c.realip_remote_addr,
    "proxy_protocol_addr": lambda c: c.proxy_protocol_addr,
    "proxy_protocol_port": lambda c: c.proxy_protocol_port,
    "scheme": lambda c: c.scheme,
    "server_port": lambda c: c.server_port,
    "server_name": lambda c: c.server_name,
    "request_method": lambda c: c.head.method,
    "request_uri": _request_uri,
    "uri": lambda c: c.uri,
    "document_uri": lambda c: c.uri,
    "request_filename": _request_filename,
    "args": _args,
    "query_string": _args,
    "is_args": _is_args,
    "request": _request,
    "server_protocol": lambda c: b"HTTP/" + c.head.version,
    "proxy_add_x_forwarded_for": _proxy_add_xff,
    "proxy_host": lambda c: c.proxy_host,
    "upstream_addr": lambda c: c.upstream_addr,
    "status": _status,
    "body_bytes_sent": lambda c: b"%d" % c.body_bytes,
    "request_time": _request_time,
    "upstream_response_time": _upstream_time,
    "time_local": _time_local,
    "time_iso8601": _time_iso8601,
    "msec": _msec,
    "remote_user": lambda c: b"",
}
# $ssl_* and $https (tls/info.py): read the connection's `ssl_object`.
_SIMPLE.update(TLS_VARIABLES)


def _http_var(name: str) -> Callable[[Any], bytes]:
    lname = name.replace("_", "-").encode()

    def get(ctx: Any) -> bytes:
        for n, v in ctx.head.headers:
            if n.lower() == lname:
                return v  # type: ignore[no-any-return]
        return b""

    return get


def _arg_var(name: str) -> Callable[[Any], bytes]:
    key = name.encode()

    def get(ctx: Any) -> bytes:
        for part in ctx.head.query.split(b"&"):
            k, _, v = part.partition(b"=")
            if k == key:
                return v  # type: ignore[no-any-return]
        return b""

    return get


def _cookie_var(name: str) -> Callable[[Any], bytes]:
    key = name.encode()

    def get(ctx: Any) -> bytes:
        for n, v in ctx.head.headers:
            if n.lower() == b"cookie":
                for part in v.split(b";"):
                    k, _, val = part.strip(b" \t").partition(b"=")
                    if k == key:
                        return val  # type: ignore[no-any-return]
        return b""

    return get


def _sent_http_var(name: str) -> Callable[[Any], bytes]:
    lname = name.replace("_", "-").encode()

    def get(ctx: Any) -> bytes:
        response = ctx.response
        if response is None:
            return b""
        for n, v in response.headers:
            if n.lower() == lname:
                return v  # type: ignore[no-any-return]
        return b""

    return get


def _capture(n: int) -> Callable[[Any], bytes]:
    return lambda c: c.capture(n)  # type: ignore[no-any-return]


def _user_var(name: str) -> Callable[[Any], bytes]:
    return lambda c: c.var(name)  # type: ignore[no-any-return]


def _resolve(name: str, user_vars: frozenset[str] = frozenset()) -> Callable[[Any], bytes] | None:
    if name in user_vars:
        # Declared by `set` or `map`: it shadows a built-in of the same name, as in nginx
        # where `set` may only target variables it can change.
        return _user_var(name)
    fn = _SIMPLE.get(name)
    if fn is not None:
        return fn
    if name.isdigit() and len(name) == 1:
        return _capture(int(name))
    if name.startswith("sent_http_") and len(name) > 10:
        return _sent_http_var(name[10:].lower())
    for prefix, factory in (("http_", _http_var), ("arg_", _arg_var), ("cookie_", _cookie_var)):
        if name.startswith(prefix) and len(name) > len(prefix):
            return factory(
                name[len(prefix) :].lower() if prefix == "http_" else name[len(prefix) :]
            )
    return None


def known_variable(name: str, user_vars: frozenset[str] = frozenset()) -> bool:
    return _resolve(name, user_vars) is not None


def compile_template(text: str, where: str, user_vars: frozenset[str] = frozenset()) -> Template:
    parts = _compile_parts(text, where, user_vars)
    if all(isinstance(p, bytes) for p in parts):
        return b"".join(p for p in parts if isinstance(p, bytes))
    if len(parts) == 1 and callable(parts[0]):
        return parts[0]
    return _renderer(parts)


def _renderer(parts: list[bytes | Callable[[Any], bytes]]) -> Callable[[Any], bytes]:
    # A loop into a list, not a generator into join: compiled, join then takes the list
    # as it is, and no generator object is made per render (a cache key is rendered for
    # every cacheable request, a custom log line for every request).
    def render(ctx: Any) -> bytes:
        out: list[bytes] = []
        for p in parts:
            out.append(p if isinstance(p, bytes) else p(ctx))
        return b"".join(out)

    return render


_LOG_ESCAPE = re.compile(rb'[^\x20-\x7e]|["\\]')


def _log_value(fn: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    # nginx log_format (escape=default): an empty value logs as "-", and `"`, `\` and
    # bytes outside printable ASCII as \xHH.
    def get(ctx: Any) -> bytes:
        value = fn(ctx)
        if not value:
            return b"-"
        if _LOG_ESCAPE.search(value) is None:
            return value
        return _LOG_ESCAPE.sub(lambda m: b"\\x%02X" % m.group()[0], value)

    return get


def compile_log_format(
    text: str, where: str, user_vars: frozenset[str] = frozenset()
) -> Callable[[Any], bytes]:
    """A `log_format` template: one line (with its newline) per request."""
    parts = [
        p if isinstance(p, bytes) else _log_value(p) for p in _compile_parts(text, where, user_vars)
    ]
    parts.append(b"\n")
    return _renderer(parts)


def _compile_parts(
    text: str, where: str, user_vars: frozenset[str]
) -> list[bytes | Callable[[Any], bytes]]:
    parts: list[bytes | Callable[[Any], bytes]] = []
    pos = 0
    if "${" in _VAR.sub("", text):
        raise ConfigError(where, f"unclosed variable in {text!r}")
    for m in _VAR.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()].encode())
        name = m.group(1).strip("{}")
        fn = _resolve(name, user_vars)
        if fn is None:
            raise ConfigError(where, f"unknown variable ${name}")
        parts.append(fn)
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:].encode())
    return parts
