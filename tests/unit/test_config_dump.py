"""config/dump.py: `dump_native` writes the native YAML of any Config, defaults left out,
and `load_native` reads it back equal."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
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
    ServerSpec,
    SetSpec,
    UpstreamSpec,
)

MINIMAL = Config(
    servers=(ServerSpec(listen=(ListenSpec("0.0.0.0", 80),), routes=(RouteSpec("echo"),)),),
    upstreams=(UpstreamSpec("echo", (PeerSpec("127.0.0.1", 3000),)),),
)

# Strings a YAML reader would take for something else unless quoted.
TRICKY = ["true", "False", "off", "yes", "~", "null", "1", "-1", "1.0", "0x1f", "1e3", "", " "]


def _round_trip(config: Config) -> Config:
    return load_native(dump_native(config), config.source)


def test_minimal_config_leaves_defaults_out() -> None:
    assert dump_native(MINIMAL) == (
        "upstreams:\n"
        "  echo:\n"
        "    servers:\n"
        "    - 127.0.0.1:3000\n"
        "servers:\n"
        "- listen:\n"
        "  - 0.0.0.0:80\n"
        "  routes:\n"
        "  - path: /\n"
        "    upstream: echo\n"
    )
    assert _round_trip(MINIMAL) == MINIMAL


def test_every_field_round_trips() -> None:
    route = RouteSpec(
        upstream="echo",
        path="/api/",
        match="prefix_priority",
        upstream_uri="/v2/",
        host_header="$host:$server_port",
        set_headers=(("X-A", "true"), ("X-Empty", ""), ("X-Num", "1.0")),
        connect_timeout=0.5,
        read_timeout=90.0,
        send_timeout=1.001,
        next_upstream_tries=3,
        forwarded_headers=False,
        http_version="1.0",
        hide_headers=("x-powered-by",),
        pass_headers=("server",),
        add_headers=(HeaderAdd("X-B", "off"), HeaderAdd("X-C", "yes", always=True)),
        script=(
            SetSpec("v", "~"),
            RewriteSpec("^/a/(.*)$", "/b/$1?", "last"),
            ReturnSpec(200, "line one\nline\ttwo"),
            ReturnSpec(444),
        ),
        client_max_body_size=1000,
        default_type="text/html; charset=utf-8",
        pass_upgrade=False,
        routes=(
            RouteSpec(path="\\.(gif|jpg)$", match="regex_icase", script=(ReturnSpec(403),)),
            RouteSpec(path="@fallback", match="named", upstream="[::1]:8080"),
            RouteSpec(path="/v/", upstream_url="http://$target/v$uri$is_args$args"),
        ),
    )
    config = Config(
        servers=(
            ServerSpec(
                listen=(ListenSpec("0.0.0.0", 80, default_server=True), ListenSpec("::1", 8080)),
                routes=(route,),
                server_names=("", "example.com", "*.example.org", "~^(?P<x>.+)$"),
                script=(ReturnSpec(301, "https://$host$request_uri"),),
                add_headers=(HeaderAdd("X-S", "1"),),
            ),
        ),
        upstreams=(
            UpstreamSpec(
                "echo",
                (
                    PeerSpec("server1", 3000, weight=10, max_fails=0, fail_timeout=0.25),
                    PeerSpec("::1", 3001, backup=True, down=True),
                ),
                balance="least_conn",
                keepalive=0,
                keepalive_timeout=0.0,
                keepalive_requests=1,
            ),
            UpstreamSpec("[::1]:8080", (PeerSpec("::1", 8080),)),
        ),
        workers=3,
        worker_connections=512,
        client_timeouts=ClientTimeouts(header=1.0, body=0.0001, keepalive=0.0, send=86400.0),
        access_log=AccessLogSpec(path="/var/log/a b.log", format="main"),
        hosts=(("server1", "127.0.0.11"), ("server2", "::1")),
        maps=(
            MapSpec("$http_upgrade", "connection_upgrade", (("", "close"),), "upgrade"),
            MapSpec("$host", "m", (*((key, key) for key in TRICKY if key != ""), ("~x", "1"))),
        ),
        pid_file="/run/p.pid",
        error_log=("stderr", "info"),
        log_formats=(("main", '$remote_addr [$time_local] "$request"'), ("json", "{}")),
        source="x.yaml",
    )
    assert _round_trip(config) == config


@pytest.mark.parametrize(
    "spec",
    [
        UpstreamSpec("u", (PeerSpec("a", 1),), balance="hash", hash_key="$request_uri"),
        UpstreamSpec(
            "u", (PeerSpec("a", 1),), balance="hash", hash_key="x $cookie_a", consistent=True
        ),
        UpstreamSpec("u", (PeerSpec("a", 1, weight=3),), balance="ip_hash"),
        UpstreamSpec("u", (PeerSpec("a", 1),), balance="random"),
        UpstreamSpec(
            "u",
            (PeerSpec("a", 1),),
            balance="random",
            random_two=True,
            random_method="least_time",
            least_time="last_byte",
        ),
        UpstreamSpec(
            "u", (PeerSpec("a", 1),), balance="random", random_two=True, random_method="least_conn"
        ),
        UpstreamSpec("u", (PeerSpec("a", 1), PeerSpec("b", 1, backup=True)), balance="least_time"),
        UpstreamSpec("u", (PeerSpec("a", 1),), balance="least_time", least_time="last_byte"),
        UpstreamSpec("u", (PeerSpec("a", 1),), balance="peak_ewma"),
    ],
    ids=lambda spec: spec.balance,
)
def test_balancing_methods_round_trip(spec: UpstreamSpec) -> None:
    config = dataclasses.replace(MINIMAL, upstreams=(spec,), servers=())
    config = dataclasses.replace(
        config,
        servers=(ServerSpec(listen=(ListenSpec("0.0.0.0", 80),), routes=(RouteSpec("u"),)),),
    )
    assert _round_trip(config) == config


def test_balancing_defaults_are_left_out() -> None:
    spec = UpstreamSpec("u", (PeerSpec("a", 1),), balance="least_time")
    written = yaml.safe_load(dump_native(dataclasses.replace(MINIMAL, upstreams=(spec,))))
    assert written["upstreams"]["u"] == {"balance": "least_time", "servers": ["a:1"]}


@pytest.mark.parametrize("text", TRICKY)
def test_strings_that_look_like_other_types_stay_strings(text: str) -> None:
    route = RouteSpec(upstream="echo", set_headers=(("X-T", text),), script=(SetSpec("v", text),))
    config = dataclasses.replace(
        MINIMAL, servers=(ServerSpec(listen=(ListenSpec("0.0.0.0", 80),), routes=(route,)),)
    )
    assert _round_trip(config) == config


@pytest.mark.parametrize(
    ("seconds", "written"),
    [
        (30.0, "30s"),
        (90.0, "1m30s"),
        (0.5, "500ms"),
        (0.0, "0s"),
        (86400.0, "1d"),
        (1.5, "1s500ms"),
    ],
)
def test_durations_are_written_in_units(seconds: float, written: str) -> None:
    config = dataclasses.replace(MINIMAL, client_timeouts=ClientTimeouts(header=seconds or 1.0))
    if seconds:
        assert yaml.safe_load(dump_native(config))["timeouts"] == {"client_header": written}
    assert _round_trip(config) == config


def test_odd_durations_are_written_as_plain_decimals() -> None:
    config = dataclasses.replace(MINIMAL, client_timeouts=ClientTimeouts(header=0.00001))
    assert "e-" not in dump_native(config)
    assert _round_trip(config) == config


def test_access_log_off() -> None:
    config = dataclasses.replace(MINIMAL, access_log=AccessLogSpec(path=None))
    assert "access_log: 'off'\n" in dump_native(config)
    assert _round_trip(config) == config
    json_off = dataclasses.replace(MINIMAL, access_log=AccessLogSpec(path=None, format="json"))
    assert _round_trip(json_off) == json_off


def test_warnings_are_not_written() -> None:
    config = dataclasses.replace(MINIMAL, warnings=("a.conf:1: careful",))
    assert "careful" not in dump_native(config)
    assert _round_trip(config) == config  # warnings take no part in equality
