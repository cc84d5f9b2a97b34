"""Configuration: frozen data only. Loading (native YAML, nginx.conf), dumping back to
native YAML, cross-checks and units live here; no I/O beyond reading the file, and
nothing here knows about sockets or the event loop."""

from __future__ import annotations

from ferryman.config.dump import dump_native
from ferryman.config.load import load_config
from ferryman.config.native import load_native
from ferryman.config.quick import quick_config
from ferryman.config.schema import (
    AccessLogSpec,
    ClientTimeouts,
    Config,
    HeaderAdd,
    ListenSpec,
    MapSpec,
    PeerSpec,
    ReturnSpec,
    RewriteSpec,
    RouteSpec,
    ScriptStep,
    ServerSpec,
    SetSpec,
    UpstreamSpec,
)
from ferryman.config.units import parse_duration, parse_size

__all__ = [
    "AccessLogSpec",
    "ClientTimeouts",
    "Config",
    "HeaderAdd",
    "ListenSpec",
    "MapSpec",
    "PeerSpec",
    "ReturnSpec",
    "RewriteSpec",
    "RouteSpec",
    "ScriptStep",
    "ServerSpec",
    "SetSpec",
    "UpstreamSpec",
    "dump_native",
    "load_config",
    "load_native",
    "parse_duration",
    "parse_size",
    "quick_config",
]
