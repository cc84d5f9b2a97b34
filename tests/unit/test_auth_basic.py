"""filters/auth.py: htpasswd parsing, every hash format, credentials, the filter's
verdicts. No sockets: the filter is fed a fake exchange.

The MD5-crypt vectors come from `openssl passwd -apr1 -salt SALT PASSWORD` (and `-1`
for the `$1$` form), run when they were written; bcrypt hashes are made with the
bcrypt package at test time.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import bcrypt
import pytest

from ferryman.app import check_config
from ferryman.config.dump import dump_native
from ferryman.config.native import load_native
from ferryman.config.nginx import load_nginx
from ferryman.config.schema import AuthBasicSpec, Config, RouteSpec
from ferryman.errors import ConfigError
from ferryman.filters.auth import (
    BasicAuthFilter,
    md5_crypt,
    parse_credentials,
    parse_htpasswd,
    verify,
)
from ferryman.filters.base import Deny
from ferryman.filters.registry import FilterState, build_filters, read_user_files

# (magic, salt, password, what openssl printed)
OPENSSL_MD5_CRYPT = [
    (b"$apr1$", b"abc", b"password", b"$apr1$abc$mehJE/UcwZsj.w5DYe.b5."),
    (b"$apr1$", b"saltsalt", b"password", b"$apr1$saltsalt$yAAkm4libquA.ZWLHbSBq/"),
    (b"$apr1$", b"", b"password", b"$apr1$$qjtLUZpoiD4RwXIYf4qVb0"),
    (b"$apr1$", b"x", b"password", b"$apr1$x$JzZzpGvcyRmaRIUjVzP42/"),
    (b"$apr1$", b"s", b"pw", b"$apr1$s$Hgc9MoaWe1Ieu1lEjENW6."),
    (
        b"$apr1$",
        b"12345678",
        b"correct-horse-battery-staple",
        b"$apr1$12345678$2XI9w7LhAkq32WSgJsGyg1",
    ),
    (b"$apr1$", b"ab", b"x", b"$apr1$ab$eIePjsejfBGR8ITtu2z0U1"),
    (b"$apr1$", b"pepper", b"", b"$apr1$pepper$MkVRrb9d0A4uBa4VeyZy3."),
    (b"$apr1$", b"sel", "päss".encode(), b"$apr1$sel$jibG60BLXsMoLpwXKTrQc/"),
    (b"$apr1$", b"longsalt", b"x" * 100, b"$apr1$longsalt$uzTfwHY4eLTHOIoOOewP3/"),
    (b"$apr1$", b"12345678", b"a" * 40, b"$apr1$12345678$ZB1vyDV5V.sOKjJ6rQyTE1"),
    (b"$1$", b"abcdefgh", b"", b"$1$abcdefgh$M55TzYaaccxVGbptZWaxX/"),
    (b"$1$", b"Zz9./aBc", b"secret", b"$1$Zz9./aBc$zxVqnsomrjk/ITqspcY0w1"),
]


@pytest.mark.parametrize(("magic", "salt", "password", "expected"), OPENSSL_MD5_CRYPT)
def test_md5_crypt_matches_openssl(
    magic: bytes, salt: bytes, password: bytes, expected: bytes
) -> None:
    assert md5_crypt(password, salt, magic) == expected
    assert verify(expected, password)
    assert not verify(expected, password + b"!")


def test_md5_crypt_uses_at_most_eight_salt_characters() -> None:
    assert md5_crypt(b"pw", b"123456789") == md5_crypt(b"pw", b"12345678")


def _sha(password: bytes) -> bytes:
    return b"{SHA}" + base64.b64encode(hashlib.sha1(password).digest())


def _ssha(password: bytes, salt: bytes) -> bytes:
    return b"{SSHA}" + base64.b64encode(hashlib.sha1(password + salt).digest() + salt)


def _bcrypt(password: bytes, prefix: bytes = b"2b") -> bytes:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=4, prefix=prefix))


@pytest.mark.parametrize(
    "stored",
    [
        _sha(b"s3cret"),
        _ssha(b"s3cret", b"saltybytes"),
        b"{PLAIN}s3cret",
        md5_crypt(b"s3cret", b"q1w2e3r4"),
        _bcrypt(b"s3cret", b"2b"),
        _bcrypt(b"s3cret", b"2a"),
        # Apache's htpasswd -B writes $2y$; same algorithm as $2b$.
        b"$2y$" + _bcrypt(b"s3cret")[4:],
    ],
    ids=["sha", "ssha", "plain", "apr1", "bcrypt-2b", "bcrypt-2a", "bcrypt-2y"],
)
def test_verify_each_format(stored: bytes) -> None:
    assert verify(stored, b"s3cret")
    assert not verify(stored, b"s3cret ")
    assert not verify(stored, b"S3cret")
    assert not verify(stored, b"")


def test_bcrypt_long_passwords_are_truncated_at_72_bytes_as_htpasswd_made_them() -> None:
    stored = _bcrypt(b"p" * 72)
    assert verify(stored, b"p" * 72)
    assert verify(stored, b"p" * 72 + b"ignored")
    assert not verify(stored, b"p" * 71)


# ---- the file ----


def test_parse_htpasswd() -> None:
    data = (
        b"# a comment\n"
        b"\n"
        b"alice:{PLAIN}wonder\r\n"
        b"bob:" + _sha(b"builder") + b":Bob the builder\n"
        b"alice:{PLAIN}second-line-ignored\n"
        b"carol:" + md5_crypt(b"x", b"salt") + b"\n"
    )
    users = parse_htpasswd(data, "users.htpasswd")
    assert users == {
        b"alice": b"{PLAIN}wonder",
        b"bob": _sha(b"builder"),
        b"carol": md5_crypt(b"x", b"salt"),
    }


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"no-colon-here", "want user:password-hash"),
        (b":{PLAIN}x", "want user:password-hash"),
        (b"dave:abcdefghijklm", "unsupported password hash"),  # DES crypt
        (b"dave:$6$salt$hash", "unsupported password hash"),  # SHA-512 crypt
        (b"dave:", "unsupported password hash"),
        (b"dave:$2y$05$tooshort", "malformed bcrypt hash"),
        (b"dave:$apr1$salt$short", "malformed MD5-crypt hash"),
        (b"dave:{SHA}not*base64", "malformed {SHA} hash"),
        (b"dave:{SHA}" + base64.b64encode(b"x" * 19), "malformed {SHA} hash"),
        (b"dave:{SSHA}" + base64.b64encode(b"x" * 20), "malformed {SSHA} hash"),
    ],
)
def test_malformed_lines_name_file_and_line(line: bytes, reason: str) -> None:
    data = b"# users\nalice:{PLAIN}a\n" + line + b"\n"
    with pytest.raises(ConfigError) as info:
        parse_htpasswd(data, "/etc/ferryman/htpasswd")
    assert info.value.where == "/etc/ferryman/htpasswd:3"
    assert reason in info.value.reason


def test_a_file_without_users_is_refused() -> None:
    with pytest.raises(ConfigError, match="no users"):
        parse_htpasswd(b"# nobody\n\n", "empty")


def test_build_uses_the_users_the_master_read(tmp_path: Path) -> None:
    # A worker builds its filter from the master's table: the file is not read again
    # (here it does not even exist), so a file broken after the master checked it
    # cannot stop a worker from starting.
    missing = str(tmp_path / "gone")
    state = FilterState(users={missing: {b"alice": b"{PLAIN}wonder"}})
    route = RouteSpec(path="/", auth_basic=AuthBasicSpec("Staff", missing))
    (f,) = build_filters(route, state, "servers[0].routes[0]", frozenset())
    assert isinstance(f, BasicAuthFilter)
    assert f.check(_Exchange(_basic(b"alice:wonder")), 0.0) is None


def test_a_process_alone_reads_the_file_once(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_bytes(b"alice:{PLAIN}wonder\n")
    state = FilterState()
    route = RouteSpec(path="/", auth_basic=AuthBasicSpec("Staff", str(path)))
    (f,) = build_filters(route, state, "servers[0].routes[0]", frozenset())
    path.unlink()  # read once: the filter and a second route no longer need it
    (g,) = build_filters(route, state, "servers[0].routes[1]", frozenset())
    for built in (f, g):
        assert built.check(_Exchange(_basic(b"alice:wonder")), 0.0) is None


def test_build_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    route = RouteSpec(path="/", auth_basic=AuthBasicSpec("x", str(missing)))
    with pytest.raises(ConfigError) as info:
        build_filters(route, FilterState(), "c.yaml: servers[0].routes[0]", frozenset())
    assert info.value.where == "c.yaml: servers[0].routes[0].auth_basic.user_file"
    assert str(missing) in info.value.reason


def _config_with_files(tmp_path: Path, route_file: Path, proxy_file: Path) -> Config:
    text = f"""\
