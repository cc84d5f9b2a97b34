"""The native keys of the request options, proxy_ignore_headers and autoindex: values,
key-path errors, and the dump -> load round trip."""

from __future__ import annotations

import pytest

from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
from ferryman.errors import ConfigError

BASE = """\
upstreams:
  app:
    servers: [{address: "127.0.0.1:9001"}]
servers:
  - listen: "127.0.0.1:8080"
    routes:
      - path: /a/
        upstream: app
%s
      - path: /files/
        static: {root: /srv, %s}
"""


def _load(route: str = "", static: str = "etag: true") -> object:
    return load_native(BASE % (route, static), "t.yaml")


def test_values_and_round_trip() -> None:
    config = _load(
        "        upstream_method: PUT\n"
        '        upstream_body: "a=$arg_a"\n'
        "        pass_request_headers: false\n"
        "        pass_request_body: false\n"
        "        ignore_headers: [Set-Cookie, x-accel-expires, set-cookie]\n",
        "autoindex: true, autoindex_format: json, autoindex_exact_size: false,"
        " autoindex_localtime: true",
    )
    route, files = config.servers[0].routes  # type: ignore[attr-defined]
    assert (route.upstream_method, route.upstream_body) == ("PUT", "a=$arg_a")
    assert (route.pass_request_headers, route.pass_request_body) == (False, False)
    assert route.ignore_headers == ("set-cookie", "x-accel-expires")
    static = files.static
    assert (static.autoindex, static.autoindex_format) == (True, "json")
    assert (static.autoindex_exact_size, static.autoindex_localtime) == (False, True)
    assert load_native(dump_native(config), "t.yaml") == config  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("route", "static", "where"),
    [
        ("        ignore_headers: [vary, date]\n", "etag: true", "routes[0].ignore_headers[1]"),
        ('        upstream_method: "GE T"\n', "etag: true", "routes[0].upstream_method"),
        ("        pass_request_body: maybe\n", "etag: true", "routes[0].pass_request_body"),
        ("", "autoindex_format: xml", "routes[1].static.autoindex_format"),
        ("", "autoindex: 2", "routes[1].static.autoindex"),
    ],
)
def test_errors_carry_the_key_path(route: str, static: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(route, static)
    assert f"servers[0].{where}" in str(info.value)
