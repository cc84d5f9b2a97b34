"""HTTP/2's configuration: `http2` on a native listen entry (TlsSpec.http2, on by
default for TLS listeners, refused without TLS) and what ALPN then offers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
from ferryman.errors import ConfigError
from ferryman.tls.devcert import issue


def _config(cert: Path, key: Path, listen_extra: str) -> str:
    return f"""
upstreams:
  app: {{servers: ["127.0.0.1:9000"]}}
servers:
  - listen:
      - address: "127.0.0.1:8443"
        {listen_extra}
        tls: {{certificates: [{{cert: {cert}, key: {key}}}]}}
    routes:
      - {{path: /, upstream: app}}
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cert = issue(tmp_path_factory.mktemp("h2cfg") / "ca", ("localhost",))
    return Path(cert.cert), Path(cert.key)


@pytest.mark.parametrize(
    ("extra", "http2"), [("", True), ("http2: true", True), ("http2: false", False)]
)
def test_http2_on_tls_listeners(pair: tuple[Path, Path], extra: str, http2: bool) -> None:
    config = load_native(_config(*pair, extra), "test.yaml")
    (listen,) = config.servers[0].listen
    assert listen.tls is not None and listen.tls.http2 is http2
    # The dump writes it only when it differs from the default, and loads back equal.
    text = dump_native(config)
    assert ("http2: false" in text) is (not http2)
    assert load_native(text, "dump.yaml").servers[0].listen == config.servers[0].listen


def test_http2_needs_tls() -> None:
    text = """
upstreams:
  app: {servers: ["127.0.0.1:9000"]}
servers:
  - listen: [{address: "127.0.0.1:8080", http2: true}]
    routes: [{path: /, upstream: app}]
"""
    with pytest.raises(ConfigError) as info:
        load_native(text, "test.yaml")
    assert "servers[0].listen[0].http2" in str(info.value)
    assert "tls" in str(info.value)
