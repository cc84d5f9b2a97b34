"""config/native.py: the YAML front end builds frozen objects and names the path of
every error."""

from __future__ import annotations

import os
import textwrap
from typing import Any

import pytest

from ferryman.config import (
    AccessLogSpec,
    ClientTimeouts,
    Config,
    ListenSpec,
    PeerSpec,
    RouteSpec,
    ServerSpec,
    UpstreamSpec,
    load_native,
)
from ferryman.config.schema import HeaderAdd, MapSpec, ReturnSpec, RewriteSpec, SetSpec
from ferryman.errors import ConfigError

FULL = """\
workers: 4
worker_connections: 2048
hosts: {server1: 127.0.0.11}
access_log: {path: /var/log/ferryman.log, format: json}
timeouts: {client_header: 10s, client_body: 1m, keepalive: 0, send: 500ms}
upstreams:
  echo:
    balance: least_conn
    keepalive: 16
    keepalive_timeout: 1m30s
    keepalive_requests: 100
    servers:
      - {address: "server1:3000", weight: 10, max_fails: 3, fail_timeout: 30s,
         backup: false, down: false}
      - "127.0.0.1:3001"
      - {address: "[::1]:3002", backup: true}
servers:
  - listen: ["127.0.0.1:8080", 8081]
    server_names: [example.com, www.example.com]
    routes:
      - path: /
        upstream: echo
        host_header: $host
        set_headers: {X-Foo: bar, X-Empty: ""}
        connect_timeout: 5s
        read_timeout: 30
        send_timeout: 1.5
        next_upstream_tries: 2
        forwarded_headers: false
"""

MINIMAL = """\
upstreams:
  echo:
    servers: ["127.0.0.1:3000"]
servers:
  - listen: "8080"
    routes: [{upstream: echo}]
"""


def _load(text: str) -> Config:
    return load_native(textwrap.dedent(text), "demo.yaml")


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(text)
    return info.value


def test_full_example_builds_the_expected_frozen_objects() -> None:
    assert _load(FULL) == Config(
        servers=(
            ServerSpec(
                listen=(ListenSpec("127.0.0.1", 8080), ListenSpec("0.0.0.0", 8081)),
                routes=(
                    RouteSpec(
                        upstream="echo",
                        path="/",
                        host_header="$host",
                        set_headers=(("X-Foo", "bar"), ("X-Empty", "")),
                        connect_timeout=5.0,
                        read_timeout=30.0,
                        send_timeout=1.5,
                        next_upstream_tries=2,
                        forwarded_headers=False,
                    ),
                ),
                server_names=("example.com", "www.example.com"),
            ),
        ),
        upstreams=(
            UpstreamSpec(
                name="echo",
                servers=(
                    PeerSpec("server1", 3000, weight=10, max_fails=3, fail_timeout=30.0),
                    PeerSpec("127.0.0.1", 3001),
                    PeerSpec("::1", 3002, backup=True),
                ),
                balance="least_conn",
                keepalive=16,
                keepalive_timeout=90.0,
                keepalive_requests=100,
            ),
        ),
        workers=4,
        worker_connections=2048,
        client_timeouts=ClientTimeouts(header=10.0, body=60.0, keepalive=0.0, send=0.5),
        access_log=AccessLogSpec(path="/var/log/ferryman.log", format="json"),
        hosts=(("server1", "127.0.0.11"),),
        source="demo.yaml",
    )


def test_minimal_example_takes_schema_defaults() -> None:
    config = _load(MINIMAL)
    assert config == Config(
        servers=(ServerSpec(listen=(ListenSpec("0.0.0.0", 8080),), routes=(RouteSpec("echo"),)),),
        upstreams=(UpstreamSpec("echo", (PeerSpec("127.0.0.1", 3000),)),),
        source="demo.yaml",
    )


def test_result_holds_no_lists_or_dicts() -> None:
    def walk(value: object) -> None:
        assert not isinstance(value, list | dict | set)
        if isinstance(value, tuple):
            for item in value:
                walk(item)
        elif hasattr(value, "__dataclass_fields__"):
            for name in value.__dataclass_fields__:
                walk(getattr(value, name))

    walk(_load(FULL))


