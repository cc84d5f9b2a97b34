"""Translate functions for nginx's ssl and proxy_ssl directives, and the freeze steps
that turn them into `ListenSpec.tls` and `RouteSpec.upstream_tls`.

nginx chooses the server of a TLS connection by SNI among the servers of its address,
then uses that server's certificates. Ferryman's TLS settings belong to the address
(one socket, one handshake policy), so freezing merges them: the default server's
certificates serve clients with no SNI or an unknown name, every other ssl server's
certificates serve its server_names; protocols, ciphers and client verification are
the default server's (OpenSSL settles them before SNI can change anything), and a
server that says otherwise gets a warning.

Differences from nginx, each a warning or an error at file:line:
  - proxy_ssl_verify is ON unless the file says `proxy_ssl_verify off` (nginx: off);
    a `proxy_pass https://` with no proxy_ssl_verify gets a warning saying so.
  - ssl_protocols below TLSv1.2 are dropped (RFC 8996), with a warning.
  - ssl_verify_depth / proxy_ssl_verify_depth, ssl_session_cache and
    ssl_session_timeout are accepted and have no effect (Python's ssl cannot set them).

Knows nothing about SSLContexts (tls/contexts.py builds those).
"""

from __future__ import annotations

import dataclasses

from ferryman.config.nginx import values
from ferryman.config.nginx.draft import ConfigDraft, Level, Scope, ServerDraft
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.nginx.values import unsupported
from ferryman.config.schema import (
    DEFAULT_CIPHERS,
    TLS_PROTOCOLS,
    ListenSpec,
    TlsCertificate,
    TlsSpec,
    UpstreamTlsSpec,
)
from ferryman.tls.sni import is_valid_sni_pattern

__all__ = [
    "SSL_MARK",
    "listen_tls",
    "proxy_ssl_file",
    "proxy_ssl_flag",
    "proxy_ssl_name",
    "proxy_ssl_protocols",
    "ssl_certificate",
    "ssl_ciphers",
    "ssl_client_certificate",
    "ssl_flag",
    "ssl_no_effect",
    "ssl_protocols",
    "ssl_verify_client",
    "upstream_tls_spec",
    "with_tls",
]

# `listen ... ssl` before freezing: a TlsSpec with no certificates, filled in `listen_tls`.
SSL_MARK = TlsSpec(certificates=())
_KNOWN_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
# nginx's defaults where the schema's differ: ssl_prefer_server_ciphers off,
# ssl_ciphers HIGH:!aNULL:!MD5 (we keep the schema's modern list), proxy_ssl_server_name
# off.
_PREFER_SERVER_CIPHERS = False
_PROXY_SERVER_NAME = False


# ---- directives ----


def ssl_certificate(scope: Scope, stmt: Stmt) -> None:
    """ssl_certificate / ssl_certificate_key: arrays, paired in order (nginx allows
    several pairs per server, e.g. RSA and ECDSA)."""
    text = stmt.args[0]
    if text.startswith(("data:", "engine:")) or "$" in text:
        raise unsupported(stmt, f'"{stmt.name} {text}" is not supported (a file path only)')
    scope.the_level().append(stmt.name, (values.path(stmt, scope.config.base_dir, text), stmt))


def ssl_protocols(scope: Scope, stmt: Stmt) -> None:
    scope.the_level().values[stmt.name] = _protocols(scope, stmt)


def proxy_ssl_protocols(scope: Scope, stmt: Stmt) -> None:
    scope.the_level().values[stmt.name] = _protocols(scope, stmt)


def _protocols(scope: Scope, stmt: Stmt) -> tuple[str, ...]:
    for p in stmt.args:
        if p not in _KNOWN_PROTOCOLS:
            raise stmt.error(f'invalid value "{p}" in "{stmt.name}" directive')
    kept = tuple(p for p in TLS_PROTOCOLS if p in stmt.args)
    dropped = [p for p in stmt.args if p not in TLS_PROTOCOLS]
    if not kept:
        raise unsupported(stmt, f'"{stmt.name}" without TLSv1.2 or TLSv1.3 is not supported')
    if dropped:
        scope.config.warn(
            stmt, f"{', '.join(dropped)} dropped: Ferryman speaks TLSv1.2 and TLSv1.3 only"
        )
    return kept


def ssl_ciphers(scope: Scope, stmt: Stmt) -> None:
    """ssl_ciphers / proxy_ssl_ciphers: an OpenSSL cipher list, checked when the
    contexts are built."""
    scope.the_level().values[stmt.name] = stmt.args[0]


