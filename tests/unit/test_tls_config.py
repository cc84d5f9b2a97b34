"""TLS in the configuration: native `listen.tls` and `upstream_tls` (frozen objects,
errors with key paths, dump round trip), the nginx front end's errors for the ssl
directives, and the contexts built from them (tls/contexts.py: file errors name their
key path; what the listener accepts)."""

from __future__ import annotations

import ssl
import textwrap
from pathlib import Path

import pytest

from ferryman.app import build_tls
from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
from ferryman.config.nginx import load_nginx
from ferryman.config.schema import DEFAULT_CIPHERS, TlsCertificate, TlsSpec, UpstreamTlsSpec
from ferryman.errors import ConfigError
from ferryman.tls.contexts import listener_tls, upstream_context
from ferryman.tls.devcert import issue
from ferryman.tls.info import dn_rfc2253

BASE = """
upstreams:
  app: {{servers: ["127.0.0.1:9000"]}}
servers:
  - listen:
      - address: "127.0.0.1:8443"
        tls: {tls}
    routes:
      - {{path: /, upstream: app{route}}}
"""


def load(tls: str, route: str = "") -> object:
    return load_native(textwrap.dedent(BASE.format(tls=tls, route=route)), "t.yaml")


def test_listen_tls_is_frozen_with_defaults() -> None:
    config = load("{certificates: [{cert: a.pem, key: a-key.pem}]}")
    spec = config.servers[0].listen[0].tls  # type: ignore[attr-defined]
    assert spec == TlsSpec(certificates=(TlsCertificate("a.pem", "a-key.pem"),))
    assert spec.protocols == ("TLSv1.2", "TLSv1.3")
    assert spec.ciphers == DEFAULT_CIPHERS
    assert spec.verify_client == "off" and spec.session_tickets


def test_everything_round_trips_through_dump() -> None:
    config = load(
        "{certificates: [{cert: a.pem, key: a-key.pem},"
        " {cert: b.pem, key: b-key.pem, names: [b.test, '*.b.test']}],"
        " protocols: [TLSv1.3], ciphers: 'ECDHE+AESGCM', prefer_server_ciphers: false,"
        " verify_client: optional, client_ca: ca.pem, session_tickets: false,"
        " hsts: 'max-age=60'}",
        ", upstream_tls: {verify: false, server_name: false, cert: c.pem, key: c-key.pem}",
    )
    assert load_native(dump_native(config), "t.yaml") == config  # type: ignore[arg-type]
    route = config.servers[0].routes[0]  # type: ignore[attr-defined]
    assert route.upstream_tls == UpstreamTlsSpec(
        verify=False, server_name=False, cert="c.pem", key="c-key.pem"
    )


def test_upstream_tls_true_means_verified_defaults() -> None:
    config = load("{certificates: [{cert: a.pem, key: a-key.pem}]}", ", upstream_tls: true")
    assert config.servers[0].routes[0].upstream_tls == UpstreamTlsSpec()  # type: ignore[attr-defined]
    assert UpstreamTlsSpec().verify


@pytest.mark.parametrize(
    ("tls", "route", "where", "fragment"),
    [
        ("{}", "", "listen[0].tls", "missing required key 'certificates'"),
        ("{certificates: []}", "", "tls.certificates", "must not be empty"),
        ("{certificates: [{cert: a.pem}]}", "", "certificates[0]", "missing required key 'key'"),
        (
            "{certificates: [{cert: a, key: b, names: ['a b']}]}",
            "",
            "certificates[0].names[0]",
            "invalid value",
        ),
        ("{certificates: [{cert: a, key: b}], protocols: [TLSv1.1]}", "", "protocols[0]", "one of"),
        ("{certificates: [{cert: a, key: b}], verify_client: yes}", "", "verify_client", "one of"),
        (
            "{certificates: [{cert: a, key: b}], verify_client: optional}",
            "",
            "tls.verify_client",
            "needs client_ca",
        ),
        ("{certificates: [{cert: a, key: b}], ocsp: on}", "", "tls.ocsp", "unknown key"),
        (
            "{certificates: [{cert: a, key: b}]}",
            ", upstream_tls: {server_name: false}",
            "routes[0].upstream_tls",
            "needs verify: false",
        ),
        (
            "{certificates: [{cert: a, key: b}]}",
            ", upstream_tls: {cert: c.pem}",
            "routes[0].upstream_tls",
            "cert and key go together",
        ),
    ],
)
def test_errors_name_the_key_path(tls: str, route: str, where: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tls, route)
    assert where in info.value.where, info.value
    assert fragment in info.value.reason, info.value


# ---- the nginx front end ----

NGINX = """
events {{}}
http {{
    server {{
        {body}
        location / {{ proxy_pass http://127.0.0.1:9000; }}
    }}
{more}
}}
"""


