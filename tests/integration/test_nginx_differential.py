"""Differential tests: the same nginx.conf run by real nginx and by Ferryman.

Every scenario in tests/differential/ is an nginx.conf template and a list of requests
(see tests/differential/README.md). For each scenario the template is rendered twice,
identically but for the listen port, and run by `nginx` and by `ferryman run -c` in
front of the same backends; each request is sent to both on a fresh connection
(`Connection: close`, fixed Host), and what each proxy did is compared:

- client side: the status (or "closed without an answer"), the response header fields
  as (lower-cased name, value) pairs in any order across names but in order within a
  name, and the body; for a redirect the Location is one of those fields;
- upstream side, when the body is the echo backend's JSON: the method, request-target,
  HTTP version, the header fields compared the same way, the body length (and hash, for
  /echo itself), and which backend answered.

Values are normalized only where the two runs must differ: each proxy's own listen port
becomes `<port>`. Every other accepted difference is listed under "accepted
differences" below with its reason; anything else fails with a readable diff naming the
scenario, the request-list line and the request. Without nginx the module is skipped
(scripts/install-system-deps.sh installs it). Scenarios run one at a time: nginx and
Ferryman for one template, stopped by PID before the next starts.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.nginx import NginxProcess, find_nginx, nginx_temp_paths, start_nginx
from support.procs import (
    REPO_ROOT,
    EchoBackend,
    Proc,
    free_port,
    start_echoes,
    start_process,
    wait_for_port,
)
from support.rawhttp import RawClient, ScriptedBackend

CORPUS = REPO_ROOT / "tests" / "differential"
NGINX = find_nginx()
HOST = "example.test"
ECHO_COUNT = 6
CLIENT_TIMEOUT = 5.0
# 2024-01-02T03:04:05Z: the static scenarios' ETag "65937d25-..." and dates rely on it.
WWW_MTIME = 1704164645

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (scripts/install-system-deps.sh)"
)

# ------------------------------------------------------------------ accepted differences
#
# Everything not listed here must be the same as under nginx. Each entry says why the
# difference is acceptable; a Ferryman bug is never listed (its test fails until fixed).

# Server: each proxy's own product token. nginx sends "nginx/1.22.1"; Ferryman sends no
# Server field at all, which RFC 9110 10.2.4 allows (a SHOULD NOT-overly-detailed, MAY
# field). Only a proxy's own value is dropped: an upstream's Server passed on with
# proxy_pass_header is compared like any other field.
OWN_VALUE_DROPPED = frozenset({"server"})
# Date: the clock moves between the request to nginx and the one to Ferryman, so it is
# compared by presence (RFC 9110 6.6.1: an origin with a clock MUST send it, a proxy
# MUST add it when forwarding a response without one); an upstream's Date passed on
# with proxy_pass_header is compared by value.
PRESENCE_ONLY = frozenset({"date"})
# RFC 9110 7.6.1: a proxy MUST remove the fields its peer's Connection header names, and
# SHOULD remove Proxy-Connection (RFC 9112 C.2.2). nginx passes both on, in both
# directions (a client's `Connection: close, X-Hop` + `X-Hop: 1` reaches the upstream
# as `X-Hop: 1`); Ferryman follows the RFC. So these names are not compared.
ALWAYS_HOP_BY_HOP = frozenset({"proxy-connection"})
# (scenario, request id) -> why this one request's difference is accepted. Empty: every
# listed request must behave exactly as under nginx.
ACCEPTED: dict[tuple[str, str], str] = {
    # nginx reads a chunked request body whole (proxy_request_buffering on) and sends it
    # with Content-Length, as HTTP/1.0 when proxy_http_version is 1.0. Ferryman streams
    # every body (README: "never buffered whole"), so a chunked body stays chunked and
    # goes as HTTP/1.1, the only version that can frame it without buffering.
    **{
        (scenario, rid): "chunked request bodies are streamed, not buffered into a length"
        for scenario, rid in (
            ("body_size", "body_size:8:POST /echo/small-chunked body=500 chunked"),
            ("body_size", "body_size:10:POST /echo/big/chunked body=2000 chunked"),
            ("proxy_pass", "proxy_pass:38:POST /version/chunked body=100 chunked"),
        )
    },
    # nginx answers several ranges with a 206 multipart/byteranges body; Ferryman sends
    # the whole file with 200, which RFC 9110 14.2 allows (a server MAY ignore Range).
    ("static", "static:30:GET /hello.txt Range:bytes=0-1,3-4"): "multiple ranges: whole file",
}

# A scenario whose upstream balances over several echo backends: which one answers is
# the balancer's choice, so only "one of them" is compared.
ANY_BACKEND = frozenset({"reference"})

# nginx's built-in error pages end with this; for those only status and header names
# are compared (Ferryman's page text is its own).
_NGINX_DEFAULT_PAGE = re.compile(rb"<hr><center>nginx(/[\d.]+)?</center>\s*</body>")

# The scripted backend's answer, for proxy_hide_header / proxy_pass_header.
SCRIPTED_DATE = "Mon, 01 Jan 2024 00:00:00 GMT"
SCRIPTED_SERVER = "scripted-origin/1.0"
_SCRIPTED_BODY = b"scripted\n"
SCRIPTED_REPLY = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: " + SCRIPTED_SERVER.encode() + b"\r\n"
    b"Date: " + SCRIPTED_DATE.encode() + b"\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: %d\r\n"
    b"X-Powered-By: php/8.3\r\n"
    b"X-Secret: s3cr3t\r\n"
    b"X-Pad: avoid browser bug\r\n"
    b"X-Accel-Buffering: no\r\n"
    b"Set-Cookie: a=1; Path=/\r\n"
    b"Set-Cookie: b=2\r\n"
    b"Cache-Control: no-store\r\n"
    b"Vary: Accept\r\n"
    b"Link: </style.css>; rel=preload\r\n"
    b"Keep-Alive: timeout=5\r\n"
    b"Connection: close, X-Hop\r\n"
    b"X-Hop: hop-value\r\n"
    b"\r\n" % len(_SCRIPTED_BODY)
) + _SCRIPTED_BODY


# ------------------------------------------------------------------ the corpus

_DEFAULT_HEADERS = frozenset({("Host", HOST), ("Connection", "close")})


@dataclass(frozen=True, slots=True)
class Request:
    """One line of a NAME.requests file."""

    scenario: str
    line: int
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: int | None = None
    chunked: bool = False
    version: str = "1.1"

    @property
    def id(self) -> str:
        extra = "".join(f" {n}:{v}" for n, v in self.headers if (n, v) not in _DEFAULT_HEADERS)
        extra += f" body={self.body}" if self.body is not None else ""
        extra += " chunked" * self.chunked
        extra += f" HTTP/{self.version}" * (self.version != "1.1")
        return f"{self.scenario}:{self.line}:{self.method} {self.target}{extra}"

    def body_bytes(self) -> bytes:
        return bytes(i % 251 for i in range(self.body or 0))

    def encode(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/{self.version}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        body = self.body_bytes()
        if self.body is not None and self.chunked:
            lines.append("Transfer-Encoding: chunked")
            payload = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
        elif self.body is not None:
            lines.append(f"Content-Length: {len(body)}")
            payload = body
        else:
            payload = b""
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def _parse_line(scenario: str, number: int, text: str) -> Request:
    first, *parts = (p.strip() for p in text.split("|"))
    method, target = first.split()
    headers: list[tuple[str, str]] = []
    options: dict[str, str] = {}
    for part in parts:
        if ":" in part:
            name, _, value = part.partition(":")
            headers.append((name.strip(), value.strip()))
        else:
            key, _, value = part.partition("=")
            options[key] = value
    if "no-host" not in options and not any(n.lower() == "host" for n, _ in headers):
        headers.insert(0, ("Host", HOST))
    headers.append(("Connection", "close"))
    body = int(options["body"]) if "body" in options else None
    return Request(
        scenario,
        number,
        method,
        target,
        tuple(headers),
        body=body,
        chunked="chunked" in options,
        version=options.get("version", "1.1"),
    )


def load_requests(path: Path) -> list[Request]:
    scenario = path.stem
    requests = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        text = raw.strip()
        if text and not text.startswith("#"):
            requests.append(_parse_line(scenario, number, text))
    return requests


SCENARIOS = sorted(p.stem for p in CORPUS.glob("*.conf"))
REQUESTS = [r for s in SCENARIOS for r in load_requests(CORPUS / f"{s}.requests")]


# ------------------------------------------------------------------ processes


@dataclass(slots=True)
class Backends:
    echoes: list[EchoBackend]
    scripted: ScriptedBackend

    def names(self) -> dict[str, str]:
        """echo uuid -> its placeholder name (echo1, ...)."""
        return {e.uuid: f"echo{i}" for i, e in enumerate(self.echoes, start=1)}

    def render(self, template: str, port: int, nginx_only: str) -> str:
        values = {f"echo{i}": e.address for i, e in enumerate(self.echoes, start=1)}
        values |= {"port": str(port), "headers": self.scripted.address}
        # The document root of static-file scenarios, shared by both proxies.
        values["www"] = str(CORPUS / "www")
        values["nginx_only"] = nginx_only
        return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m[1]], template)


@dataclass(slots=True)
class Pair:
    """nginx and Ferryman running one scenario."""

    scenario: str
    nginx: NginxProcess
    ferryman: Proc
    ferryman_port: int

    def stop(self) -> None:
        self.ferryman.stop(timeout=10)
        self.nginx.stop()


@dataclass(slots=True)
class PairRunner:
    """Runs one scenario's pair at a time (the tests come grouped by scenario)."""

    backends: Backends
    workdir: Path
    current: Pair | None = None
    failed: dict[str, str] = field(default_factory=dict)

    def get(self, scenario: str) -> Pair:
        if scenario in self.failed:
            pytest.fail(self.failed[scenario], pytrace=False)
        if self.current is not None and self.current.scenario == scenario:
            return self.current
        self.stop()
        try:
            self.current = self._start(scenario)
        except Exception as exc:
            self.failed[scenario] = f"scenario {scenario!r} did not start: {exc}"
            raise
        return self.current

    def _start(self, scenario: str) -> Pair:
        assert NGINX is not None
        template = (CORPUS / f"{scenario}.conf").read_text()
        base = self.workdir / scenario
        nginx_port, ferryman_port = free_port(), free_port()
        nginx_conf = self.backends.render(template, nginx_port, nginx_temp_paths(base / "nginx"))
        nginx = start_nginx(NGINX, base / "nginx", nginx_conf, nginx_port)
        try:
            conf = base / "ferryman" / "nginx.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(self.backends.render(template, ferryman_port, ""))
            argv = [sys.executable, "-m", "ferryman", "run", "-c", str(conf)]
            proc = start_process(argv, conf.parent / "ferryman.log", cwd=REPO_ROOT)
            try:
                wait_for_port("127.0.0.1", ferryman_port, proc, timeout=15)
            except BaseException:
                proc.stop()
                raise
        except BaseException:
            nginx.stop()
            raise
        return Pair(scenario, nginx, proc, ferryman_port)

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    logs = tmp_path_factory.mktemp("differential-backends")
    echoes = start_echoes(logs, "127.0.0.1", [0] * ECHO_COUNT)
    scripted = ScriptedBackend(SCRIPTED_REPLY, timeout=CLIENT_TIMEOUT)
    try:
        yield Backends(echoes, scripted)
    finally:
        scripted.close()
        for echo in echoes:
            echo.stop()


