"""SSLContexts from the TLS specs: one set per TLS listening address (a context per
certificate, picked by SNI) and one context per upstream TLS setting.

Built once per configuration generation, in the master before it forks its workers
(app.build_tls): every worker of a generation then shares the session-ticket keys
OpenSSL makes with each context, so a ticket resumes whichever worker the kernel hands
the next connection to; a reload makes a new generation, with new files read and new
keys. Must not know about sockets, event loops or HTTP.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

from ferryman.config.schema import TlsSpec, UpstreamTlsSpec
from ferryman.errors import ConfigError
from ferryman.tls.sni import SniTable

__all__ = ["ListenerTls", "listener_tls", "upstream_context"]

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"off": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "on": ssl.CERT_REQUIRED}


@dataclass(slots=True)
class ListenerTls:
    """What a TLS listener needs at run time: the context every handshake starts with
    (its SNI callback switches to the one for the name asked) and the name table."""

    context: ssl.SSLContext
    table: SniTable[ssl.SSLContext]
    spec: TlsSpec

    def __repr__(self) -> str:
        return f"ListenerTls({self.table!r} verify_client={self.spec.verify_client})"


def listener_tls(spec: TlsSpec, where: str) -> ListenerTls:
    """Raises ConfigError (with `where`) for a file that cannot be read or a key that
    does not match its certificate."""
    contexts = [
        _server_context(spec, cert.cert, cert.key, f"{where}.certificates[{i}]")
        for i, cert in enumerate(spec.certificates)
    ]
    # The default: the first certificate that claims no names, else the first one.
    default_index = next((i for i, c in enumerate(spec.certificates) if not c.names), 0)
    table = SniTable(
        ((c.names, ctx) for c, ctx in zip(spec.certificates, contexts, strict=True)),
        contexts[default_index],
    )
    first = contexts[default_index]
    first.sni_callback = _sni_callback(table)
    return ListenerTls(first, table, spec)


def _sni_callback(
    table: SniTable[ssl.SSLContext],
) -> Callable[[ssl.SSLObject, str, ssl.SSLContext], None]:
    def on_sni(sslobj: ssl.SSLObject, name: str, ctx: ssl.SSLContext) -> None:
        chosen = table.select(name)
        # Remembered for $ssl_server_name (OpenSSL keeps no copy a server can read).
        sslobj.sni_name = name  # type: ignore[attr-defined]
        if chosen is not ctx:
            sslobj.context = chosen

    return on_sni


def _base_context(
    purpose: int, protocols: tuple[str, ...], ciphers: str, where: str
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose else ssl.PROTOCOL_TLS_CLIENT)
    versions = sorted(_VERSIONS[p] for p in protocols)
    ctx.minimum_version = versions[0]
    ctx.maximum_version = versions[-1]
    try:
        ctx.set_ciphers(ciphers)
    except ssl.SSLError:
        raise ConfigError(f"{where}.ciphers", f"no usable cipher in {ciphers!r}") from None
    # No compression (CRIME); no renegotiation started by the client (a DoS lever).
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return ctx


def _server_context(spec: TlsSpec, cert: str, key: str, where: str) -> ssl.SSLContext:
    ctx = _base_context(1, spec.protocols, spec.ciphers, where)
    _load_chain(ctx, cert, key, where)
    if spec.prefer_server_ciphers:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if not spec.session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
    # Every context verifies clients alike: OpenSSL uses the switched-to context's CA
    # store after SNI, but the verify mode set when the handshake began.
    ctx.verify_mode = _VERIFY[spec.verify_client]
    if spec.client_ca is not None:
        _load_ca(ctx, spec.client_ca, f"{where}.client_ca")
    # h2 first: OpenSSL picks the first of ours the client offers (RFC 7301 3.2).
    ctx.set_alpn_protocols(["h2", "http/1.1"] if spec.http2 else ["http/1.1"])
    return ctx


def upstream_context(spec: UpstreamTlsSpec, where: str) -> ssl.SSLContext:
    ctx = _base_context(0, spec.protocols, spec.ciphers, where)
    if spec.verify:
        if spec.trusted_ca is not None:
            _load_ca(ctx, spec.trusted_ca, f"{where}.trusted_ca")
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        # The name check needs the name as SNI too (Python sets both from one value).
        ctx.check_hostname = spec.server_name
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if spec.cert is not None and spec.key is not None:
        _load_chain(ctx, spec.cert, spec.key, where)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str, where: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(where, f"cannot read {exc.filename}: no such file") from None
    except OSError as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ConfigError(where, f"cannot load {cert} / {key}: {reason}") from None


def _load_ca(ctx: ssl.SSLContext, path: str, where: str) -> None:
    try:
        ctx.load_verify_locations(cafile=path)
    except FileNotFoundError:
        raise ConfigError(where, f"cannot read {path}: no such file") from None
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ConfigError(where, f"cannot load CA file {path}: {reason}") from None
