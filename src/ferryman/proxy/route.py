"""A route at run time: a RouteSpec compiled against this worker's upstream group and
pool, with header templates compiled and constant header bytes pre-rendered."""

from __future__ import annotations

from typing import Any

from ferryman.config.schema import RouteSpec
from ferryman.proxy.variables import Template, compile_template
from ferryman.upstream.group import UpstreamGroup
from ferryman.upstream.pool import ConnectionPool

__all__ = ["Route"]


class Route:
    __slots__ = (
        "connect_timeout",
        "drop",
        "dynamic_headers",
        "forwarded",
        "group",
        "host",
        "max_tries",
        "pool",
        "read_timeout",
        "send_timeout",
        "spec",
        "static_headers",
    )

    def __init__(
        self, spec: RouteSpec, group: UpstreamGroup, pool: ConnectionPool, where: str
    ) -> None:
        self.spec = spec
        self.group = group
        self.pool = pool
        self.host: Template = compile_template(spec.host_header, f"{where}.host_header")
        static: list[bytes] = []
        dynamic: list[tuple[bytes, Template]] = []
        # Client fields replaced by the route's own (hop-by-hop fields, Host, Expect and
        # X-Forwarded-* are never copied anyway: see RequestHead.fields).
        drop = set()
        for name, value in spec.set_headers:
            bname = name.encode()
            drop.add(bname.lower())
            tpl = compile_template(value, f"{where}.set_headers.{name}")
            if isinstance(tpl, bytes):
                if tpl:  # nginx: an empty value removes the header
                    static.append(b"%s: %s\r\n" % (bname, tpl))
            else:
                dynamic.append((bname, tpl))
        self.forwarded = spec.forwarded_headers
        self.drop = frozenset(drop)
        self.static_headers = b"".join(static)
        self.dynamic_headers = tuple(dynamic)
        self.connect_timeout = spec.connect_timeout
        self.read_timeout = spec.read_timeout
        self.send_timeout = spec.send_timeout
        npeers = len(group.peers)
        self.max_tries = min(spec.next_upstream_tries or npeers, npeers)

    def render_host(self, ctx: Any) -> bytes:
        host = self.host
        return host if isinstance(host, bytes) else host(ctx)

    def render_extra(self, ctx: Any) -> bytes:
        if not self.dynamic_headers:
            return self.static_headers
        out = [self.static_headers]
        for name, tpl in self.dynamic_headers:
            value = tpl if isinstance(tpl, bytes) else tpl(ctx)
            if value:
                out.append(b"%s: %s\r\n" % (name, value))
        return b"".join(out)

    def __repr__(self) -> str:
        return f"Route({self.spec.path} -> {self.group.name})"
