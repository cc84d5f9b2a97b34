"""Redis addresses of the `cluster` section: one URL names a single server, a Sentinel
group or a Redis Cluster (config/schema.py ClusterSpec).

Owns the URL grammar and its checks, run once at load. Pure: no sockets, no redis
import. Knows nothing about what is stored in Redis.

    redis://[[user]:password@]host[:port][/db]          one server (rediss: TLS)
    redis-sentinel://[[user]:password@]h:p[,h:p...]/SERVICE[/db]   Sentinel
    redis-cluster://[[user]:password@]h:p[,h:p...]      Redis Cluster (db 0 only)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

__all__ = ["RedisTarget", "parse_redis_url"]

# Redis's own default port; Sentinel's (26379) for sentinel addresses.
_PORTS: Final = {"single": 6379, "sentinel": 26379, "cluster": 6379}
_SCHEMES: Final = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "redis-sentinel": ("sentinel", False),
    "rediss-sentinel": ("sentinel", True),
    "redis-cluster": ("cluster", False),
    "rediss-cluster": ("cluster", True),
}
_URL: Final = re.compile(
    r"(?P<scheme>[a-z-]+)://(?:(?P<auth>[^@/]*)@)?(?P<hosts>[^/]+)(?P<path>/.*)?"
)
_HOST: Final = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9_.-]+))(?::(?P<port>[0-9]{1,5}))?"
)
_SERVICE: Final = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_DB: Final = re.compile(r"[0-9]{1,2}")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where the cluster's Redis is, parsed from its URL."""

    mode: str  # single | sentinel | cluster
    nodes: tuple[tuple[str, int], ...]  # the server, the sentinels, or cluster seeds
    tls: bool
    db: int = 0
    service: str = ""  # Sentinel: the monitored master's name
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        # Never the password: this ends up in logs.
        nodes = ",".join(f"{h}:{p}" for h, p in self.nodes)
        service = f"/{self.service}" if self.service else ""
        return f"RedisTarget({self.mode}{' tls' if self.tls else ''} {nodes}{service} db={self.db})"


def parse_redis_url(url: str) -> RedisTarget:
    """The target a URL names; ValueError says what is wrong with it."""
    m = _URL.fullmatch(url)
    if m is None:
        raise ValueError(f"not a Redis URL: {_redacted(url)!r}")
    scheme = _SCHEMES.get(m["scheme"])
    if scheme is None:
        raise ValueError(f"unknown scheme {m['scheme']!r} (expected one of: {', '.join(_SCHEMES)})")
    mode, tls = scheme
    nodes = tuple(_node(text, _PORTS[mode]) for text in m["hosts"].split(","))
    if mode == "single" and len(nodes) != 1:
        raise ValueError(
            "a redis:// URL names one server (use redis-sentinel:// or redis-cluster://)"
        )
    username, password = _auth(m["auth"])
    parts = [p for p in (m["path"] or "").split("/") if p]
    service = ""
    if mode == "sentinel":
        if not parts or not _SERVICE.fullmatch(parts[0]):
            raise ValueError("a redis-sentinel:// URL ends with /SERVICE (the master's name)")
        service, parts = parts[0], parts[1:]
    db = 0
    if parts:
        if len(parts) > 1 or not _DB.fullmatch(parts[0]) or mode == "cluster":
            raise ValueError(f"unexpected path {m['path']!r} (only /DB, and not for a cluster)")
        db = int(parts[0])  # two ASCII digits, checked above
    return RedisTarget(mode, nodes, tls, db, service, username, password)


def _node(text: str, default_port: int) -> tuple[str, int]:
    m = _HOST.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid host {text!r}")
    port = int(m["port"]) if m["port"] else default_port  # ASCII digits, checked above
    if not 0 < port < 65536:
        raise ValueError(f"invalid port in {text!r}")
    return (m["v6"] or m["name"], port)


def _auth(auth: str | None) -> tuple[str | None, str | None]:
    if not auth:
        return None, None
    user, colon, password = auth.partition(":")
    if not colon:
        return None, unquote(user)  # redis://secret@host: a bare password, as redis-py
    return unquote(user) or None, unquote(password)


def _redacted(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)
