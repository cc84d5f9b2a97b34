"""The native `admin:` and `trace:` sections: loopback by default, a token required
off loopback, both forms of the token, and the YAML dump round trip."""

from __future__ import annotations

import pytest

from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
from ferryman.config.schema import AdminSpec, TraceSpec
from ferryman.errors import ConfigError
from ferryman.observability.admin import is_loopback, load_token

BASE = """upstreams:
  app: {servers: ["127.0.0.1:9000"]}
servers:
  - listen: "127.0.0.1:8080"
    routes: [{path: /, upstream: app}]
"""


def load(top: str) -> object:
    return load_native(top + "\n" + BASE, "t.yaml")


def test_no_admin_section_means_no_listener() -> None:
    config = load_native(BASE, "t.yaml")
    assert config.admin is None and config.trace is None


def test_defaults_to_loopback_9901() -> None:
    config = load_native("admin: {}\n" + BASE, "t.yaml")
    assert config.admin == AdminSpec(host="127.0.0.1", port=9901)


@pytest.mark.parametrize("listen", ["0.0.0.0:9901", "10.1.2.3:9901", "[::]:9901", "example.com:1"])
def test_non_loopback_without_token_is_refused(listen: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_native(f'admin: {{listen: "{listen}"}}\n' + BASE, "t.yaml")
    assert "t.yaml: admin.token" in str(err.value)
    assert "needs a token" in str(err.value)


def test_a_bare_port_stays_on_loopback() -> None:
    # Unlike a server's `listen 8080` (every address): the admin API is loopback first.
    config = load_native("admin: {listen: 9911}\n" + BASE, "t.yaml")
    assert config.admin == AdminSpec(host="127.0.0.1", port=9911)


def test_non_loopback_with_a_token_is_accepted() -> None:
    config = load_native('admin: {listen: "0.0.0.0:9901", token: s3cret}\n' + BASE, "t.yaml")
    assert config.admin == AdminSpec(host="0.0.0.0", port=9901, token="s3cret")
    config = load_native('admin: {listen: "10.0.0.1:1", token_file: /run/tok}\n' + BASE, "t")
    assert config.admin is not None and config.admin.token_file == "/run/tok"


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ("admin: {token: a, token_file: /x}", "not both"),
        ("admin: {listen: [1]}", "must be an address"),
        ('admin: {listen: "127.0.0.1:0x10"}', "admin.listen"),
        ("admin: {port: 1}", "unknown key"),
        ('admin: {token: "a b"}', "invalid value"),
        ('trace: {header: "X Bad"}', "invalid value"),
        ("trace: {name: X}", "unknown key"),
    ],
)
def test_bad_sections(section: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_native(section + "\n" + BASE, "t.yaml")
    assert reason in str(err.value)


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.1")


def test_trace_top_level_and_per_server() -> None:
    text = "trace: {}\n" + BASE.replace(
        '  - listen: "127.0.0.1:8080"\n', '  - listen: "127.0.0.1:8080"\n    trace: {header: X-T}\n'
    )
    config = load_native(text, "t.yaml")
    assert config.trace == TraceSpec("X-Ferryman-Trace")
    assert config.servers[0].trace == TraceSpec("X-T")


def test_dump_round_trip() -> None:
    text = 'admin: {listen: "127.0.0.2:9911", token: abc}\ntrace: {header: X-Why}\n' + BASE
    config = load_native(text, "t.yaml")
    dumped = dump_native(config)
    assert "admin: {listen: '127.0.0.2:9911', token: abc}" in dumped
    assert load_native(dumped, "t.yaml") == config


def test_token_file(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "token"
    path.write_bytes(b"  from-file \r\nsecond line\n")
    assert load_token(AdminSpec(token_file=str(path)), "t: admin") == "from-file"
    assert load_token(AdminSpec(token="inline"), "t: admin") == "inline"
    path.write_bytes(b"\n")
    with pytest.raises(ConfigError, match="holds no token"):
        load_token(AdminSpec(token_file=str(path)), "t: admin")
    with pytest.raises(ConfigError, match="cannot read"):
        load_token(AdminSpec(token_file=str(path) + ".missing"), "t: admin")