upstreams:
  app: {{servers: ["127.0.0.1:9"]}}
servers:
  - listen: "127.0.0.1:8080"
    routes:
      - path: /
        upstream: app
        routes:
          - path: /deep/
            upstream: app
            auth_basic: {{realm: r, user_file: "{route_file}"}}
      - path: /again/
        upstream: app
        auth_basic: {{realm: r, user_file: "{route_file}"}}
  - listen: "127.0.0.1:3128"
    forward:
      auth: {{realm: proxy, user_file: "{proxy_file}"}}
"""
    return load_native(text, str(tmp_path / "c.yaml"))


def test_read_user_files_finds_nested_routes_and_forward_auth(tmp_path: Path) -> None:
    route_file, proxy_file = tmp_path / "staff", tmp_path / "proxy"
    route_file.write_bytes(b"alice:{PLAIN}wonder\n")
    proxy_file.write_bytes(b"bob:{PLAIN}builder\n")
    users = read_user_files(_config_with_files(tmp_path, route_file, proxy_file))
    assert users == {
        str(route_file): {b"alice": b"{PLAIN}wonder"},
        str(proxy_file): {b"bob": b"{PLAIN}builder"},
    }


def test_read_user_files_names_file_and_line_of_a_bad_file(tmp_path: Path) -> None:
    route_file, proxy_file = tmp_path / "staff", tmp_path / "proxy"
    route_file.write_bytes(b"alice:{PLAIN}wonder\n")
    proxy_file.write_bytes(b"bob:{PLAIN}builder\nno-colon-here\n")
    with pytest.raises(ConfigError) as info:
        read_user_files(_config_with_files(tmp_path, route_file, proxy_file))
    assert info.value.where == f"{proxy_file}:2"
    proxy_file.unlink()
    with pytest.raises(ConfigError) as info:
        read_user_files(_config_with_files(tmp_path, route_file, proxy_file))
    assert info.value.where.endswith("servers[1].forward.auth.user_file")


# ---- credentials ----


def _basic(pair: bytes, scheme: bytes = b"Basic") -> bytes:
    return scheme + b" " + base64.b64encode(pair)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_basic(b"alice:wonder"), (b"alice", b"wonder")),
        (_basic(b"alice:won:der"), (b"alice", b"won:der")),  # RFC 7617: split at the first
        (_basic(b"alice:"), (b"alice", b"")),
        (_basic(b"alice:wonder", b"basic"), (b"alice", b"wonder")),  # scheme is caseless
        (_basic(b"alice:wonder", b"BASIC"), (b"alice", b"wonder")),
        (b"  " + _basic(b"a:b") + b" ", (b"a", b"b")),
        (_basic(b"alice"), None),  # no colon
        (_basic(b"alice:wonder", b"Bearer"), None),
        (b"Basic", None),
        (b"Basic !!!!", None),
        (b"Basic YWxpY2U6d29uZGV", None),  # missing padding
        (b"Basic YWxp Y2U6", None),  # a space inside
        (None, None),
    ],
)
def test_parse_credentials(value: bytes | None, expected: tuple[bytes, bytes] | None) -> None:
    assert parse_credentials(value) == expected


# ---- the filter ----


class _Head:
    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers

    def header(self, lname: bytes) -> bytes | None:
        # RequestHead.header: the first value of the field, by lower-case name.
        return next((v for n, v in self.headers if n.lower() == lname), None)


class _Exchange:
    def __init__(self, authorization: bytes | None = None) -> None:
        headers = [(b"Host", b"x")]
        if authorization is not None:
            headers.append((b"Authorization", authorization))
        self.head = _Head(headers)


CHALLENGE = ((b"WWW-Authenticate", b'Basic realm="Staff only"'),)


def _users() -> dict[bytes, bytes]:
    return {b"alice": b"{PLAIN}wonder", b"bob": _bcrypt(b"builder")}


def test_filter_verdicts() -> None:
    f = BasicAuthFilter("Staff only", _users())
    assert f.check(_Exchange(_basic(b"alice:wonder")), 0.0) is None
    assert f.check(_Exchange(_basic(b"bob:builder")), 0.0) is None
    assert f.check(_Exchange(), 0.0) == Deny(
        401, "no user/password was provided for basic authentication", headers=CHALLENGE
    )
    assert f.check(_Exchange(_basic(b"alice:nope")), 0.0) == Deny(
        401, "user 'alice': password mismatch", headers=CHALLENGE
    )
    assert f.check(_Exchange(_basic(b"eve:wonder")), 0.0) == Deny(
        401, "user 'eve': was not found", headers=CHALLENGE
    )
    assert f.check(_Exchange(b"Basic garbage!"), 0.0) == Deny(
        401, "no user/password was provided for basic authentication", headers=CHALLENGE
    )
    assert not f.holds


def test_realm_is_a_quoted_string() -> None:
    f = BasicAuthFilter('say "hi" \\ bye', _users())
    verdict = f.check(_Exchange(), 0.0)
    assert isinstance(verdict, Deny)
    assert verdict.headers == ((b"WWW-Authenticate", b'Basic realm="say \\"hi\\" \\\\ bye"'),)


def test_successes_are_remembered_and_failures_are_not() -> None:
    calls: list[tuple[bytes, bytes]] = []

    def counting(stored: bytes, password: bytes) -> bool:
        calls.append((stored, password))
        return verify(stored, password)

    f = BasicAuthFilter("r", _users(), check=counting)
    for _ in range(3):
        assert f.check(_Exchange(_basic(b"bob:builder")), 0.0) is None
    assert len(calls) == 1  # bcrypt paid once
    for _ in range(3):
        assert f.check(_Exchange(_basic(b"bob:wrong")), 0.0) is not None
    assert len(calls) == 4  # every failure is checked again
    # A remembered success is for that exact pair only.
    assert f.check(_Exchange(_basic(b"alice:builder")), 0.0) is not None


def test_unknown_users_cost_a_hash_check_too() -> None:
    calls: list[bytes] = []

    def counting(stored: bytes, password: bytes) -> bool:
        calls.append(stored)
        return verify(stored, password)

    f = BasicAuthFilter("r", {b"bob": _bcrypt(b"builder")}, check=counting)
    assert f.check(_Exchange(_basic(b"mallory:builder")), 0.0) is not None
    assert calls == [f.users[b"bob"]]  # checked against a real entry, result ignored


# ---- configuration: native YAML, nginx.conf, and the file read at load ----


ONE_ROUTE = "servers:\n  - listen: 8080\n    routes:\n      - path: /\n"


def _native(text: str) -> Config:
    return load_native(text, "demo.yaml")


def test_native_auth_basic_and_inheritance() -> None:
    config = _native(
        "servers:\n"
        "  - listen: 8080\n"
        "    auth_basic: {realm: Staff, user_file: /etc/ht}\n"
        "    routes:\n"
        "      - path: /\n"
        "      - path: /public/\n"
        "        auth_basic: off\n"
        "      - path: /other/\n"
        "        auth_basic: {realm: Other, user_file: other.ht}\n"
        "        routes: [{path: /other/inner/}]\n"
    )
    root, public, other = config.servers[0].routes
    assert root.auth_basic == AuthBasicSpec("Staff", "/etc/ht")
    assert public.auth_basic is None
    assert other.auth_basic == AuthBasicSpec("Other", "other.ht")
    assert other.routes[0].auth_basic == AuthBasicSpec("Other", "other.ht")
    assert load_native(dump_native(config), "demo.yaml") == config


@pytest.mark.parametrize(
    ("value", "where", "reason"),
    [
        ("{realm: x}", "auth_basic", "missing required key 'user_file'"),
        ("{user_file: f}", "auth_basic", "missing required key 'realm'"),
        ("{realm: x, user_file: f, hash: y}", "auth_basic.hash", "unknown key"),
        ('{realm: "a\\nb", user_file: f}', "auth_basic.realm", "invalid value"),
        ("on", "auth_basic", "must be a mapping"),
    ],
)
def test_native_auth_basic_errors(value: str, where: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        _native(f"{ONE_ROUTE}        auth_basic: {value}\n")
    assert info.value.where == f"demo.yaml: servers[0].routes[0].{where}"
    assert reason in info.value.reason


def test_check_names_a_malformed_file_and_line(tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    users.write_bytes(b"alice:{PLAIN}x\nbob:$6$salt$xyz\n")
    config = _native(
        "servers:\n  - listen: 8080\n    routes:\n      - path: /\n"
        f"        auth_basic: {{realm: r, user_file: {users}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        check_config(config, resolve=False)
    assert info.value.where == f"{users}:2"
    users.unlink()
    with pytest.raises(ConfigError) as info:
        check_config(config, resolve=False)
    assert info.value.where == "demo.yaml: servers[0].routes[0].auth_basic.user_file"


NGINX = """\
events {{}}
http {{
    server {{
        listen 8080;
{body}
        location / {{ proxy_pass http://127.0.0.1:9000; }}
    }}
}}
"""


def _nginx(tmp_path: Path, body: str) -> Config:
    path = tmp_path / "nginx.conf"
    path.write_text(NGINX.format(body=body))
    return load_nginx(str(path))


def test_nginx_user_file_is_relative_to_the_configuration(tmp_path: Path) -> None:
    config = _nginx(tmp_path, 'auth_basic "Staff only";\nauth_basic_user_file conf.d/users;')
    assert config.servers[0].routes[0].auth_basic == AuthBasicSpec(
        "Staff only", str(tmp_path / "conf.d" / "users")
    )


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        # nginx would quietly ask no password: refused.
        ('auth_basic "x";', 5, '"auth_basic" without "auth_basic_user_file"'),
        ('auth_basic "x $host";\nauth_basic_user_file f;', 5, "variables"),
        ('auth_basic "x";\nauth_basic_user_file $file;', 6, "variables"),
        ('auth_basic "x";\nauth_basic "y";\nauth_basic_user_file f;', 6, "is duplicate"),
    ],
)
def test_nginx_auth_basic_errors(tmp_path: Path, body: str, line: int, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        _nginx(tmp_path, body)
    assert info.value.where == f"{tmp_path / 'nginx.conf'}:{line}"
    assert reason in info.value.reason


def test_nginx_auth_basic_off_needs_no_file(tmp_path: Path) -> None:
    assert _nginx(tmp_path, "auth_basic off;").servers[0].routes[0].auth_basic is None