@pytest.fixture(scope="module")
def pairs(backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PairRunner]:
    # Static scenarios name validators (ETag, Last-Modified) in their requests: the
    # document root's files get a fixed modification time (a checkout sets its own).
    # Directories too: autoindex listings show their times.
    for item in (CORPUS / "www").rglob("*"):
        if item.is_file() or item.is_dir():
            os.utime(item, (WWW_MTIME, WWW_MTIME))
    runner = PairRunner(backends, tmp_path_factory.mktemp("differential"))
    try:
        yield runner
    finally:
        runner.stop()


# ------------------------------------------------------------------ observing one proxy


@dataclass(slots=True)
class Observed:
    """What one proxy did with one request, normalized for comparison."""

    status: int | str  # a code, or "closed" / "reset" when no answer came
    headers: list[tuple[str, str]]
    body: bytes
    echo: dict[str, Any] | None = None

    @property
    def is_default_page(self) -> bool:
        return bool(_NGINX_DEFAULT_PAGE.search(self.body))


def observe(port: int, req: Request, backend_names: dict[str, str]) -> Observed:
    try:
        with RawClient(port, timeout=CLIENT_TIMEOUT) as client:
            client.send(req.encode())
            resp = client.read_response(head_request=req.method == "HEAD")
    except ConnectionResetError:
        return Observed("reset", [], b"")
    if resp is None:
        return Observed("closed", [], b"")
    normalized = (
        _normalize_response(n.decode("latin-1").lower(), v.decode("latin-1"), port)
        for n, v in resp.headers
    )
    headers = [h for h in normalized if h is not None]
    return Observed(resp.status, headers, resp.body, _echo_of(resp.body, port, backend_names))