def test_access_log_off() -> None:
    config = _load(MINIMAL + "access_log: off\n")
    assert config.access_log == AccessLogSpec(path=None, format="combined")


def test_access_log_null_path_is_off() -> None:
    config = _load(MINIMAL + "access_log: {path: null, format: json}\n")
    assert config.access_log == AccessLogSpec(path=None, format="json")


def test_workers_auto_is_cpu_count() -> None:
    assert _load(MINIMAL + "workers: auto\n").workers == (os.cpu_count() or 1)


def test_unknown_key_three_deep_names_its_path() -> None:
    text = MINIMAL.replace('["127.0.0.1:3000"]', '[{address: "a:1", weigth: 2}]')
    error = _error(text)
    assert error.where == "demo.yaml: upstreams.echo.servers[0].weigth"
    assert error.reason.startswith("unknown key (expected one of: address, backup, down,")
    assert "weight" in error.reason


def test_unknown_top_level_key() -> None:
    error = _error(MINIMAL + "worker_processes: 4\n")
    assert error.where == "demo.yaml: worker_processes"


@pytest.mark.parametrize("weight", ["+5", "'+5'", "0", "1001", "1_0", "010", "true", "2.0"])
def test_bad_weight_names_the_path(weight: str) -> None:
    servers = '["a:1", "b:2", {address: "c:3", weight: ' + weight + "}]"
    error = _error(MINIMAL.replace('["127.0.0.1:3000"]', servers))
    assert error.where == "demo.yaml: upstreams.echo.servers[2].weight"
    assert "weight must be an integer from 1 to 1000" in error.reason


def test_bad_duration_names_the_path() -> None:
    text = MINIMAL.replace("{upstream: echo}", "{upstream: echo, read_timeout: 30x}")
    error = _error(text)
    assert error.where == "demo.yaml: servers[0].routes[0].read_timeout"
    assert "invalid duration '30x'" in error.reason


def test_zero_io_timeout_is_refused() -> None:
    error = _error(MINIMAL.replace("{upstream: echo}", "{upstream: echo, connect_timeout: 0s}"))
    assert error.where == "demo.yaml: servers[0].routes[0].connect_timeout"


def test_undefined_upstream() -> None:
    error = _error(MINIMAL.replace("{upstream: echo}", "{upstream: ehco}"))
    assert error.where == "demo.yaml: servers[0].routes[0].upstream"
    assert "'ehco' is not defined" in error.reason


def test_upstream_without_servers_key() -> None:
    error = _error(MINIMAL.replace('servers: ["127.0.0.1:3000"]', "balance: least_conn"))
    assert error.where == "demo.yaml: upstreams.echo"
    assert "missing required key 'servers'" in error.reason


def test_upstream_with_empty_servers() -> None:
    error = _error(MINIMAL.replace('["127.0.0.1:3000"]', "[]"))
    assert error.where == "demo.yaml: upstreams.echo.servers"
    assert "must not be empty" in error.reason


def test_only_backup_servers_is_refused() -> None:
    error = _error(MINIMAL.replace('["127.0.0.1:3000"]', '[{address: "a:1", backup: true}]'))
    assert error.where == "demo.yaml: upstreams.echo.servers"


def test_missing_top_level_servers() -> None:
    error = _error("upstreams: {echo: {servers: ['a:1']}}\n")
    assert error.where == "demo.yaml"
    assert "missing required key 'servers'" in error.reason


def test_server_without_routes() -> None:
    error = _error(MINIMAL.replace("routes: [{upstream: echo}]", "routes: []"))
    assert error.where == "demo.yaml: servers[0].routes"


def test_yaml_syntax_error_names_the_line() -> None:
    error = _error("workers: 4\nupstreams:\n  echo: [\n servers: x: y\n")
    assert error.where.startswith("demo.yaml:")
    assert error.where.removeprefix("demo.yaml:").isdigit()
    assert error.reason.startswith("invalid YAML:")


