"""nginx-style `$variables` in header templates, compiled once at load.

A template becomes either constant bytes or a function of the request context, so
nothing is parsed per request. Unknown variables are refused at load. The context is
anything with `head` (RequestHead), `remote_addr`, `remote_port`, `scheme`,
`server_port` and `server_name` (the exchange provides them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ferryman.errors import ConfigError

__all__ = ["Template", "compile_template", "known_variable"]

Template = bytes | Callable[[Any], bytes]
_VAR = re.compile(r"\$(\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)")


def _host(ctx: Any) -> bytes:
    host: bytes | None = ctx.head.host
    if host is None:
        return ctx.server_name  # type: ignore[no-any-return]
    # nginx $host: lower-cased, without the port.
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1].lower()
    return host.partition(b":")[0].lower()


def _http_host(ctx: Any) -> bytes:
    return ctx.head.host or b""  # type: ignore[no-any-return]


def _request_uri(ctx: Any) -> bytes:
    return ctx.head.target  # type: ignore[no-any-return]


def _args(ctx: Any) -> bytes:
    return ctx.head.query  # type: ignore[no-any-return]


def _proxy_add_xff(ctx: Any) -> bytes:
    prior = [v for n, v in ctx.head.headers if n.lower() == b"x-forwarded-for"]
    prior.append(ctx.remote_addr)
    return b", ".join(prior)


_SIMPLE: dict[str, Callable[[Any], bytes]] = {
    "host": _host,
    "http_host": _http_host,
    "remote_addr": lambda c: c.remote_addr,
    "remote_port": lambda c: c.remote_port,
    "scheme": lambda c: c.scheme,
    "server_port": lambda c: c.server_port,
    "server_name": lambda c: c.server_name,
    "request_method": lambda c: c.head.method,
    "request_uri": _request_uri,
    "uri": lambda c: c.head.path,
    "args": _args,
    "query_string": _args,
    "proxy_add_x_forwarded_for": _proxy_add_xff,
}


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


def _resolve(name: str) -> Callable[[Any], bytes] | None:
    fn = _SIMPLE.get(name)
    if fn is not None:
        return fn
    for prefix, factory in (("http_", _http_var), ("arg_", _arg_var), ("cookie_", _cookie_var)):
        if name.startswith(prefix) and len(name) > len(prefix):
            return factory(
                name[len(prefix) :].lower() if prefix == "http_" else name[len(prefix) :]
            )
    return None


def known_variable(name: str) -> bool:
    return _resolve(name) is not None


def compile_template(text: str, where: str) -> Template:
    parts: list[bytes | Callable[[Any], bytes]] = []
    pos = 0
    if "${" in _VAR.sub("", text):
        raise ConfigError(where, f"unclosed variable in {text!r}")
    for m in _VAR.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()].encode())
        name = m.group(1).strip("{}")
        fn = _resolve(name)
        if fn is None:
            raise ConfigError(where, f"unknown variable ${name}")
        parts.append(fn)
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:].encode())
    if all(isinstance(p, bytes) for p in parts):
        return b"".join(p for p in parts if isinstance(p, bytes))
    if len(parts) == 1 and callable(parts[0]):
        return parts[0]

    def render(ctx: Any) -> bytes:
        return b"".join(p if isinstance(p, bytes) else p(ctx) for p in parts)

    return render
