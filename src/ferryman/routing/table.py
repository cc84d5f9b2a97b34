"""(Host, path) -> route, compiled once at load. Pure: no I/O, no clock.

Server selection follows nginx's order for the names it supports: an exact name, then
the longest `*.suffix` wildcard, then the listener's default server (the first one).
Within a server, the longest matching path prefix wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["RouteTable", "VirtualServer"]

T = TypeVar("T")


class VirtualServer(Generic[T]):
    __slots__ = ("names", "routes", "single")

    def __init__(self, names: Sequence[str], routes: Sequence[tuple[str, T]]) -> None:
        self.names = tuple(n.lower() for n in names)
        # Longest prefix first, so the first match is the best one.
        self.routes = tuple(
            (prefix.encode(), route) for prefix, route in sorted(routes, key=lambda r: -len(r[0]))
        )
        # The common case: one `location /`; skip the prefix loop entirely.
        self.single: T | None = (
            self.routes[0][1] if (len(self.routes) == 1 and self.routes[0][0] == b"/") else None
        )

    def match(self, path: bytes) -> T | None:
        if self.single is not None:
            return self.single
        for prefix, route in self.routes:
            if path.startswith(prefix):
                return route
        return None

    def __repr__(self) -> str:
        return f"VirtualServer({self.names}, {len(self.routes)} routes)"


class RouteTable(Generic[T]):
    """The virtual servers of one listener."""

    __slots__ = ("_default", "_exact", "_only", "_wildcards")

    def __init__(self, servers: Sequence[VirtualServer[T]]) -> None:
        if not servers:
            raise ValueError("a listener needs at least one server")
        self._default = servers[0]
        self._exact: dict[bytes, VirtualServer[T]] = {}
        wild: list[tuple[bytes, VirtualServer[T]]] = []
        for vs in servers:
            for name in vs.names:
                if name.startswith("*."):
                    wild.append((name[1:].encode(), vs))
                else:
                    self._exact.setdefault(name.encode(), vs)
        self._wildcards = tuple(sorted(wild, key=lambda w: -len(w[0])))
        self._only = servers[0] if len(servers) == 1 else None

    def server_for(self, host: bytes | None) -> VirtualServer[T]:
        if self._only is not None or host is None:
            return self._only or self._default
        name = _strip_port(host).lower()
        vs = self._exact.get(name)
        if vs is not None:
            return vs
        for suffix, vs in self._wildcards:
            if name.endswith(suffix):
                return vs
        return self._default

    def match(self, host: bytes | None, path: bytes) -> T | None:
        return self.server_for(host).match(path)


def _strip_port(host: bytes) -> bytes:
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end >= 0 else host
    return host.partition(b":")[0]