def test_yaml_syntax_error_exact_line() -> None:
    error = _error("workers: 4\nupstreams: a: b\n")
    assert error.where == "demo.yaml:2"


def test_duplicate_key_is_an_error_with_its_line() -> None:
    error = _error(MINIMAL + "workers: 2\nworkers: 3\n")
    assert error.where == "demo.yaml:8"
    assert "duplicate key 'workers'" in error.reason


@pytest.mark.parametrize("value", ["yes", "on", "'true'", "1"])
def test_booleans_are_yaml_booleans_only(value: str) -> None:
    text = MINIMAL.replace("{upstream: echo}", "{upstream: echo, forwarded_headers: " + value + "}")
    error = _error(text)
    assert error.where == "demo.yaml: servers[0].routes[0].forwarded_headers"
    assert "must be true or false" in error.reason


def test_hosts_values_must_be_ip_addresses() -> None:
    error = _error(MINIMAL + "hosts: {server1: server2}\n")
    assert error.where == "demo.yaml: hosts.server1"


def test_unknown_balancer() -> None:
    error = _error(MINIMAL.replace("echo:\n", "echo:\n    balance: fastest\n"))
    assert error.where == "demo.yaml: upstreams.echo.balance"
    assert "least_conn" in error.reason


def _upstream(options: str, servers: str = '["127.0.0.1:3000"]') -> str:
    """MINIMAL with the upstream's servers and these `key: value` lines."""
    lines = textwrap.indent(textwrap.dedent(options).strip() + "\n", "    ")
    return MINIMAL.replace('    servers: ["127.0.0.1:3000"]\n', f"    servers: {servers}\n{lines}")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("balance: hash\nhash_key: $request_uri", {"hash_key": "$request_uri"}),
        (
            "balance: hash\nhash_key: '$cookie_s $http_x_t'\nconsistent: true",
            {"hash_key": "$cookie_s $http_x_t", "consistent": True},
        ),
        ("balance: ip_hash", {}),
        ("balance: random", {}),
        ("balance: random\nrandom_two: true", {"random_two": True}),
        (
            "balance: random\nrandom_two: true\nrandom_method: least_conn",
            {"random_two": True, "random_method": "least_conn"},
        ),
        (
            "balance: random\nrandom_two: true\nrandom_method: least_time\nleast_time: last_byte",
            {"random_two": True, "random_method": "least_time", "least_time": "last_byte"},
        ),
        ("balance: least_time", {"least_time": "header"}),
        ("balance: least_time\nleast_time: last_byte", {"least_time": "last_byte"}),
        ("balance: peak_ewma", {}),
    ],
)
def test_balancing_method_options(options: str, expected: dict[str, Any]) -> None:
    (upstream,) = _load(_upstream(options)).upstreams
    balance = options.split("\n")[0].removeprefix("balance: ")
    peers = (PeerSpec("127.0.0.1", 3000),)
    assert upstream == UpstreamSpec("echo", peers, balance=balance, **expected)


@pytest.mark.parametrize(
    ("options", "key", "fragment"),
    [
        ("balance: hash", "", "balance: hash needs a hash_key"),
        ("balance: hash\nhash_key: ''", ".hash_key", "invalid value ''"),
        ('balance: hash\nhash_key: "$a\\n"', ".hash_key", "invalid value"),
        ("hash_key: $request_uri", ".hash_key", "applies to balance: hash, not round_robin"),
        ("balance: ip_hash\nconsistent: true", ".consistent", "applies to balance: hash"),
        ("balance: least_conn\nrandom_two: true", ".random_two", "applies to balance: random"),
        ("balance: random\nrandom_method: least_conn", ".random_method", "needs random_two"),
        (
            "balance: random\nrandom_two: true\nrandom_method: fastest",
            ".random_method",
            "must be one of: least_conn, least_time",
        ),
        ("balance: least_time\nleast_time: first_byte", ".least_time", "header, last_byte"),
        ("balance: least_conn\nleast_time: header", ".least_time", "least_time or random"),
        (
            "balance: random\nrandom_two: true\nleast_time: header",
            ".least_time",
            "only with random_method: least_time",
        ),
        ("balance: hash\nhash_key: $x\nconsistent: 'yes'", ".consistent", "true or false"),
    ],
)
def test_bad_balancing_method_options(options: str, key: str, fragment: str) -> None:
    error = _error(_upstream(options))
    assert error.where == f"demo.yaml: upstreams.echo{key}"
    assert fragment in error.reason


