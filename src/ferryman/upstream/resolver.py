"""Re-resolution of `resolve` upstream servers (nginx's `server NAME resolve`): every
interval, each such name is looked up again and its peers follow its addresses, one
peer per address. Peers that stay keep their state (health, counters, idle
connections); new ones are added, gone ones removed, and requests in flight are left
alone. The lookup is injected: the default consults `hosts_file` first (re-read every
time, so tests and containers can move a name), then the system resolver.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from ferryman.balancing.registry import create_balancer
from ferryman.config.schema import Config, UpstreamSpec
from ferryman.upstream.group import UpstreamGroup
from ferryman.upstream.peer import PeerState
from ferryman.upstream.pool import ConnectionPool

__all__ = ["Lookup", "PeerResolver", "read_hosts_file", "system_lookup"]

_log = logging.getLogger(__name__)

Lookup = Callable[[str, int], Awaitable[list[str]]]


def read_hosts_file(path: str) -> dict[str, list[str]]:
    """`ADDRESS NAME [NAME...]` lines (# comments), as /etc/hosts: name -> addresses."""
    out: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.partition("#")[0].split()
                for name in fields[1:]:
                    out.setdefault(name.lower(), []).append(fields[0])
    except OSError as exc:
        _log.error("cannot read hosts file %s: %s", path, exc)
    return out


def system_lookup(loop: asyncio.AbstractEventLoop, hosts_file: str | None) -> Lookup:
    async def lookup(host: str, port: int) -> list[str]:
        if hosts_file is not None:
            found = read_hosts_file(hosts_file).get(host.lower())
            if found:
                return found
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    return lookup


class PeerResolver:
    __slots__ = ("_config", "_groups", "_lookup", "_pools")

    def __init__(
        self,
        config: Config,
        groups: dict[str, UpstreamGroup],
        pools: dict[str, ConnectionPool],
        lookup: Lookup,
    ) -> None:
        self._config = config
        self._groups = groups
        self._pools = pools
        self._lookup = lookup

    @property
    def needed(self) -> bool:
        return any(p.resolve for u in self._config.upstreams for p in u.servers)

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._config.resolve_interval)

    async def refresh(self) -> None:
        for up in self._config.upstreams:
            if any(p.resolve for p in up.servers):
                await self._refresh_upstream(up)

    async def _refresh_upstream(self, up: UpstreamSpec) -> None:
        group, pool = self._groups[up.name], self._pools[up.name]
        current = group.peers
        peers: list[PeerState] = []
        for spec in up.servers:
            mine = [p for p in current if p.spec is spec]
            if not spec.resolve:
                peers.extend(mine)
                continue
            try:
                addresses = await self._lookup(spec.host, spec.port)
            except (OSError, UnicodeError) as exc:
                # nginx keeps the last good addresses when a lookup fails.
                _log.error("resolving %s failed, keeping its peers: %s", spec.host, exc)
                peers.extend(mine)
                continue
            by_address = {p.connect_host: p for p in mine}
            peers.extend(by_address.get(a) or PeerState(spec, 0, a) for a in addresses)
        if [id(p) for p in peers] == [id(p) for p in current] or not peers:
            return
        added = sorted(p.name for p in peers if p not in current)
        removed = sorted(p.name for p in current if p not in peers)
        group.replace_peers(peers, create_balancer(up.balance, up, peers))
        pool.replace_peers(peers)
        _log.warning(
            "upstream %s: peers now %s (added %s, removed %s)",
            up.name,
            [p.name for p in peers],
            added,
            removed,
        )