def nginx_error(tmp_path: Path, body: str, more: str = "") -> ConfigError:
    path = tmp_path / "nginx.conf"
    path.write_text(NGINX.format(body=body, more=more))
    with pytest.raises(ConfigError) as info:
        load_nginx(str(path))
    return info.value


@pytest.mark.parametrize(
    ("body", "more", "line", "fragment"),
    [
        ("listen 443 ssl;", "", 5, 'no "ssl_certificate" is defined'),
        (
            "listen 443 ssl; ssl_certificate a.pem;",
            "",
            5,
            'no "ssl_certificate_key" is defined for certificate "a.pem"',
        ),
        (
            "listen 443 ssl; ssl_certificate a; ssl_certificate_key b; ssl_verify_client on;",
            "",
            5,
            "no ssl_client_certificate",
        ),
        (
            "listen 443 ssl; ssl_certificate a; ssl_certificate_key b;",
            "    server { listen 443; }",
            8,
            "listed with and without ssl",
        ),
        ("listen 443; ssl_protocols SSLv3;", "", 5, "without TLSv1.2 or TLSv1.3"),
        ("listen 443; ssl_protocols TLSv9;", "", 5, 'invalid value "TLSv9"'),
        ("listen 443; ssl_verify_client optional_no_ca;", "", 5, "optional_no_ca"),
        ("listen 443; ssl_certificate data:xyz;", "", 5, "a file path only"),
        ("listen 443; proxy_ssl_name $host;", "", 5, "with variables"),
    ],
)
def test_nginx_ssl_errors(tmp_path: Path, body: str, more: str, line: int, fragment: str) -> None:
    error = nginx_error(tmp_path, body, more)
    assert error.where.endswith(f"nginx.conf:{line}"), error
    assert fragment in error.reason, error


# ---- contexts ----


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ca")
    issue(d, ("localhost",))
    issue(d, ("other.test",))
    return d


def test_missing_files_and_mismatched_keys_name_their_path(certs: Path) -> None:
    bad = TlsSpec(certificates=(TlsCertificate(str(certs / "nope.pem"), str(certs / "x")),))
    with pytest.raises(ConfigError, match="no such file") as info:
        listener_tls(bad, "t.yaml: servers[0].listen[0].tls")
    assert info.value.where == "t.yaml: servers[0].listen[0].tls.certificates[0]"
    mismatched = TlsCertificate(str(certs / "localhost.pem"), str(certs / "other.test-key.pem"))
    with pytest.raises(ConfigError, match="KEY_VALUES_MISMATCH"):
        listener_tls(TlsSpec(certificates=(mismatched,)), "here")
    with pytest.raises(ConfigError, match="no usable cipher") as info:
        ok = TlsCertificate(str(certs / "localhost.pem"), str(certs / "localhost-key.pem"))
        listener_tls(TlsSpec(certificates=(ok,), ciphers="NOPE"), "here")
    assert info.value.where == "here.certificates[0].ciphers"


def test_listener_context_policy(certs: Path) -> None:
    ok = TlsCertificate(str(certs / "localhost.pem"), str(certs / "localhost-key.pem"))
    spec = TlsSpec(
        certificates=(ok,), verify_client="on", client_ca=str(certs / "ca.pem"),
        session_tickets=False,
    )  # fmt: skip
    ctx = listener_tls(spec, "here").context
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.options & ssl.OP_NO_TICKET
    assert ctx.options & ssl.OP_NO_COMPRESSION
    names = {c["name"] for c in ctx.get_ciphers()}
    assert not any(weak in n for n in names for weak in ("RC4", "3DES", "NULL", "MD5", "CBC"))
    assert all("ECDHE" in n or n.startswith("TLS_") for n in names)


def test_upstream_context_verifies_by_default(certs: Path) -> None:
    ctx = upstream_context(UpstreamTlsSpec(trusted_ca=str(certs / "ca.pem")), "here")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    off = upstream_context(UpstreamTlsSpec(verify=False, server_name=False), "here")
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname


def test_build_tls_refuses_proxy_protocol_with_tls(certs: Path) -> None:
    tls = f"{{certificates: [{{cert: {certs}/localhost.pem, key: {certs}/localhost-key.pem}}]}}"
    text = textwrap.dedent(BASE.format(tls=tls, route="")).replace(
        "        tls:", "        proxy_protocol: true\n        tls:"
    )
    with pytest.raises(ConfigError, match="proxy_protocol with tls"):
        build_tls(load_native(text, "t.yaml"))


def test_distinguished_names_in_rfc2253_form() -> None:
    subject = (
        (("countryName", "FR"),),
        (("organizationName", "Acme, Inc."),),
        (("commonName", "client one"), ("emailAddress", "a@b.c")),
    )
    assert dn_rfc2253(subject) == "CN=client one+emailAddress=a@b.c,O=Acme\\, Inc.,C=FR"
    assert dn_rfc2253(None) == ""