@pytest.mark.parametrize(
    "options", ["balance: hash\nhash_key: $request_uri", "balance: ip_hash", "balance: random"]
)
def test_backup_servers_are_refused_with_keyed_and_random_methods(options: str) -> None:
    error = _error(_upstream(options, servers='["a:1", {address: "b:1", backup: true}]'))
    assert error.where == "demo.yaml: upstreams.echo.servers[1]"
    assert "does not support backup servers" in error.reason


def test_upstream_server_needs_a_host() -> None:
    error = _error(MINIMAL.replace('["127.0.0.1:3000"]', '["3000"]'))
    assert error.where == "demo.yaml: upstreams.echo.servers[0]"


def test_bad_listen_port() -> None:
    error = _error(MINIMAL.replace('listen: "8080"', 'listen: ["127.0.0.1:80", "localhost:0"]'))
    assert error.where == "demo.yaml: servers[0].listen[1]"
    assert "port must be a number from 1 to 65535" in error.reason


def test_duplicate_listen_in_one_server() -> None:
    error = _error(MINIMAL.replace('listen: "8080"', 'listen: ["8080", "0.0.0.0:8080"]'))
    assert error.where == "demo.yaml: servers[0].listen"


def test_set_headers_cannot_set_host() -> None:
    text = MINIMAL.replace("{upstream: echo}", "{upstream: echo, set_headers: {Host: x}}")
    assert _error(text).where == "demo.yaml: servers[0].routes[0].set_headers.Host"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", "demo.yaml"),
        ("- a\n", "demo.yaml"),
        ("upstreams: []\nservers: []\n", "demo.yaml: upstreams"),
        ("upstreams: {}\nservers: []\n", "demo.yaml: upstreams"),
    ],
)
def test_wrong_shapes(text: str, where: str) -> None:
    assert _error(text).where == where


def test_workers_must_be_positive_or_auto() -> None:
    assert _error(MINIMAL + "workers: 0\n").where == "demo.yaml: workers"
    assert _error(MINIMAL + "workers: many\n").where == "demo.yaml: workers"


# --- the fields nginx.conf brought: locations, scripts, maps, headers, logs -------------

NGINX_SHAPED = """\
pid_file: /run/ferryman.pid
error_log: {path: /var/log/ferryman.err, level: warn}
log_formats: {main: '$remote_addr "$request" $status'}
access_log: {path: "-", format: main}
maps:
  - source: $http_upgrade
    variable: connection_upgrade
    entries: [["", close], ["~*^web", upgrade]]
    default: upgrade
upstreams:
  "127.0.0.1:9000": {servers: ["127.0.0.1:9000"], keepalive: 0}
servers:
  - listen: [{address: "80", default_server: true}, "[::]:80"]
    server_names: ["", example.com, "~^(?P<sub>.+)\\\\.example\\\\.org$"]
    script:
      - return: {status: 301, text: "https://$host$request_uri"}
  - listen: 8080
    add_headers: [{name: X-Server, value: a}]
    routes:
      - path: /api/
        upstream: "127.0.0.1:9000"
        upstream_uri: /v2/
        http_version: "1.0"
        host_header: $proxy_host
        hide_headers: [X-Powered-By]
        pass_headers: server
        add_headers: [{name: Cache-Control, value: no-store, always: true}]
        client_max_body_size: 10m
        script:
          - set: {variable: who, value: $remote_addr}
          - rewrite: {pattern: "^/api/(.*)$", replacement: /api/v2/$1, flag: break}
        routes:
          - {path: /api/admin, match: exact, script: [{return: {status: 403}}]}
      - {path: "\\\\.php$", match: regex_icase, script: [{return: {status: 444}}]}
      - {path: "@fallback", match: named, upstream: "127.0.0.1:9000", http_version: 1.1}
      - {path: /unlimited/, client_max_body_size: 0}
"""


