"""HTTP basic authentication (RFC 7617; nginx auth_basic): users from an htpasswd file,
read once when the route is built, so a missing or malformed file refuses the
configuration (file and line named) instead of failing requests.

Owns the htpasswd formats nginx accepts that Python can check without the system's
crypt(3): bcrypt (`$2y$`, `$2b$`, `$2a$`), Apache's MD5-crypt (`$apr1$`, and the same
algorithm under `$1$`), `{SHA}`, `{SSHA}` and `{PLAIN}`; every comparison is constant
time. Missing or wrong credentials answer 401 with `WWW-Authenticate: Basic realm=...`;
the Authorization field still goes upstream, as nginx sends it (auth_basic does not
strip it).

Knows nothing about sockets or the event loop: `BasicAuthFilter.check` is a pure
function of the request head and the file read at load.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any, Final

from ferryman.errors import ConfigError
from ferryman.filters.base import Deny, RequestFilter, Verdict
from ferryman.http.fields import trim_ows

__all__ = [
    "BasicAuthFilter",
    "md5_crypt",
    "parse_credentials",
    "parse_htpasswd",
    "read_htpasswd",
    "verify",
]

_ITOA64: Final = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BCRYPT: Final = re.compile(rb"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
_MD5_CRYPT: Final = re.compile(rb"(\$apr1\$|\$1\$)([^$]{0,8})\$[./A-Za-z0-9]{22}")
_SHA1_SIZE: Final = 20
# bcrypt uses the first 72 bytes of a password; the bcrypt package (5.0) refuses longer
# ones instead of truncating, but the hashes in htpasswd files (Apache's htpasswd,
# nginx's crypt(3)) were made by truncating, so a longer password must be truncated too.
_BCRYPT_MAX: Final = 72
# Verified (user, password) pairs remembered per route, so that bcrypt's deliberate
# slowness (tens of ms of CPU in the event loop) is paid once per client, not per
# request. Only successes are kept: failures cannot fill it.
_VERIFIED_MAX: Final = 1024
_SUPPORTED: Final = "bcrypt ($2y$, $2b$, $2a$), $apr1$, $1$, {SHA}, {SSHA} or {PLAIN}"


def md5_crypt(password: bytes, salt: bytes, magic: bytes = b"$apr1$") -> bytes:
    """Poul-Henning Kamp's MD5-crypt as Apache's apr_md5_encode computes it (magic
    `$apr1$`; `$1$` is the original): `magic salt $ 22 characters`."""
    salt = salt[:8]
    final = hashlib.md5(password + salt + password).digest()
    ctx = password + magic + salt
    for n in range(len(password), 0, -16):
        ctx += final[: min(16, n)]
    # "Then something really weird": one byte per bit of the length, NUL for a set bit.
    n = len(password)
    while n:
        ctx += b"\0" if n & 1 else password[:1]
        n >>= 1
    final = hashlib.md5(ctx).digest()
    # 1000 rounds, to slow down guessing (as published).
    for i in range(1000):
        step = password if i & 1 else final
        if i % 3:
            step += salt
        if i % 7:
            step += password
        step += final if i & 1 else password
        final = hashlib.md5(step).digest()
    return magic + salt + b"$" + _md5_crypt_encode(final)


def _md5_crypt_encode(final: bytes) -> bytes:
    out = bytearray()
    for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)):
        out += _to64((final[a] << 16) | (final[b] << 8) | final[c], 4)
    out += _to64(final[11], 2)
    return bytes(out)


def _to64(value: int, count: int) -> bytes:
    out = bytearray()
    for _ in range(count):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return bytes(out)


def verify(stored: bytes, password: bytes) -> bool:
    """Does `password` match the htpasswd hash `stored` (already checked by
    `_check_hash`)? Constant time in the password."""
    if stored.startswith(b"$2"):
        import bcrypt  # only for bcrypt hashes: a worker without them need not load it

        return bcrypt.checkpw(password[:_BCRYPT_MAX], stored)
    if stored.startswith((b"$apr1$", b"$1$")):
        match = _MD5_CRYPT.fullmatch(stored)
        assert match is not None
        return hmac.compare_digest(md5_crypt(password, match[2], match[1]), stored)
    if stored.startswith(b"{SHA}"):
        digest = base64.b64encode(hashlib.sha1(password).digest())
        return hmac.compare_digest(digest, stored[5:])
    if stored.startswith(b"{SSHA}"):
        raw = base64.b64decode(stored[6:])
        digest, salt = raw[:_SHA1_SIZE], raw[_SHA1_SIZE:]
        return hmac.compare_digest(hashlib.sha1(password + salt).digest(), digest)
    assert stored.startswith(b"{PLAIN}")
    return hmac.compare_digest(password, stored[7:])


def _check_hash(stored: bytes) -> str | None:
    """None if `stored` is a well-formed hash of a supported kind, else why not."""
    if stored.startswith(b"$2"):
        return None if _BCRYPT.fullmatch(stored) else "malformed bcrypt hash"
    if stored.startswith((b"$apr1$", b"$1$")):
        return None if _MD5_CRYPT.fullmatch(stored) else "malformed MD5-crypt hash"
    if stored.startswith(b"{SHA}"):
        return None if _base64_size(stored[5:]) == _SHA1_SIZE else "malformed {SHA} hash"
    if stored.startswith(b"{SSHA}"):
        size = _base64_size(stored[6:])
        return None if size is not None and size > _SHA1_SIZE else "malformed {SSHA} hash"
    if stored.startswith(b"{PLAIN}"):
        return None
    # DES crypt, $5$/$6$ (SHA-crypt) and others need crypt(3), gone from Python 3.13.
    return f"unsupported password hash (use {_SUPPORTED})"


def _base64_size(text: bytes) -> int | None:
    try:
        return len(base64.b64decode(text, validate=True))
    except binascii.Error:
        return None


def parse_htpasswd(data: bytes, source: str) -> dict[bytes, bytes]:
    """`user:hash[:comment]` lines -> {user: hash}. Blank lines and `#` lines are
    skipped, as nginx does; the first line for a user wins (nginx stops at it). A bad
    line is a ConfigError at `source:LINE`."""
    users: dict[bytes, bytes] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.removesuffix(b"\r")
        if not line or line.startswith(b"#"):
            continue
        user, colon, rest = line.partition(b":")
        if not colon or not user:
            raise ConfigError(f"{source}:{number}", "want user:password-hash")
        stored = rest.partition(b":")[0]
        problem = _check_hash(stored)
        if problem is not None:
            raise ConfigError(f"{source}:{number}", f"user {_show(user)}: {problem}")
        users.setdefault(user, stored)
    if not users:
        raise ConfigError(source, "no users: nobody could log in")
    return users


def read_htpasswd(path: str, where: str) -> dict[bytes, bytes]:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError(where, f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_htpasswd(data, path)


def parse_credentials(value: bytes | None) -> tuple[bytes, bytes] | None:
    """`Basic base64(user:password)` (RFC 7617 2; the scheme is case-insensitive, RFC
    9110 11.1) -> (user, password); None for anything else."""
    if value is None:
        return None
    scheme, _, token = trim_ows(value).partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        # Strict: only the alphabet, padding only where it belongs (RFC 4648 4).
        decoded = binascii.a2b_base64(token.lstrip(b" "), strict_mode=True)
    except binascii.Error:
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


class BasicAuthFilter(RequestFilter):
    """nginx's auth_basic access handler."""

    def __init__(
        self,
        realm: str,
        users: dict[bytes, bytes],
        check: Callable[[bytes, bytes], bool] = verify,
    ) -> None:
        self.users = users
        self.challenge = ((b"WWW-Authenticate", b'Basic realm="%s"' % _quoted(realm)),)
        self._check = check
        self._verified: dict[bytes, None] = {}
        # Checked against for unknown users, so that a slow hash does not tell them
        # apart from known users with a wrong password by timing.
        self._decoy = next(iter(users.values()))

    def __repr__(self) -> str:
        return f"BasicAuthFilter({len(self.users)} users)"

    def check(self, exchange: Any, now: float) -> Verdict:
        credentials = parse_credentials(exchange.head.header(b"authorization"))
        if credentials is None:
            return Deny(
                401,
                "no user/password was provided for basic authentication",
                headers=self.challenge,
            )
        user, password = credentials
        if self._is_valid(user, password):
            return None
        why = "was not found" if user not in self.users else "password mismatch"
        return Deny(401, f"user {_show(user)}: {why}", headers=self.challenge)

    def _is_valid(self, user: bytes, password: bytes) -> bool:
        key = hashlib.sha256(b"%d:%s:%s" % (len(user), user, password)).digest()
        if key in self._verified:
            return True
        stored = self.users.get(user)
        if stored is None:
            self._check(self._decoy, password)
            return False
        if not self._check(stored, password):
            return False
        if len(self._verified) >= _VERIFIED_MAX:
            del self._verified[next(iter(self._verified))]
        self._verified[key] = None
        return True


def _quoted(realm: str) -> bytes:
    # RFC 9110 5.6.4 quoted-string: `"` and `\` escaped.
    return realm.encode("utf-8").replace(b"\\", b"\\\\").replace(b'"', b'\\"')


def _show(user: bytes) -> str:
    return repr(user.decode("latin-1"))