def ssl_flag(scope: Scope, stmt: Stmt) -> None:
    """ssl_prefer_server_ciphers, ssl_session_tickets."""
    scope.the_level().values[stmt.name] = values.flag(stmt, stmt.args[0])


def ssl_no_effect(scope: Scope, stmt: Stmt) -> None:
    """ssl_session_cache, ssl_session_timeout, ssl_verify_depth, proxy_ssl_verify_depth,
    proxy_ssl_session_reuse: accepted; OpenSSL's defaults apply."""
    if stmt.name.endswith("_timeout"):
        values.time(stmt, stmt.args[0], positive=True)
    elif stmt.name.endswith("_depth"):
        values.number(stmt, stmt.args[0], 1)
    elif stmt.name.endswith("_reuse"):
        values.flag(stmt, stmt.args[0])
    else:
        for arg in stmt.args:
            if arg not in ("off", "none") and not arg.startswith(("builtin", "shared:")):
                raise stmt.error(f'invalid session cache "{arg}"')
    scope.config.warn(stmt, f'"{stmt.name}" has no effect in Ferryman (OpenSSL\'s default)')


def ssl_client_certificate(scope: Scope, stmt: Stmt) -> None:
    scope.the_level().values[stmt.name] = values.path(stmt, scope.config.base_dir, stmt.args[0])


def ssl_verify_client(scope: Scope, stmt: Stmt) -> None:
    mode = stmt.args[0]
    if mode == "optional_no_ca":
        raise unsupported(stmt, '"ssl_verify_client optional_no_ca" is not supported')
    if mode not in ("on", "off", "optional"):
        raise stmt.error(f'invalid value "{mode}" in "ssl_verify_client" directive')
    scope.the_level().values[stmt.name] = mode


def proxy_ssl_flag(scope: Scope, stmt: Stmt) -> None:
    """proxy_ssl_verify, proxy_ssl_server_name."""
    scope.the_level().values[stmt.name] = values.flag(stmt, stmt.args[0])


def proxy_ssl_name(scope: Scope, stmt: Stmt) -> None:
    name = stmt.args[0]
    if "$" in name:
        raise unsupported(stmt, '"proxy_ssl_name" with variables is not supported yet')
    if not is_valid_sni_pattern(name) or "*" in name:
        raise stmt.error(f'invalid value "{name}" in "proxy_ssl_name" directive')
    scope.the_level().values[stmt.name] = name


def proxy_ssl_file(scope: Scope, stmt: Stmt) -> None:
    """proxy_ssl_trusted_certificate, proxy_ssl_certificate, proxy_ssl_certificate_key."""
    text = stmt.args[0]
    if "$" in text or text.startswith(("data:", "engine:")):
        raise unsupported(stmt, f'"{stmt.name} {text}" is not supported (a file path only)')
    scope.the_level().values[stmt.name] = values.path(stmt, scope.config.base_dir, text)


# ---- freezing ----


def listen_tls(draft: ConfigDraft) -> dict[str, TlsSpec]:
    """Address -> its TlsSpec, for every address some server listens on with `ssl`."""
    out: dict[str, TlsSpec] = {}
    for address, servers in _ssl_servers(draft).items():
        out[address] = _address_tls(draft, address, servers)
    return out


def with_tls(spec: ListenSpec, tls: dict[str, TlsSpec]) -> ListenSpec:
    if spec.tls is None:
        return spec
    return dataclasses.replace(spec, tls=tls[spec.address])


def _ssl_servers(draft: ConfigDraft) -> dict[str, list[tuple[ServerDraft, Stmt]]]:
    """The ssl servers of each address, its default server first (nginx: the one
    marked default_server, else the first)."""
    by_address: dict[str, list[tuple[ServerDraft, Stmt, bool]]] = {}
    plain: dict[str, Stmt] = {}
    for server in draft.servers:
        for spec, stmt in server.listens:
            if spec.tls is None:
                plain.setdefault(spec.address, stmt)
                continue
            by_address.setdefault(spec.address, []).append((server, stmt, spec.default_server))
    out = {}
    for address, entries in by_address.items():
        if address in plain:
            # One socket cannot be both: nginx refuses it as well ("duplicate listen
            # options"); say which line.
            raise plain[address].error(f"{address} is listed with and without ssl")
        entries.sort(key=lambda e: not e[2])  # stable: default_server first
        out[address] = [(server, stmt) for server, stmt, _ in entries]
    return out