def test_nginx_shaped_fields() -> None:
    config = _load(NGINX_SHAPED)
    assert config.pid_file == "/run/ferryman.pid"
    assert config.error_log == ("/var/log/ferryman.err", "warn")
    assert config.log_formats == (("main", '$remote_addr "$request" $status'),)
    assert config.access_log == AccessLogSpec(path="-", format="main")
    assert config.maps == (
        MapSpec(
            source="$http_upgrade",
            variable="connection_upgrade",
            entries=(("", "close"), ("~*^web", "upgrade")),
            default="upgrade",
        ),
    )
    redirect, main = config.servers
    assert redirect.listen == (ListenSpec("0.0.0.0", 80), ListenSpec("::", 80))
    assert [spec.default_server for spec in redirect.listen] == [True, False]
    assert redirect.server_names == ("", "example.com", "~^(?P<sub>.+)\\.example\\.org$")
    assert redirect.routes == ()
    assert redirect.script == (ReturnSpec(301, "https://$host$request_uri"),)
    assert main.add_headers == (HeaderAdd("X-Server", "a"),)
    api, php, named, unlimited = main.routes
    assert api == RouteSpec(
        upstream="127.0.0.1:9000",
        path="/api/",
        upstream_uri="/v2/",
        http_version="1.0",
        host_header="$proxy_host",
        hide_headers=("x-powered-by",),
        pass_headers=("server",),
        add_headers=(HeaderAdd("Cache-Control", "no-store", always=True),),
        client_max_body_size=10 * 1024 * 1024,
        script=(
            SetSpec("who", "$remote_addr"),
            RewriteSpec("^/api/(.*)$", "/api/v2/$1", "break"),
        ),
        routes=(RouteSpec(path="/api/admin", match="exact", script=(ReturnSpec(403),)),),
    )
    assert (php.match, php.path, php.upstream) == ("regex_icase", "\\.php$", None)
    assert (named.match, named.path, named.http_version) == ("named", "@fallback", "1.1")
    assert unlimited.client_max_body_size is None


def test_upstreams_may_be_left_out() -> None:
    config = _load("servers: [{listen: 80, script: [{return: {status: 204}}]}]\n")
    assert config.upstreams == ()


@pytest.mark.parametrize(
    ("old", "new", "where", "fragment"),
    [
        ("match: exact", "match: fuzzy", "servers[1].routes[0].routes[0].match", "must be one of"),
        ('"\\\\.php$"', '"(unclosed"', "servers[1].routes[1].path", "cannot compile regex"),
        ("status: 444", "status: 600", "servers[1].routes[1].script[0].return.status", "444"),
        ("status: 444", "status: 99", "servers[1].routes[1].script[0].return.status", "100"),
        ("flag: break", "flag: forever", "servers[1].routes[0].script[1].rewrite.flag", "last"),
        ("variable: who", "variable: $who", "servers[1].routes[0].script[0].set.variable", "$"),
        ("- set:", "- sett:", "servers[1].routes[0].script[0]", "return, if or break"),
        ('"1.0"', '"2"', "servers[1].routes[0].http_version", "1.0, 1.1"),
        ("format: main", "format: mine", "access_log.format", "combined, json, main"),
        ("level: warn", "level: loud", "error_log.level", "warn"),
        ('"~*^web"', '"~*(web"', "maps[0].entries[1]", "cannot compile regex"),
        ('[["", close]', '[["", close, x]', "maps[0].entries[0]", "[pattern, value] pair"),
        ("10m", "10x", "servers[1].routes[0].client_max_body_size", "invalid size"),
        ('"@fallback"', '"fallback"', "servers[1].routes[2].path", "invalid value"),
        ("name: X-Server", "name: 'X Server'", "servers[1].add_headers[0].name", "invalid value"),
        ("default_server: true", "default_server: yes", "servers[0].listen[0].default_server", ""),
        ("main: '", "combined: '", "log_formats.combined", "built in"),
    ],
)
def test_nginx_shaped_errors_name_the_path(old: str, new: str, where: str, fragment: str) -> None:
    assert old in NGINX_SHAPED
    error = _error(NGINX_SHAPED.replace(old, new, 1))
    assert error.where == f"demo.yaml: {where}"
    assert fragment in error.reason