def _normalize_port(value: str, port: int) -> str:
    return re.sub(rf"(?<!\d){port}(?!\d)", "<port>", value)


def _normalize_response(name: str, value: str, port: int) -> tuple[str, str] | None:
    if name in OWN_VALUE_DROPPED and value != SCRIPTED_SERVER:
        return None
    if name in PRESENCE_ONLY and value != SCRIPTED_DATE:
        return name, "<present>"
    return name, _normalize_port(value, port)


def _echo_of(body: bytes, port: int, names: dict[str, str]) -> dict[str, Any] | None:
    """The echo backend's JSON, normalized; None if the body is something else."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or "uuid" not in data:
        return None
    data["headers"] = [(n.lower(), _normalize_port(v, port)) for n, v in data["headers"]]
    data["backend"] = names.get(data.pop("uuid"), "unknown backend")
    return data


# ------------------------------------------------------------------ comparing


def differences(req: Request, ngx: Observed, fm: Observed) -> list[str]:
    if ngx.status != fm.status:
        return [f"status: nginx {ngx.status}, ferryman {fm.status}"]
    skip = _SCRIPTED_HOP_BY_HOP | ALWAYS_HOP_BY_HOP
    diffs = _body_diffs(req, ngx, fm)
    diffs += _header_diffs(
        "response header", _comparable(ngx.headers, skip, ngx), _comparable(fm.headers, skip, ngx)
    )
    return diffs


def _connection_options(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The field names a Connection header lists (RFC 9110 7.6.1)."""
    values = (v for n, v in headers if n.lower() == "connection")
    options = (o.strip().lower() for v in values for o in v.split(","))
    # Upgrade is not among them: nginx drops it unless the config sets it, so it is compared.
    return frozenset(o for o in options if o and o not in ("close", "keep-alive", "upgrade"))


