"""tls/devcert.py and its commands: `ferryman cert dev NAME...` makes a CA once and
reuses it; the certificates it issues verify against it; `ferryman demo --tls` adds a
TLS listener with one (its configuration only: no ports here)."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest

from ferryman.app import build_tls
from ferryman.cli import main
from ferryman.demo import TLS_LISTEN, demo_config
from ferryman.tls.devcert import issue


def test_cert_dev_command_writes_ca_and_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cert", "dev", "app.test", "*.app.test", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "ca.pem") in out and str(tmp_path / "app.test.pem") in out
    for key in ("ca-key.pem", "app.test-key.pem"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "app.test.pem", tmp_path / "app.test-key.pem")
    assert _handshake(ctx, server, "x.app.test") and _handshake(ctx, server, "app.test")


def test_the_ca_is_made_once_and_reused(tmp_path: Path) -> None:
    issue(tmp_path, ("a.test",))
    ca = (tmp_path / "ca.pem").read_bytes()
    issue(tmp_path, ("b.test",))
    assert (tmp_path / "ca.pem").read_bytes() == ca
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "a.test.pem", tmp_path / "a.test-key.pem")
    assert _handshake(ctx, server, "a.test")


def test_demo_tls_listens_on_8443_with_a_dev_certificate(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    listens = config.servers[0].listen
    tls = [li for li in listens if li.tls is not None]
    assert [(li.host, li.port) for li in tls] == [TLS_LISTEN]
    assert (tmp_path / "localhost.pem").exists()
    assert len(build_tls(config)) == 1  # the files load
    assert all(li.tls is None for li in demo_config().servers[0].listen)


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, name: str) -> bool:
    """An in-memory handshake: True if the client accepts the server's certificate."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=name)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for obj in (c, s):
            try:
                obj.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError:
                return False
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            return True
    return False
