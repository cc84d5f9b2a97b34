"""The TLS variables of a request, nginx's names: $ssl_protocol, $ssl_cipher,
$ssl_server_name, $ssl_session_reused, $ssl_client_verify, $ssl_client_s_dn,
$ssl_client_i_dn, $ssl_client_serial, $https. Each reads the connection's SSLObject
(None on a plain listener: every variable is then empty, $ssl_client_verify "NONE"
only on TLS, as nginx).

Must not know about exchanges: a context is anything with an `ssl_object` attribute.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

__all__ = ["TLS_VARIABLES", "dn_rfc2253"]

# OpenSSL's short names for the attributes getpeercert() spells out.
_SHORT = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "emailAddress": "emailAddress",
    "domainComponent": "DC",
    "serialNumber": "serialNumber",
}


def _escape(value: str) -> str:
    # RFC 4514 2.4: escape the specials, and a leading space or '#', a trailing space.
    out = "".join("\\" + ch if ch in ',+"\\<>;=' else ch for ch in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" "):
        out = out[:-1] + "\\ "
    return out


def dn_rfc2253(name: Any) -> str:
    """getpeercert()'s subject/issuer (RDNs, each a tuple of (attr, value)) in RFC 2253
    form, most specific first, as nginx's $ssl_client_s_dn (1.11.6+)."""
    rdns = []
    for rdn in reversed(name or ()):
        rdns.append("+".join(f"{_SHORT.get(k, k)}={_escape(v)}" for k, v in rdn))
    return ",".join(rdns)


def _obj(ctx: Any) -> ssl.SSLObject | None:
    return ctx.ssl_object  # type: ignore[no-any-return]


def _cert(ctx: Any) -> dict[str, Any] | None:
    sslobj = _obj(ctx)
    if sslobj is None:
        return None
    cert = sslobj.getpeercert()
    return cert or None


def _protocol(ctx: Any) -> bytes:
    sslobj = _obj(ctx)
    return (sslobj.version() or "").encode() if sslobj is not None else b""


def _cipher(ctx: Any) -> bytes:
    sslobj = _obj(ctx)
    cipher = sslobj.cipher() if sslobj is not None else None
    return cipher[0].encode() if cipher else b""


def _server_name(ctx: Any) -> bytes:
    sslobj = _obj(ctx)
    name = getattr(sslobj, "sni_name", None) if sslobj is not None else None
    return name.encode("ascii", "replace") if name else b""


def _reused(ctx: Any) -> bytes:
    sslobj = _obj(ctx)
    if sslobj is None:
        return b""
    return b"r" if sslobj.session_reused else b"."


def _verify(ctx: Any) -> bytes:
    sslobj = _obj(ctx)
    if sslobj is None:
        return b""
    # A certificate that fails verification fails the handshake (Python's ssl has no
    # verify callback to let it through as nginx's FAILED:reason), so a request only
    # ever sees SUCCESS or NONE.
    return b"SUCCESS" if _cert(ctx) is not None else b"NONE"


def _subject(ctx: Any) -> bytes:
    cert = _cert(ctx)
    return dn_rfc2253(cert.get("subject")).encode("utf-8") if cert else b""


def _issuer(ctx: Any) -> bytes:
    cert = _cert(ctx)
    return dn_rfc2253(cert.get("issuer")).encode("utf-8") if cert else b""


def _serial(ctx: Any) -> bytes:
    cert = _cert(ctx)
    return str(cert.get("serialNumber", "")).encode() if cert else b""


def _https(ctx: Any) -> bytes:
    return b"on" if _obj(ctx) is not None else b""


TLS_VARIABLES: dict[str, Callable[[Any], bytes]] = {
    "ssl_protocol": _protocol,
    "ssl_cipher": _cipher,
    "ssl_server_name": _server_name,
    "ssl_session_reused": _reused,
    "ssl_client_verify": _verify,
    "ssl_client_s_dn": _subject,
    "ssl_client_i_dn": _issuer,
    "ssl_client_serial": _serial,
    "https": _https,
}
