"""Configuration: frozen data only. Loading, cross-checks and units live here; no I/O
beyond reading the file, and nothing here knows about sockets or the event loop."""

from __future__ import annotations

from ferryman.config.schema import (
    AccessLogSpec,
    ClientTimeouts,
    Config,
    ListenSpec,
    PeerSpec,
    RouteSpec,
    ServerSpec,
    UpstreamSpec,
)

__all__ = [
    "AccessLogSpec",
    "ClientTimeouts",
    "Config",
    "ListenSpec",
    "PeerSpec",
    "RouteSpec",
    "ServerSpec",
    "UpstreamSpec",
]
