"""(Host, path) -> route, compiled once at load. Pure: no I/O, no clock.

Server selection follows nginx's order for the names it supports: an exact name, then
the longest `*.suffix` wildcard, then the listener's default server (the first one).
Within a server, the longest matching path prefix wins.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Generic, TypeVar

from ferryman.http.fields import host_name
from ferryman.routing.locations import LocationTree, compile_regex

__all__ = ["RouteTable", "VirtualServer"]

T = TypeVar("T")


class VirtualServer(Generic[T]):
    """One `server`: its names, and either plain prefix routes or, for nginx's full
    location rules, a LocationTree (`locations`). `script` is the server-level rewrite
    script and `extra` anything the caller wants to keep with the server; neither is
    read here. `single` is the route every request gets when nothing needs a search."""

    __slots__ = ("extra", "locations", "names", "routes", "script", "single")

    def __init__(
        self,
        names: Sequence[str],
        routes: Sequence[tuple[str, T]],
        *,
        locations: LocationTree[T] | None = None,
        script: object = None,
        extra: object = None,
        single: T | None = None,
    ) -> None:
        self.names = tuple(n if n.startswith("~") else n.lower() for n in names)
        self.locations = locations
        self.script = script
        self.extra = extra
        # Longest prefix first, so the first match is the best one.
        self.routes = tuple(
            (prefix.encode(), route) for prefix, route in sorted(routes, key=lambda r: -len(r[0]))
        )
        # The common case: one `location /`; skip the prefix loop entirely.
        self.single: T | None = (
            self.routes[0][1] if (len(self.routes) == 1 and self.routes[0][0] == b"/") else None
        )
        if locations is not None:
            # With a location tree, the caller knows whether one route serves all.
            self.single = single

    def match(self, path: bytes) -> T | None:
        if self.single is not None:
            return self.single
        if self.locations is not None:
            return self.locations.find(path.decode("latin-1"))
        for prefix, route in self.routes:
            if path.startswith(prefix):
                return route
        return None

    def __repr__(self) -> str:
        return f"VirtualServer({self.names}, {len(self.routes)} routes)"


class RouteTable(Generic[T]):
    """The virtual servers of one listener, chosen by Host in nginx's order: exact name,
    longest `*.suffix` wildcard, longest `prefix.*` wildcard, first matching `~regex`,
    then the default server (`default`, else the first)."""

    __slots__ = (
        "_default",
        "_exact",
        "_only",
        "_regexes",
        "_tails",
        "_wildcards",
        "has_regexes",
    )

    def __init__(self, servers: Sequence[VirtualServer[T]], default: int = 0) -> None:
        if not servers:
            raise ValueError("a listener needs at least one server")
        self._default = servers[default]
        self._exact: dict[bytes, VirtualServer[T]] = {}
        wild: list[tuple[bytes, VirtualServer[T]]] = []
        tails: list[tuple[bytes, VirtualServer[T]]] = []
        regexes: list[tuple[re.Pattern[str], VirtualServer[T]]] = []
        for vs in servers:
            for name in vs.names:
                if name.startswith("~"):
                    regexes.append((compile_regex(name[1:]), vs))
                elif name.startswith("*."):
                    wild.append((name[1:].encode(), vs))
                elif name.startswith("."):  # nginx: ".example.com" = both forms
                    wild.append((name.encode(), vs))
                    self._exact.setdefault(name[1:].encode(), vs)
                elif name.endswith(".*"):
                    tails.append((name[:-1].encode(), vs))
                else:
                    self._exact.setdefault(name.encode(), vs)
        self._wildcards = tuple(sorted(wild, key=lambda w: -len(w[0])))
        self._tails = tuple(sorted(tails, key=lambda w: -len(w[0])))
        self._regexes = tuple(regexes)
        self.has_regexes = bool(regexes)
        self._only = servers[0] if len(servers) == 1 else None

    def server_for(self, host: bytes | None) -> VirtualServer[T]:
        """The server for a Host value as received (port, case, trailing dot and all)."""
        return self.server_named(host_name(host) if host is not None else None)

    def server_named(self, name: bytes | None) -> VirtualServer[T]:
        """The server for a host name already in `fields.host_name` form (the request
        head carries it: `RequestHead.host_name`)."""
        if self._only is not None or name is None:
            return self._only or self._default
        vs = self._exact.get(name)
        if vs is not None:
            return vs
        for suffix, vs in self._wildcards:
            if name.endswith(suffix):
                return vs
        for head, vs in self._tails:
            if name.startswith(head):
                return vs
        if self._regexes:
            text = name.decode("latin-1")
            for pattern, vs in self._regexes:
                if pattern.search(text) is not None:
                    return vs
        return self._default

    def server_and_captures(
        self, name: bytes | None
    ) -> tuple[VirtualServer[T], tuple[tuple[str, str], ...]]:
        """Like server_named, with the named groups of a `~regex` server name that chose
        the server (nginx makes them variables)."""
        server = self.server_named(name)
        if name is None or not self._regexes:
            return server, ()
        text = name.decode("latin-1")
        for pattern, vs in self._regexes:
            if vs is server:
                m = pattern.search(text)
                if m is not None:
                    return server, tuple((k, v or "") for k, v in m.groupdict().items())
        return server, ()

    def match(self, host: bytes | None, path: bytes) -> T | None:
        return self.server_for(host).match(path)
