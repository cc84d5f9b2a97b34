"""ClientLimits from both front ends: the native `client_limits` section and nginx's
`large_client_header_buffers NUMBER SIZE`, with errors that name where they are; and
the dump that golden tests rely on."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ferryman.config import load_native
from ferryman.config.dump import dump_native
from ferryman.config.nginx import load_nginx
from ferryman.config.schema import ClientLimits
from ferryman.errors import ConfigError

NATIVE = """\
{limits}
upstreams:
  app:
    servers: ["127.0.0.1:9000"]
servers:
  - listen: "127.0.0.1:8080"
    routes:
      - {{path: /, upstream: app}}
"""


def native(limits: str) -> ClientLimits:
    return load_native(NATIVE.format(limits=limits), "test.yaml").client_limits


def native_error(limits: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        native(limits)
    return info.value


def test_defaults_without_a_section() -> None:
    assert native("") == ClientLimits(request_line=8192, header_bytes=65536, headers=100)


def test_native_section() -> None:
    limits = native("client_limits: {request_line: 4k, header_bytes: 32k, headers: 50}")
    assert limits == ClientLimits(request_line=4096, header_bytes=32768, headers=50)
    assert native("client_limits: {headers: 10}") == ClientLimits(headers=10)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("client_limits: {request_line: 0}", "client_limits.request_line"),
        ("client_limits: {header_bytes: 17m}", "client_limits.header_bytes"),
        ("client_limits: {header_bytes: lots}", "client_limits.header_bytes"),
        ("client_limits: {headers: 0}", "client_limits.headers"),
        ("client_limits: {request_line: 64k, header_bytes: 8k}", "client_limits.request_line"),
        ("client_limits: {line: 8k}", "client_limits.line"),
    ],
)
def test_native_errors_name_the_key(text: str, where: str) -> None:
    assert where in str(native_error(text))


def test_dump_round_trip() -> None:
    config = load_native(
        NATIVE.format(limits="client_limits: {request_line: 16k, header_bytes: 128k}"), "t.yaml"
    )
    text = dump_native(config)
    assert "client_limits: {request_line: 16k, header_bytes: 128k}" in text
    assert load_native(text, "t.yaml") == config
    plain = load_native(NATIVE.format(limits=""), "t.yaml")
    assert "client_limits" not in dump_native(plain)


NGINX = """\
events {{}}
http {{
    {http}
    server {{
        listen 8080;
        {server}
        location / {{ proxy_pass http://127.0.0.1:9000; }}
    }}
}}
"""


def nginx(tmp_path: Path, http: str = "", server: str = "") -> ClientLimits:
    path = tmp_path / "nginx.conf"
    path.write_text(textwrap.dedent(NGINX.format(http=http, server=server)))
    return load_nginx(str(path)).client_limits


def test_large_client_header_buffers(tmp_path: Path) -> None:
    # nginx's default is 4 8k: an 8 KiB request line, 32 KiB of head.
    assert nginx(tmp_path, "large_client_header_buffers 4 8k;") == ClientLimits(
        request_line=8192, header_bytes=32768
    )
    assert nginx(tmp_path) == ClientLimits()


@pytest.mark.parametrize(
    ("http", "server", "message"),
    [
        ("large_client_header_buffers 0 8k;", "", "invalid"),
        ("large_client_header_buffers 4 lots;", "", "invalid"),
        ("large_client_header_buffers 4 8m;", "", "invalid"),
        ("large_client_header_buffers 4;", "", "invalid number of arguments"),
        ("", "large_client_header_buffers 4 8k;", "only supported in the http context"),
    ],
)
def test_large_client_header_buffers_errors(
    tmp_path: Path, http: str, server: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        nginx(tmp_path, http, server)
    assert message in str(info.value)
    assert "nginx.conf:" in str(info.value)