_SCRIPTED_HOP_BY_HOP = _connection_options(
    tuple(p.strip() for p in line.decode().split(":", 1))  # type: ignore[misc]
    for line in SCRIPTED_REPLY.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
)


def _comparable(
    headers: list[tuple[str, str]], skip: frozenset[str], page: Observed | None = None
) -> list[tuple[str, str]]:
    """Sorted by name (stable: same-name fields keep their order), minus `skip`, list
    fields combined, with the values that follow from an uncompared body blanked."""
    out = [
        (name, "<any>" if _value_is_derived(name, page) else value)
        for name, value in _combine_lists(headers)
        if name not in skip
    ]
    return sorted(out, key=lambda h: h[0])


# RFC 9110 5.3: a recipient MAY combine field lines of a list-based field into one,
# joined with ", ", without changing the message's meaning. nginx passes a client's
# several X-Forwarded-For lines on as they came; Ferryman joins them into one line.
COMBINABLE = frozenset({"x-forwarded-for"})


def _combine_lists(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    first: dict[str, int] = {}
    for name, value in headers:
        if name in COMBINABLE and name in first:
            at = first[name]
            out[at] = (name, f"{out[at][1]}, {value}")
            continue
        first.setdefault(name, len(out))
        out.append((name, value))
    return out


def _value_is_derived(name: str, page: Observed | None) -> bool:
    """Content-Length follows the body: when the body is not compared byte for byte (a
    default page, the echo JSON compared field by field) neither is its length. A
    default error page's media type is the page's own (nginx: text/html)."""
    if page is None:
        return False
    if name == "content-length":
        return page.is_default_page or page.echo is not None
    return name == "content-type" and page.is_default_page


def _header_diffs(what: str, ngx: list[tuple[str, str]], fm: list[tuple[str, str]]) -> list[str]:
    if ngx == fm:
        return []
    lines = [f"{what} only from nginx:    {n}: {v}" for n, v in _multiset_minus(ngx, fm)]
    lines += [f"{what} only from ferryman: {n}: {v}" for n, v in _multiset_minus(fm, ngx)]
    return lines or [f"{what}s in another order: nginx {ngx}, ferryman {fm}"]


def _multiset_minus(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> list[tuple[str, str]]:
    rest = list(b)
    out = []
    for item in a:
        if item in rest:
            rest.remove(item)
        else:
            out.append(item)
    return out


def _body_diffs(req: Request, ngx: Observed, fm: Observed) -> list[str]:
    if ngx.is_default_page:
        return []  # status and header names only: the page text is each proxy's own
    if ngx.echo is not None and fm.echo is not None:
        return _echo_diffs(req, ngx.echo, fm.echo)
    if req.scenario in ANY_BACKEND and _is_uuid(ngx.body) and _is_uuid(fm.body):
        return []  # GET / answers with whichever backend the balancer picked
    if ngx.body != fm.body:
        return [f"body: nginx {ngx.body[:300]!r}, ferryman {fm.body[:300]!r}"]
    return []


def _is_uuid(body: bytes) -> bool:
    return _UUID.fullmatch(body) is not None


_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _echo_diffs(req: Request, ngx: dict[str, Any], fm: dict[str, Any]) -> list[str]:
    fields = ["method", "target", "version", "body_length", "body_sha256"]
    if req.scenario in ANY_BACKEND:
        assert fm["backend"] != "unknown backend", fm
    else:
        fields.append("backend")
    diffs = [
        f"upstream {name}: nginx {ngx[name]!r}, ferryman {fm[name]!r}"
        for name in fields
        if ngx[name] != fm[name]
    ]
    skip = _connection_options(req.headers) | ALWAYS_HOP_BY_HOP
    return diffs + _header_diffs(
        "upstream header", _comparable(ngx["headers"], skip), _comparable(fm["headers"], skip)
    )


def _describe(o: Observed) -> str:
    head = "\n".join(f"    {n}: {v}" for n, v in o.headers)
    body = json.dumps(o.echo, indent=None) if o.echo is not None else repr(o.body[:400])
    return f"  status {o.status}\n{head}\n  body {body}"


# ------------------------------------------------------------------ the tests


@pytest.mark.parametrize("req", REQUESTS, ids=[r.id for r in REQUESTS])
def test_ferryman_answers_like_nginx(req: Request, pairs: PairRunner) -> None:
    pair = pairs.get(req.scenario)
    names = pairs.backends.names()
    ngx = observe(pair.nginx.port, req, names)
    fm = observe(pair.ferryman_port, req, names)
    diffs = differences(req, ngx, fm)
    accepted = ACCEPTED.get((req.scenario, req.id))
    if diffs and accepted is None:
        pytest.fail(
            f"{req.id}: Ferryman differs from nginx\n"
            + "\n".join(f"  - {d}" for d in diffs)
            + f"\nnginx:\n{_describe(ngx)}\nferryman:\n{_describe(fm)}",
            pytrace=False,
        )
    if not diffs and accepted is not None:
        pytest.fail(f"{req.id}: listed in ACCEPTED ({accepted}) but now the same: unlist it")


def test_corpus_is_complete() -> None:
    """Every template has a request list and every request list a template."""
    confs = {p.stem for p in CORPUS.glob("*.conf")}
    lists = {p.stem for p in CORPUS.glob("*.requests")}
    assert confs == lists
    assert all(load_requests(CORPUS / f"{s}.requests") for s in confs)
