"""Explainable routing: why a request went where it went, on request.

Owns the opt-in check (the configured trace header, carrying the admin token when one
is set) and the trace line: server, location, rules, balancer state, peer, tried,
skipped, retries, cache. The line goes back to the client in a response header of the
same name and into a shared ring the admin process streams (GET /api/trace).

Installed on `WorkerContext.trace` only when a trace is configured, so requests of a
configuration without one pay a single `is None` check; with one, a request without the
header pays a scan of its header names. Knows nothing of sockets; reads the exchange's
attributes (proxy/exchange.py) and nothing else.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from ferryman.observability.recent import SharedRing

__all__ = ["Tracer"]


class Tracer:
    __slots__ = ("_by_server", "_default", "_token", "ring", "slot")

    def __init__(
        self,
        by_server: dict[Any, bytes],
        default: bytes | None,
        token: str | None,
        ring: SharedRing | None = None,
        slot: int = 0,
    ) -> None:
        # VirtualServer -> lower-case header name (a server's own `trace`, else the top
        # level's); `default` for servers not listed (None: those are never traced).
        self._by_server = by_server
        self._default = default
        self._token = token.encode() if token else None
        self.ring = ring
        self.slot = slot

    def wants(self, ex: Any) -> bytes | None:
        """The trace header's name (as configured) if this request asked for a trace."""
        name = self._by_server.get(ex.server, self._default)
        if name is None:
            return None
        headers: list[tuple[bytes, bytes]] = ex.head.headers
        for n, v in headers:
            if len(n) == len(name) and n.lower() == name:
                if self._token is None or hmac.compare_digest(v, self._token):
                    return n
                return None
        return None

    def field(self, ex: Any) -> bytes:
        """`Name: trace\\r\\n` for a request that asked, else b"". Publishes the trace."""
        name = self.wants(ex)
        if name is None:
            return b""
        line = describe(ex)
        if self.ring is not None:
            target = ex.head.target[:200].decode("latin-1")
            self.ring.push(self.slot, f"{time.time():.3f}\t{target}\t{line}".encode())
        return b"%s: %s\r\n" % (name, line.encode("latin-1", "replace"))

    def __repr__(self) -> str:
        return f"Tracer(default={self._default!r}, servers={len(self._by_server)})"


def describe(ex: Any) -> str:
    """`server=...; location=...; rules=...; balancer=...; peer=...; tried=...;
    skipped=...; retries=N; cache=...` for the exchange `ex`, at its response head."""
    server, route, group, peer = ex.server, ex.route, ex.group, ex.peer
    parts = [
        f"server={server.names[0] if server is not None and server.names else '_'}",
        f"location={_location(route)}",
        f"rules={_rules(ex, route)}",
    ]
    if group is not None:
        peers = ", ".join(f"{p.name} active={p.active} w={p.spec.weight}" for p in group.peers)
        parts.append(f"balancer={group.strategy}({peers})")
    parts.append(f"peer={peer.name if peer is not None else '-'}")
    parts.append("tried=" + (", ".join(ex.attempts) if ex.attempts else "-"))
    skipped = ex.skipped_peers()
    parts.append("skipped=" + (", ".join(skipped) if skipped else "-"))
    parts.append(f"retries={max(0, ex.tries - 1)}")
    parts.append(f"cache={_cache(ex)}")
    return "; ".join(parts)


def _location(route: Any) -> str:
    if route is None:
        return "-"
    spec = route.spec
    return f"{spec.path}" if spec.match == "prefix" else f"{spec.match}:{spec.path}"


def _rules(ex: Any, route: Any) -> str:
    names = [type(f).__name__ for f in (route.filters if route is not None else ())]
    if ex.rewritten:
        names.append("rewrite")
    return ",".join(names) if names else "-"


def _cache(ex: Any) -> str:
    op = ex.cache_op
    if op is None:
        return "-"
    field: bytes = op.field
    # op.field is the rendered `Cache-Status: ...\r\n` line; show its value.
    value = field.partition(b":")[2].rstrip(b"\r\n").lstrip(b" ")
    return value.decode("latin-1") if value else "-"