def _address_tls(
    draft: ConfigDraft, address: str, servers: list[tuple[ServerDraft, Stmt]]
) -> TlsSpec:
    certs: list[TlsCertificate] = []
    for i, (server, listen_stmt) in enumerate(servers):
        pairs = _pairs(server.level, listen_stmt)
        names = () if i == 0 else _sni_names(draft, server, address)
        if i > 0 and not names:
            continue
        certs.extend(TlsCertificate(cert, key, names) for cert, key in pairs)
    default = servers[0][0].level
    spec = _listener_settings(default, certs)
    if any("http2" in stmt.args[1:] for _, stmt in servers):
        # `listen ... http2` (nginx before 1.25.1) turns it on for the whole address.
        spec = dataclasses.replace(spec, http2=True)
    if spec.verify_client != "off" and spec.client_ca is None:
        raise servers[0][1].error(
            'no ssl_client_certificate for ssl_verify_client on the "listen ... ssl" directive'
        )
    for server, listen_stmt in servers[1:]:
        if _listener_settings(server.level, certs) != spec:
            draft.warn(
                listen_stmt,
                f"ssl_protocols, ssl_ciphers and ssl_verify_client of the default server of"
                f" {address} apply to every server on it",
            )
    return spec


def _pairs(level: Level, listen_stmt: Stmt) -> list[tuple[str, str]]:
    certs = level.array("ssl_certificate")
    keys = level.array("ssl_certificate_key")
    if not certs:
        raise listen_stmt.error(
            'no "ssl_certificate" is defined for the "listen ... ssl" directive'
        )
    if len(keys) < len(certs):
        stmt = certs[len(keys)][1]
        raise stmt.error(f'no "ssl_certificate_key" is defined for certificate "{stmt.args[0]}"')
    return [(c, k) for (c, _), (k, _) in zip(certs, keys, strict=False)]


def _sni_names(draft: ConfigDraft, server: ServerDraft, address: str) -> tuple[str, ...]:
    names = tuple(n for n, _ in server.names if is_valid_sni_pattern(n))
    if not names:
        draft.warn(
            server.stmt,
            f"this ssl server on {address} has no exact or wildcard server_name to pick its"
            " certificate by SNI; clients reaching it get the default server's",
        )
    return names


def _listener_settings(level: Level, certs: list[TlsCertificate]) -> TlsSpec:
    return TlsSpec(
        certificates=tuple(certs),
        protocols=level.value("ssl_protocols", TLS_PROTOCOLS),
        ciphers=level.value("ssl_ciphers", DEFAULT_CIPHERS),
        prefer_server_ciphers=level.value("ssl_prefer_server_ciphers", _PREFER_SERVER_CIPHERS),
        verify_client=level.value("ssl_verify_client", "off"),
        # nginx: `http2` is off unless turned on (the schema's default is on).
        http2=level.value("http2", False),
        client_ca=level.value("ssl_client_certificate", None),
        session_tickets=level.value("ssl_session_tickets", True),
    )


def upstream_tls_spec(
    level: Level, https: bool, stmt: Stmt, draft: ConfigDraft
) -> UpstreamTlsSpec | None:
    if not https:
        return None
    verify = level.value("proxy_ssl_verify", None)
    if verify is None:
        draft.warn(
            stmt,
            "proxy_ssl_verify is on by default in Ferryman (nginx: off); say"
            ' "proxy_ssl_verify off" to accept any upstream certificate',
        )
        verify = True
    server_name = level.value("proxy_ssl_server_name", _PROXY_SERVER_NAME)
    if verify and not server_name:
        # Python's ssl checks the name it sends as SNI: verifying the name means sending
        # it, so Ferryman sends SNI whenever it verifies.
        server_name = True
    cert = level.value("proxy_ssl_certificate", None)
    key = level.value("proxy_ssl_certificate_key", None)
    if (cert is None) != (key is None):
        raise stmt.error('"proxy_ssl_certificate" and "proxy_ssl_certificate_key" go together')
    return UpstreamTlsSpec(
        verify=verify,
        trusted_ca=level.value("proxy_ssl_trusted_certificate", None),
        server_name=server_name,
        name=level.value("proxy_ssl_name", ""),
        cert=cert,
        key=key,
        protocols=level.value("proxy_ssl_protocols", TLS_PROTOCOLS),
        ciphers=level.value("proxy_ssl_ciphers", DEFAULT_CIPHERS),
    )
