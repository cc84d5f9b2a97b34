"""Cache configuration: the native `cache_zones` / route `cache` keys and the nginx
proxy_cache directives, what they produce and what they refuse (with a path or
file:line)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
from ferryman.config.nginx import load_nginx
from ferryman.config.schema import CacheSpec, CacheZoneSpec
from ferryman.errors import ConfigError

NATIVE = """\
cache_zones:
  - {{name: z, path: /tmp/ferryman-test-cache, max_size: 10m, memory_size: 1m, inactive: 1h}}
  - {{name: m}}
upstreams:
  u: {{servers: ["127.0.0.1:9"]}}
servers:
  - listen: ["127.0.0.1:8080"]
    routes:
      - path: /
        upstream: u
        cache: {cache}
"""


def _native(cache: str) -> CacheSpec:
    config = load_native(NATIVE.format(cache=cache), "t.yaml")
    spec = config.servers[0].routes[0].cache
    assert spec is not None
    return spec


def _native_error(cache: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_native(NATIVE.format(cache=cache), "t.yaml")
    return info.value


def test_native_cache_zones_and_defaults() -> None:
    config = load_native(NATIVE.format(cache="{zone: m}"), "t.yaml")
    assert config.cache_zones == (
        CacheZoneSpec("z", "/tmp/ferryman-test-cache", 10 * 2**20, 2**20, 3600.0),
        CacheZoneSpec("m"),
    )
    assert config.servers[0].routes[0].cache == CacheSpec(zone="m")


def test_native_cache_every_key_round_trips() -> None:
    spec = _native(
        '{zone: z, key: "$host$uri", valid: {"200 302": 10m, 404: 1m, any: 30s},'
        " bypass: [$http_upgrade], no_cache: $arg_nocache, use_stale: [error, updating],"
        " lock: true, lock_timeout: 2s, background_update: true, methods: [GET, HEAD, POST],"
        " min_uses: 3, store_set_cookie: true, purge: true, status_header: false}"
    )
    assert spec.valid == (((200, 302), 600.0), ((404,), 60.0), ((), 30.0))
    assert spec.bypass == ("$http_upgrade",)
    assert spec.no_cache == ("$arg_nocache",)
    assert spec.use_stale == ("error", "updating")
    assert (spec.lock, spec.lock_timeout, spec.background_update) == (True, 2.0, True)
    assert (spec.min_uses, spec.store_set_cookie, spec.purge) == (3, True, True)
    assert not spec.status_header
    config = load_native(NATIVE.format(cache="{zone: z, valid: {any: 1m}, purge: true}"), "t")
    assert load_native(dump_native(config), "t") == config


@pytest.mark.parametrize(
    ("cache", "where", "words"),
    [
        ("{zone: nope}", "cache.zone", "not in cache_zones"),
        ("{zone: z, valid: {abc: 1m}}", "cache.valid.abc", "statuses"),
        ("{zone: z, valid: {999: 1m}}", "cache.valid.999", "from 100 to 599"),
        ("{zone: z, use_stale: [sometimes]}", "cache.use_stale[0]", "must be one of"),
        ("{zone: z, methods: [PUT]}", "cache.methods[0]", "must be one of"),
        ("{zone: z, min_uses: 0}", "cache.min_uses", "from 1"),
        ("{zone: z, lock_timeout: 0s}", "cache.lock_timeout", "longer than 0"),
        ("{zone: z, colour: red}", "cache.colour", "unknown key"),
        ("{key: $uri}", "cache", "missing required key 'zone'"),
    ],
)
def test_native_cache_errors_name_the_key(cache: str, where: str, words: str) -> None:
    error = _native_error(cache)
    assert error.where.endswith(f"servers[0].routes[0].{where}"), error.where
    assert words in error.reason


def test_native_duplicate_zone_names_are_refused() -> None:
    text = NATIVE.format(cache="{zone: m}").replace("  - {name: m}", "  - {name: z}")
    with pytest.raises(ConfigError) as info:
        load_native(text, "t.yaml")
    assert "cache zone 'z' more than once" in info.value.reason


# ---- nginx ----

CONF = """\
events {{}}
http {{
    {http}
    server {{
        listen 8080;
        location / {{
            {location}
            proxy_pass http://127.0.0.1:9000;
        }}
    }}
}}
"""


def _nginx(tmp_path: Path, http: str, location: str = "") -> CacheSpec | None:
    path = tmp_path / "nginx.conf"
    path.write_text(textwrap.dedent(CONF.format(http=http, location=location)))
    return load_nginx(str(path)).servers[0].routes[0].cache


def _nginx_error(tmp_path: Path, http: str, location: str = "") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _nginx(tmp_path, http, location)
    return info.value


ZONE = "proxy_cache_path c keys_zone=one:1m;"


def test_nginx_zone_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_text(CONF.format(http=ZONE + " proxy_cache one;", location=""))
    config = load_nginx(str(path))
    assert config.cache_zones == (CacheZoneSpec("one", str(tmp_path / "c")),)
    assert config.servers[0].routes[0].cache == CacheSpec(zone="one", status_header=False)


def test_nginx_valid_without_statuses_means_200_301_302(tmp_path: Path) -> None:
    spec = _nginx(tmp_path, ZONE, "proxy_cache one; proxy_cache_valid 5m;")
    assert spec is not None and spec.valid == (((200, 301, 302), 300.0),)


def test_nginx_methods_always_include_get_and_head(tmp_path: Path) -> None:
    spec = _nginx(tmp_path, ZONE, "proxy_cache one; proxy_cache_methods POST;")
    assert spec is not None and spec.methods == ("GET", "HEAD", "POST")


def test_nginx_proxy_cache_off_and_no_cache(tmp_path: Path) -> None:
    assert _nginx(tmp_path, ZONE + " proxy_cache one;", "proxy_cache off;") is None
    assert _nginx(tmp_path, ZONE) is None


@pytest.mark.parametrize(
    ("http", "location", "words"),
    [
        ("", "proxy_cache one;", '"proxy_cache" zone "one" is unknown'),
        ("proxy_cache_path c levels=1:2;", "", 'must have "keys_zone" parameter'),
        ("proxy_cache_path c keys_zone=one;", "", "invalid keys zone size"),
        ("proxy_cache_path c keys_zone=one:1m levels=3;", "", 'invalid "levels"'),
        ("proxy_cache_path c keys_zone=one:1m inactive=x;", "", 'invalid value "x"'),
        (ZONE + " proxy_cache_path d keys_zone=one:1m;", "", 'duplicate zone "one"'),
        ("proxy_cache_path c keys_zone=one:1m loader_files=9;", "", "not supported"),
        (ZONE, "proxy_cache one; proxy_cache_valid 99 1m;", 'invalid status "99"'),
        (ZONE, "proxy_cache one; proxy_cache_use_stale often;", 'invalid value "often"'),
        (ZONE, "proxy_cache one; proxy_cache_lock maybe;", 'it must be "on" or "off"'),
        (ZONE, "proxy_cache one; proxy_cache_methods PUT;", 'invalid value "PUT"'),
        (ZONE, "proxy_cache one; proxy_cache_min_uses 0;", 'invalid value "0"'),
        (ZONE, "proxy_cache $zone;", "with variables is not supported"),
    ],
)
def test_nginx_cache_errors(tmp_path: Path, http: str, location: str, words: str) -> None:
    error = _nginx_error(tmp_path, http, location)
    assert words in error.reason, error.reason
    assert error.where.startswith(str(tmp_path / "nginx.conf") + ":")


def test_nginx_bypass_without_cache_warns_once(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_text(CONF.format(http="proxy_cache_bypass $http_upgrade;", location=""))
    config = load_nginx(str(path))
    assert config.warnings == (
        f'{path}:3: "proxy_cache_bypass" has no effect without "proxy_cache"',
    )
