"""What a route sends upstream and the directives around it, against a real `ferryman run`
(native YAML) in front of a real echo backend, over raw sockets:

- upstream_method / upstream_body / pass_request_headers / pass_request_body (nginx
  proxy_method, proxy_set_body, proxy_pass_request_headers, proxy_pass_request_body):
  what the echo backend received, and that the client's dropped body was still read
  (the next request on the same connection is answered);
- X-Accel-Expires honoured by the cache, and ignored with ignore_headers;
- keepalive_header (nginx keepalive_timeout's second parameter) on kept-alive answers;
- error_page applied to a 401 of basic auth, WWW-Authenticate kept;
- autoindex and $request_filename on a static route.

One proxy and one backend serve the whole module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.procs import EchoBackend, ProxyProcess, free_port, start_echo, start_proxy
from support.rawhttp import RawClient, RawResponse

KEEPALIVE_HEADER = 17


def _config(port: int, backend: str, files: Path, users: Path) -> str:
    return f"""\
keepalive_header: {KEEPALIVE_HEADER}
cache_zones:
  - {{name: mem, memory_size: 8m}}
upstreams:
  app:
    servers: [{{address: "{backend}"}}]
servers:
  - listen: "127.0.0.1:{port}"
    routes:
      - path: /method/
        upstream: app
        upstream_uri: /echo/
        upstream_method: PUT
      - path: /setbody
        match: exact
        upstream: app
        upstream_uri: /echo
        upstream_body: "uri=$uri&a=$arg_a"
      - path: /noheaders/
        upstream: app
        upstream_uri: /echo/
        pass_request_headers: false
        set_headers: {{X-Kept: $http_x_custom}}
      - path: /nobody/
        upstream: app
        upstream_uri: /echo/
        pass_request_body: false
      - path: /plain/
        upstream: app
        upstream_uri: /echo/
      - path: /cached/
        upstream: app
        upstream_uri: /
        cache: {{zone: mem}}
      - path: /ignoring/
        upstream: app
        upstream_uri: /
        cache: {{zone: mem}}
        ignore_headers: [X-Accel-Expires]
      - path: /auth/
        auth_basic: {{realm: "members", user_file: "{users}"}}
        error_pages: [{{codes: [401], target: /pages/401.txt}}]
        static: {{alias: "{files}/"}}
      - path: /pages/
        static: {{root: "{files}"}}
      - path: /list/
        static: {{alias: "{files}/", index: [none.html], autoindex: true}}
        add_headers: [{{name: X-File, value: $request_filename, always: true}}]
