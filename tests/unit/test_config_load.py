"""config/load.py: reading the file, telling nginx.conf from YAML, host overrides; and
the shipped src/ferryman/data/demo.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferryman.config import AccessLogSpec, ListenSpec, PeerSpec, load_config, quick_config
from ferryman.config.load import apply_hosts, looks_like_nginx
from ferryman.errors import ConfigError

REPO = Path(__file__).parents[2]

# A copy of the reference nginx.conf (tests must not read outside the repository).
SEED_NGINX_CONF = """\
worker_processes 4;

events { worker_connections 1024; }

http {
\tupstream echo {
\t\tleast_conn;
\t\tserver server1:3000 weight=10 max_fails=3 fail_timeout=30s;
\t\tserver server2:3000 weight=10 max_fails=3 fail_timeout=30s;
\t\tserver server3:3000 weight=10 max_fails=3 fail_timeout=30s;
\t\tserver server4:3000 weight=10 max_fails=3 fail_timeout=30s;
\t\tserver server5:3000 weight=10 max_fails=3 fail_timeout=30s;
\t\tserver server6:3000 weight=10 max_fails=3 fail_timeout=30s;
\t}

\tserver {
\t\tlisten 80;

\t\tlocation / {
\t\t\tproxy_pass http://echo;
\t\t\tproxy_http_version 1.1;
\t\t\tproxy_set_header Upgrade $http_upgrade;
\t\t\tproxy_set_header Connection 'upgrade';
\t\t\tproxy_set_header Host $host;
\t\t\tproxy_cache_bypass $http_upgrade;
\t\t}
\t}
}
"""

YAML_CONF = """\
# a comment first
upstreams:
  echo: {servers: ["127.0.0.1:3000"]}
servers:
  - {listen: "8080", routes: [{upstream: echo}]}
"""


@pytest.mark.parametrize(
    "text",
    [
        SEED_NGINX_CONF,
        "# nginx\n\nuser nginx;\n",
        "events {}\n",
        "http{\n}\n",
        "\ufeffworker_processes auto;",
        "log_format main '$remote_addr'\n    '$request';\n",
    ],
)
def test_looks_like_nginx(text: str) -> None:
    assert looks_like_nginx(text)


@pytest.mark.parametrize(
    "text",
    [
        YAML_CONF,
        "workers: 4\n",
        "workers : 4\n",
        "---\nworkers: 4\n",
        "%YAML 1.2\n---\nworkers: 4\n",
        "{workers: 4}\n",
        "- a\n",
        "",
        "# only a comment\n",
    ],
)
def test_looks_like_yaml(text: str) -> None:
    assert not looks_like_nginx(text)


def test_nginx_file_goes_to_the_nginx_front_end(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_text(SEED_NGINX_CONF)
    config = load_config(str(path))
    assert config.source == str(path)
    assert config.upstream("echo").balance == "least_conn"
    assert len(config.warnings) == 2


def test_nginx_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_text(SEED_NGINX_CONF.replace("least_conn;", "least_connn;"))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.where == f"{path}:7"
    assert info.value.reason == 'unknown directive "least_connn"'


def test_yaml_file_loads_with_its_path_as_source(tmp_path: Path) -> None:
    path = tmp_path / "ferryman.yaml"
    path.write_text(YAML_CONF)
    config = load_config(str(path))
    assert config.source == str(path)
    assert config.upstream("echo").servers == (PeerSpec("127.0.0.1", 3000),)


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(YAML_CONF + "workerz: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.where == f"{path}: workerz"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="cannot read: No such file") as info:
        load_config(str(path))
    assert info.value.where == str(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"workers: \xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path))


def test_apply_hosts_overrides_and_appends() -> None:
    config = load_config(str(REPO / "src" / "ferryman" / "data" / "demo.yaml"))
    merged = apply_hosts(config, {"server2": "10.0.0.2", "extra": "::1"})
    assert merged.hosts[1] == ("server2", "10.0.0.2")
    assert merged.hosts[-1] == ("extra", "::1")
    assert len(merged.hosts) == 7
    assert config.hosts[1] == ("server2", "127.0.0.12")  # the original is untouched


def test_apply_hosts_refuses_non_ip() -> None:
    config = load_config(str(REPO / "src" / "ferryman" / "data" / "demo.yaml"))
    with pytest.raises(ConfigError) as info:
        apply_hosts(config, {"server1": "server2"})
    assert info.value.where == "--add-host server1"


def test_demo_yaml_loads() -> None:
    config = load_config(str(REPO / "src" / "ferryman" / "data" / "demo.yaml"))
    assert config.workers == 4
    assert config.worker_connections == 1024
    assert config.hosts == tuple((f"server{i}", f"127.0.0.1{i}") for i in range(1, 7))
    (upstream,) = config.upstreams
    assert upstream.balance == "least_conn"
    assert upstream.servers == tuple(
        PeerSpec(f"server{i}", 3000, weight=10, max_fails=3, fail_timeout=30.0) for i in range(1, 7)
    )
    (server,) = config.servers
    assert server.listen == (ListenSpec("127.0.0.1", 8080),)
    (route,) = server.routes
    assert (route.path, route.upstream, route.host_header) == ("/", upstream.name, "$host")


# quick_config lives in config/quick.py; its tests sit here because the quick form is the
# other way (besides a file) that a Config gets loaded.


def test_quick_config() -> None:
    config = quick_config(
        "127.0.0.1:8080",
        ["a:1", "[::1]:2"],
        balance="least_conn",
        workers=2,
        access_log=None,
        max_fails=3,
        fail_timeout=30.0,
        keepalive=8,
        worker_connections=65536,
    )
    assert config.worker_connections == 65536
    (upstream,) = config.upstreams
    assert upstream.name == "backends"
    assert upstream.balance == "least_conn"
    assert upstream.keepalive == 8
    assert upstream.servers == (
        PeerSpec("a", 1, max_fails=3, fail_timeout=30.0),
        PeerSpec("::1", 2, max_fails=3, fail_timeout=30.0),
    )
    (server,) = config.servers
    assert server.listen == (ListenSpec("127.0.0.1", 8080),)
    assert [(r.path, r.upstream) for r in server.routes] == [("/", "backends")]
    assert config.workers == 2
    assert config.access_log == AccessLogSpec(path=None)


def test_quick_config_bare_port_listens_everywhere() -> None:
    config = quick_config("8080", ["a:1"])
    assert config.worker_connections == 1024  # the schema's default
    assert config.servers[0].listen == (ListenSpec("0.0.0.0", 8080),)
    assert config.access_log == AccessLogSpec(path="-", format="combined")


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"listen": "127.0.0.1:0"}, "--listen"),
        ({"backends": []}, "--backends"),
        ({"backends": ["a:1", "3000"]}, "--backends"),
        ({"backends": ["a:+1"]}, "--backends"),
        ({"balance": "fastest"}, "--balance"),
        ({"workers": 0}, "--workers"),
        ({"log_format": "xml"}, "--log-format"),
        ({"max_fails": -1}, "--max-fails"),
        ({"fail_timeout": -1.0}, "--fail-timeout"),
        ({"keepalive": -1}, "--keepalive"),
        ({"worker_connections": 0}, "--worker-connections"),
    ],
)
def test_quick_config_errors_name_the_flag(kwargs: dict[str, object], where: str) -> None:
    arguments: dict[str, object] = {"listen": "8080", "backends": ["a:1"], **kwargs}
    with pytest.raises(ConfigError) as info:
        quick_config(**arguments)  # type: ignore[arg-type]
    assert info.value.where == where