def test_duplicate_locations_follow_nginx() -> None:
    base = "servers: [{listen: 80, routes: [ROUTES]}]\n"
    ok = "{path: /a, match: exact}, {path: /a}, {path: a$, match: regex}, {path: a$, match: regex}"
    assert len(_load(base.replace("ROUTES", ok)).servers[0].routes) == 4
    error = _error(base.replace("ROUTES", "{path: /a}, {path: /a, match: prefix_priority}"))
    assert error.where == "demo.yaml: servers[0].routes"
    assert "'/a' more than once" in error.reason


def test_duplicate_map_variable() -> None:
    maps = "maps: [{source: $a, variable: x}, {source: $b, variable: x}]\n"
    error = _error(MINIMAL + maps)
    assert error.where == "demo.yaml: maps"


def test_default_type_and_pass_upgrade() -> None:
    (route,) = _load(MINIMAL).servers[0].routes
    assert (route.default_type, route.pass_upgrade) == ("text/plain", True)
    text = MINIMAL.replace(
        "{upstream: echo}", '{upstream: echo, default_type: "", pass_upgrade: false}'
    )
    (route,) = _load(text).servers[0].routes
    assert (route.default_type, route.pass_upgrade) == ("", False)


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ('default_type: "text/html\\r\\nX-A: 1"', "default_type"),
        ("default_type: 1", "default_type"),
        ("pass_upgrade: yes", "pass_upgrade"),
    ],
)
def test_default_type_and_pass_upgrade_errors(entry: str, key: str) -> None:
    error = _error(MINIMAL.replace("{upstream: echo}", f"{{upstream: echo, {entry}}}"))
    assert error.where == f"demo.yaml: servers[0].routes[0].{key}"


@pytest.mark.parametrize(
    "url",
    [
        "http://$target",
        "http://$target/echo/full$uri$is_args$args",
        "http://echo$request_uri",
        "http://echo/x$uri",
        "HTTP://127.0.0.1:9000/x$uri",
        "http://[::1]:9000/x$uri",
        "http://${target}:8080",
    ],
)
def test_upstream_url(url: str) -> None:
    text = MINIMAL.replace("{upstream: echo}", f"{{upstream_url: '{url}'}}")
    (route,) = _load(text).servers[0].routes
    assert (route.upstream, route.upstream_url, route.upstream_uri) == (None, url, None)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("upstream: echo, upstream_url: 'http://$a'", "either upstream_url or upstream"),
        ("upstream_uri: /x/, upstream_url: 'http://$a'", "either upstream_url or upstream_uri"),
        ("upstream_url: 'https://$a'", "https:// upstreams are not supported yet"),
        ("upstream_url: '$scheme://$a'", "must begin with http://"),
        ("upstream_url: 'ftp://$a'", "must begin with http://"),
        ("upstream_url: 'http:///$uri'", "has no host"),
        ("upstream_url: 'http://$a/b c'", "invalid value"),
        ("upstream_url: 1", "must be a string"),
        ("upstream_url: 'http://other/$uri'", "names no upstream and is not an IP address"),
        ("upstream_url: 'http://echo:8080/$uri'", "names no upstream and is not an IP address"),
        ("upstream_url: 'http://999.1.1.1/$uri'", "names no upstream and is not an IP address"),
    ],
)
def test_upstream_url_errors(entry: str, fragment: str) -> None:
    error = _error(MINIMAL.replace("{upstream: echo}", f"{{{entry}}}"))
    assert error.where == "demo.yaml: servers[0].routes[0].upstream_url"
    assert fragment in error.reason