"""


@dataclass(frozen=True)
class Stack:
    backend: EchoBackend
    proxy: ProxyProcess
    files: Path

    @property
    def port(self) -> int:
        return self.proxy.port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("body-options")
    files = workdir / "files"
    (files / "pages").mkdir(parents=True)
    (files / "pages" / "401.txt").write_text("please log in\n")
    (files / "sub").mkdir()
    (files / "a.txt").write_text("hello\n")
    users = workdir / "htpasswd"
    users.write_text("alice:{PLAIN}secret\n")
    backend = start_echo(workdir / "logs")
    try:
        port = free_port()
        config = _config(port, backend.address, files, users)
        proxy = start_proxy(workdir / "proxy", config, port)
        try:
            yield Stack(backend, proxy, files)
        finally:
            proxy.stop()
    finally:
        backend.stop()


def _request(
    method: str, target: str, *headers: str, body: bytes | None = None, close: bool = True
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: example.test", *headers]
    if close:
        lines.append("Connection: close")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def exchange(port: int, data: bytes, *, head: bool = False) -> RawResponse:
    with RawClient(port, timeout=10) as client:
        client.send(data)
        resp = client.read_response(head_request=head)
    assert resp is not None
    return resp


def echo(resp: RawResponse) -> dict[str, Any]:
    assert resp.status == 200, resp
    data: dict[str, Any] = json.loads(resp.body)
    return data


def names(data: dict[str, Any]) -> set[str]:
    return {name.lower() for name, _ in data["headers"]}


def field(data: dict[str, Any], name: str) -> str | None:
    return next((v for n, v in data["headers"] if n.lower() == name), None)


# ---- what goes upstream


def test_upstream_method_replaces_the_clients(stack: Stack) -> None:
    got = echo(exchange(stack.port, _request("GET", "/method/x")))
    assert (got["method"], got["target"]) == ("PUT", "/echo/x")
    # A bodiless GET turned PUT says nothing of a length, as nginx.
    assert "content-length" not in names(got)
    got = echo(exchange(stack.port, _request("POST", "/method/y", body=b"z" * 33)))
    assert (got["method"], got["body_length"]) == ("PUT", 33)


def test_upstream_body_replaces_the_clients_and_is_a_template(stack: Stack) -> None:
    got = echo(exchange(stack.port, _request("POST", "/setbody?a=7", body=b"x" * 500)))
    expected = b"uri=/setbody&a=7"
    assert got["body_length"] == len(expected)
    assert got["body_sha256"] == hashlib.sha256(expected).hexdigest()
    assert field(got, "content-length") == str(len(expected))
    assert got["method"] == "POST"


def test_a_dropped_body_is_still_read_off_the_connection(stack: Stack) -> None:
    """The client's body must be consumed whole: the next request on the same
    connection is parsed from where it ends, not from the middle of the body."""
    body = b"B" * 20_000
    with RawClient(stack.port, timeout=10) as client:
        client.send(_request("POST", "/nobody/one", body=body, close=False))
        first = client.read_response()
        client.send(_request("GET", "/plain/two"))
        second = client.read_response()
    assert first is not None and second is not None
    assert echo(first)["body_length"] == 0
    assert "content-length" not in names(echo(first)) or field(echo(first), "content-length") == "0"
    assert echo(second)["target"] == "/echo/two"


def test_pass_request_body_off_sends_no_body_even_when_chunked(stack: Stack) -> None:
    data = (
        b"POST /nobody/c HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    got = echo(exchange(stack.port, data))
    assert got["body_length"] == 0
    assert "transfer-encoding" not in names(got)


def test_pass_request_headers_off_sends_only_the_proxys_fields(stack: Stack) -> None:
    data = _request("GET", "/noheaders/x", "X-Custom: through-a-variable", "Accept: text/html")
    got = echo(exchange(stack.port, data))
    assert field(got, "x-kept") == "through-a-variable"
    assert "x-custom" not in names(got)
    assert "accept" not in names(got)
    assert "host" in names(got)
    # The common route passes the same client fields on.
    plain = echo(exchange(stack.port, _request("GET", "/plain/x", "Accept: text/html")))
    assert field(plain, "accept") == "text/html"


# ---- X-Accel-Expires and ignore_headers


def _cache_status(resp: RawResponse) -> str:
    return (resp.header(b"cache-status") or b"").decode()


def test_x_accel_expires_makes_an_answer_cacheable_and_wins_over_no_store(stack: Stack) -> None:
    target = "/cached/headers?X-Accel-Expires=60&Cache-Control=no-store&k=1"
    first = exchange(stack.port, _request("GET", target))
    second = exchange(stack.port, _request("GET", target))
    assert first.status == second.status == 200
    assert "hit" in _cache_status(second), second.headers


def test_x_accel_expires_zero_is_never_cached(stack: Stack) -> None:
    target = "/cached/headers?X-Accel-Expires=0&Cache-Control=max-age%3D60&k=2"
    exchange(stack.port, _request("GET", target))
    second = exchange(stack.port, _request("GET", target))
    assert "hit" not in _cache_status(second), second.headers


def test_ignored_x_accel_expires_changes_nothing(stack: Stack) -> None:
    target = "/ignoring/headers?X-Accel-Expires=60&k=3"
    exchange(stack.port, _request("GET", target))
    second = exchange(stack.port, _request("GET", target))
    assert "hit" not in _cache_status(second), second.headers


# ---- keepalive_header


def test_keep_alive_field_on_kept_alive_answers_only(stack: Stack) -> None:
    with RawClient(stack.port, timeout=10) as client:
        client.send(_request("GET", "/plain/ka", close=False))
        kept = client.read_response()
    assert kept is not None
    assert kept.header(b"keep-alive") == b"timeout=%d" % KEEPALIVE_HEADER
    closing = exchange(stack.port, _request("GET", "/plain/ka"))
    assert closing.header(b"keep-alive") is None
    with RawClient(stack.port, timeout=10) as client:
        client.send(_request("GET", "/pages/401.txt", close=False))
        local = client.read_response()
    assert local is not None and local.status == 200
    assert local.header(b"keep-alive") == b"timeout=%d" % KEEPALIVE_HEADER


# ---- error_page for a denial


def test_error_page_replaces_a_401_and_keeps_www_authenticate(stack: Stack) -> None:
    resp = exchange(stack.port, _request("GET", "/auth/a.txt"))
    assert resp.status == 401
    assert resp.body == b"please log in\n"
    assert resp.header(b"www-authenticate") == b'Basic realm="members"'
    # With credentials the file itself.
    ok = exchange(
        stack.port, _request("GET", "/auth/a.txt", "Authorization: Basic YWxpY2U6c2VjcmV0")
    )
    assert (ok.status, ok.body) == (200, b"hello\n")


# ---- autoindex and $request_filename


def test_autoindex_lists_a_directory_and_request_filename_names_it(stack: Stack) -> None:
    resp = exchange(stack.port, _request("GET", "/list/"))
    assert resp.status == 200
    assert resp.header(b"content-type") == b"text/html"
    assert b"<h1>Index of /list/</h1>" in resp.body
    assert b'<a href="sub/">sub/</a>' in resp.body
    assert b'<a href="a.txt">a.txt</a>' in resp.body
    assert resp.body.index(b"sub/") < resp.body.index(b"a.txt")  # directories first
    assert resp.header(b"x-file") == str(stack.files).encode() + b"/"
    file = exchange(stack.port, _request("GET", "/list/a.txt"))
    assert file.header(b"x-file") == str(stack.files / "a.txt").encode()
