"""nginx's request phases end to end, from a native YAML config: location matching
order, proxy_pass URI replacement, return and rewrite, map and set variables,
add_header, hidden response fields, client_max_body_size, HTTP/1.0 upstreams."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator

import pytest

from support.procs import EchoFactory, ProxyProcess, free_port

ProxyFactory = Callable[..., ProxyProcess]

CONFIG = """
workers: 1
access_log: off
maps:
  - source: $http_x_mode
    variable: tag
    entries: [[fast, quick], ["~^sl(ow)$", "slow-$1"]]
    default: plain
upstreams:
  app:
    servers: ["{backend}"]
servers:
  - listen: "127.0.0.1:{port}"
    routes:
      - path: /
        upstream: app
        set_headers: {{X-Tag: $tag}}
        add_headers: [{{name: X-Added, value: "yes"}}]
      - path: /exact
        match: exact
        script: [{{return: {{status: 200, text: "exact $uri"}}}}]
      - path: /api/
        upstream: app
        upstream_uri: /echo/
      - path: /static/
        match: prefix_priority
        script: [{{return: {{status: 301, text: "https://cdn.example$request_uri"}}}}]
      - path: "\\\\.php$"
        match: regex
        script: [{{return: {{status: 403}}}}]
      - path: /old
        script: [{{rewrite: {{pattern: "^/old/(.*)$", replacement: "/echo?from=$1", flag: last}}}}]
      - path: /small
        upstream: app
        client_max_body_size: 10
      - path: /hide
        upstream: app
        upstream_uri: /
        hide_headers: [content-type]
        http_version: "1.0"
      - path: /vars
        script:
          - {{set: {{variable: who, value: "$remote_addr:$tag"}}}}
          - {{return: {{status: 200, text: "who=$who"}}}}
"""


@pytest.fixture
def site(echo_server: EchoFactory, proxy: ProxyFactory) -> Iterator[int]:
    (backend,) = echo_server(1)
    port = free_port()
    proxy(CONFIG.format(backend=backend.address, port=port), port)
    yield port


def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), fields, body


def get(port: int, target: str, extra: str = "") -> tuple[int, dict[str, str], bytes]:
    raw = f"GET {target} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n{extra}\r\n"
    return request(port, raw.encode())


def echoed(body: bytes) -> dict[str, object]:
    return json.loads(body)  # type: ignore[no-any-return]


def test_location_order_exact_priority_regex_prefix(site: int) -> None:
    assert get(site, "/exact")[2] == b"exact /exact"
    status, fields, _ = get(site, "/static/x.php?v=1")
    assert status == 301  # ^~ wins over the regex
    assert fields["location"] == "https://cdn.example/static/x.php?v=1"
    assert get(site, "/index.php")[0] == 403  # the regex beats the "/" prefix
    # Not exact: "/" proxies it, and the echo backend has no such page.
    status, _, body = get(site, "/exact/more")
    assert status == 404 and b"exact" not in body


def test_proxy_pass_uri_part_replaces_the_location_prefix(site: int) -> None:
    status, _, body = get(site, "/api/v1/items?q=2")
    assert status == 200
    assert echoed(body)["target"] == "/echo/v1/items?q=2"


def test_rewrite_last_searches_again(site: int) -> None:
    status, _, body = get(site, "/old/thing")
    assert status == 200
    assert echoed(body)["target"] == "/echo?from=thing"


def test_map_variable_and_add_header(site: int) -> None:
    for mode, tag in (("fast", "quick"), ("slow", "slow-ow"), ("other", "plain")):
        status, fields, body = get(site, "/echo", f"X-Mode: {mode}\r\n")
        assert status == 200
        got = {n.lower(): v for n, v in echoed(body)["headers"]}  # type: ignore[union-attr]
        assert got["x-tag"] == tag
        assert fields["x-added"] == "yes"


def test_set_variable(site: int) -> None:
    assert get(site, "/vars", "X-Mode: fast\r\n")[2] == b"who=127.0.0.1:quick"


def test_client_max_body_size(site: int) -> None:
    raw = b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world"
    status, fields, _ = request(site, raw)
    assert status == 413
    assert fields["connection"] == "close"
    raw = b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    assert request(site, raw)[0] == 404  # under the limit: proxied (echo has no /small)


def test_hidden_field_and_http10_upstream(site: int) -> None:
    status, fields, body = get(site, "/hide")
    assert status == 200
    assert "content-type" not in fields
    assert len(body) == 36  # the backend's UUID, via "/" on the backend


def test_bad_path_gets_400(site: int) -> None:
    assert get(site, "/a/%zz")[0] == 400
    assert get(site, "/../etc/passwd")[0] == 400
