"""Configuration: frozen data only. Loading, cross-checks and units live here; no I/O
beyond reading the file, and nothing here knows about sockets or the event loop."""

from __future__ import annotations

from ferryman.config.load import load_config
from ferryman.config.native import load_native
from ferryman.config.quick import quick_config
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
from ferryman.config.units import parse_duration, parse_size

__all__ = [
    "AccessLogSpec",
    "ClientTimeouts",
    "Config",
    "ListenSpec",
    "PeerSpec",
    "RouteSpec",
    "ServerSpec",
    "UpstreamSpec",
    "load_config",
    "load_native",
    "parse_duration",
    "parse_size",
    "quick_config",
]
