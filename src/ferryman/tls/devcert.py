"""Development certificates: a local CA kept in one directory, and certificates it
issues for the names asked (`ferryman cert dev NAME...`, `ferryman demo --tls`).

The CA is made once and reused, so a browser or system store told to trust it keeps
trusting every later certificate. Files (all PEM): ca.pem, ca-key.pem, and NAME.pem /
NAME-key.pem per certificate (NAME is the first name, `*` spelled `_wildcard`).
Keys are written readable by the owner only. Not for production: the CA key sits
beside what it signs. Must not know about the proxy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["DEFAULT_DIR", "DevCert", "file_stem", "issue", "load_or_create_ca"]

# XDG's data directory: per user, outside any checkout (certificates are not source).
DEFAULT_DIR = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / (
    "ferryman/dev-ca"
)


@dataclass(frozen=True, slots=True)
class DevCert:
    cert: Path
    key: Path
    names: tuple[str, ...]


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_or_create_ca(directory: Path) -> trustme.CA:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.pem", directory / "ca-key.pem"
    if cert.exists() and key.exists():
        return trustme.CA.from_pem(cert.read_bytes(), key.read_bytes())
    ca = trustme.CA(organization_name="Ferryman development CA")
    cert.write_bytes(ca.cert_pem.bytes())
    _write_private(key, ca.private_key_pem.bytes())
    return ca


def file_stem(name: str) -> str:
    return name.replace("*", "_wildcard").replace("/", "_").replace(":", "_")


def issue(directory: Path, names: tuple[str, ...], *, common_name: str | None = None) -> DevCert:
    """A certificate for `names` (host names, `*.wildcards`, IP addresses, or e-mail
    addresses for client certificates), signed by the directory's CA. It serves as a
    server or a client certificate."""
    if not names:
        raise ValueError("at least one name is needed")
    ca = load_or_create_ca(directory)
    leaf = ca.issue_cert(*names, common_name=common_name or names[0])
    stem = file_stem(names[0])
    cert, key = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    _write_private(key, leaf.private_key_pem.bytes())
    return DevCert(cert, key, names)
