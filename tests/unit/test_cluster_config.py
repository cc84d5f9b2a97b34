"""The `cluster` section and `shared: true` zones (config/native.py, config/dump.py,
cluster/url.py): what loads, what is refused with a path, and the dump round trip."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ferryman.cluster.url import RedisTarget, parse_redis_url
from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
from ferryman.errors import ConfigError

BASE = """
upstreams:
  app:
    servers: [{address: "127.0.0.1:9000"}]
servers:
  - listen: "127.0.0.1:8080"
    routes:
      - {path: /, upstream: app, limit_req: [{zone: rl}], cache: {zone: c}}
"""


def load(top: str) -> object:
    return load_native(textwrap.dedent(top) + BASE, "c.yaml")


def test_cluster_section_and_shared_zones_load_and_dump_back() -> None:
    config = load_native(
        textwrap.dedent("""
        cluster:
          url: "rediss://:pw@redis.internal:6380/2"
          timeout: 20ms
          prefix: shop
          health: false
          cache_max_object: 256k
          lease_ttl: 5s
          tls_verify: false
        limit_zones: [{name: rl, kind: req, key: $remote_addr, rate: 10r/s, shared: true}]
        cache_zones: [{name: c, shared: true}]
        """)
        + BASE,
        "c.yaml",
    )
    spec = config.cluster
    assert spec is not None
    assert (spec.timeout, spec.prefix, spec.health) == (0.02, "shop", False)
    assert (spec.cache_max_object, spec.lease_ttl, spec.tls_verify) == (256 * 1024, 5.0, False)
    assert config.limit_zones[0].shared and config.cache_zones[0].shared
    again = load_native(dump_native(config), "c.yaml")
    assert again.cluster == spec
    assert again.limit_zones == config.limit_zones and again.cache_zones == config.cache_zones


def test_a_shared_zone_needs_a_cluster() -> None:
    with pytest.raises(ConfigError) as err:
        load("""
        limit_zones: [{name: rl, kind: req, key: $remote_addr, rate: 1r/s, shared: true}]
        cache_zones: [{name: c}]
        """)
    assert "limit_zones[0].shared" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load("""
        limit_zones: [{name: rl, kind: req, key: $remote_addr, rate: 1r/s}]
        cache_zones: [{name: c, shared: true}]
        """)
    assert "cache_zones[0].shared" in str(err.value)


@pytest.mark.parametrize(
    ("cluster", "where"),
    [
        ('{url: "http://x"}', "cluster.url"),
        ('{url: "redis://a:1,b:2"}', "cluster.url"),
        ('{url: "redis-sentinel://s:26379"}', "cluster.url"),
        ('{url: "redis://h", timeout: 10s}', "cluster.timeout"),
        ('{url: "redis://h", prefix: "a b"}', "cluster.prefix"),
        ('{url: "redis://h", bogus: 1}', "cluster.bogus"),
        ("{timeout: 1s}", "cluster"),
        ('{url: "redis://h", password: x, password_file: /etc/hostname}', "password_file"),
    ],
)
def test_bad_cluster_sections_are_refused_with_a_path(cluster: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(f"""
        cluster: {cluster}
        limit_zones: [{{name: rl, kind: req, key: $remote_addr, rate: 1r/s}}]
        cache_zones: [{{name: c}}]
        """)
    assert where in str(err.value)


def test_password_file_is_checked_at_load_and_kept_by_name(tmp_path: Path) -> None:
    secret = tmp_path / "redis.pw"
    secret.write_text("s3cret\n")
    config = load(f"""
    cluster: {{url: "redis://h", password_file: "{secret}"}}
    limit_zones: [{{name: rl, kind: req, key: $remote_addr, rate: 1r/s}}]
    cache_zones: [{{name: c}}]
    """)
    assert config.cluster.password_file == str(secret)  # type: ignore[attr-defined]
    assert "s3cret" not in dump_native(config)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as err:
        load(f"""
        cluster: {{url: "redis://h", password_file: "{tmp_path / "missing"}"}}
        limit_zones: [{{name: rl, kind: req, key: $remote_addr, rate: 1r/s}}]
        cache_zones: [{{name: c}}]
        """)
    assert "cluster.password_file" in str(err.value)


def test_redis_urls() -> None:
    assert parse_redis_url("redis://127.0.0.1") == RedisTarget(
        "single", (("127.0.0.1", 6379),), False
    )
    t = parse_redis_url("rediss://user:p%40ss@[::1]:7000/3")
    assert (t.mode, t.nodes, t.tls, t.db, t.username, t.password) == (
        "single", (("::1", 7000),), True, 3, "user", "p@ss",
    )  # fmt: skip
    t = parse_redis_url("redis-sentinel://:pw@s1,s2:26380/mymaster/1")
    assert (t.mode, t.nodes, t.service, t.db, t.password) == (
        "sentinel", (("s1", 26379), ("s2", 26380)), "mymaster", 1, "pw",
    )  # fmt: skip
    t = parse_redis_url("rediss-cluster://n1:7000,n2:7001")
    assert (t.mode, t.tls, t.nodes) == ("cluster", True, (("n1", 7000), ("n2", 7001)))
    assert "pw" not in repr(parse_redis_url("redis://:pw@h"))


@pytest.mark.parametrize(
    "url",
    [
        "redis://",
        "redis://h:0",
        "redis://h:70000",
        "redis://h/db",
        "redis://h/1/2",
        "redis-cluster://h/1",
        "redis-sentinel://h",
        "memcache://h",
        "redis://h:+5",
    ],
)
def test_bad_redis_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_redis_url(url)
