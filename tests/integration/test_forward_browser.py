"""A real browser through the forward proxy: headless Chromium loads a multi-asset page
(HTML, CSS, a PNG, a script that changes the page) from several origins, plain HTTP
and HTTPS (CONNECT), and once through the PAC file the proxy serves.

The origins are named *.ferry.test, which Chromium cannot resolve: only the proxy can
(its `hosts` override maps them to 127.0.0.2-6), so a page that renders at all came
through it. Each origin also logs every request with its Via field, and the proxy's
access log lists every asset. The screenshot (kept under the test's tmp dir, its path
printed) is checked pixel by pixel: the CSS-coloured box, the image, the box the script
adds, and the absence of the asset the proxy's destination rules deny.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ferryman.tls.devcert import issue
from support.browser import Png, read_png, screenshot, solid_png
from support.procs import ProxyProcess, free_port, start_proxy

pytestmark = pytest.mark.once

BLUE = (30, 144, 255)  # #box, coloured by the stylesheet
GREEN = (0, 200, 0)  # the PNG
MAGENTA = (255, 0, 255)  # the box app.js adds
CRIMSON = (220, 20, 60)  # the PNG on the denied origin: must never show
BOX = (200, 150)


@dataclass
class Hit:
    path: str
    host: str
    via: str | None


@dataclass
class Origin:
    """A small HTTP(S) server on one loopback address, in a thread of the test process,
    logging every request it gets."""

    name: str
    ip: str
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def url(self, path: str = "/", host: str | None = None) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host or self.name}:{self.port}{path}"

    def start(self) -> None:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with origin.lock:
                    origin.hits.append(
                        Hit(self.path, self.headers.get("Host", ""), self.headers.get("Via"))
                    )
                ctype, body = origin.files.get(self.path, ("text/plain", b"not found\n"))
                self.send_response(200 if self.path in origin.files else 404)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((self.ip, 0), Handler)
        self.server.daemon_threads = True
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def paths(self) -> list[str]:
        with self.lock:
            return [h.path for h in self.hits]

    def clear(self) -> None:
        with self.lock:
            self.hits.clear()


def page(css: str, png: str, script: str, denied: str, direct: str = "") -> bytes:
    extra = f'<img id="direct" src="{direct}" width="200" height="150">' if direct else ""
    return f"""<!doctype html>
<html><head><title>ferry</title><link rel="stylesheet" href="{css}"></head>
<body><div id="box"></div>
<img id="pic" src="{png}" width="200" height="150">
<img id="denied" src="{denied}" width="200" height="150">{extra}
<script src="{script}"></script>
</body></html>
""".encode()


STYLE = b"""html, body { margin: 0; background: #ffffff; }
#box { position: absolute; left: 20px; top: 20px; width: 200px; height: 150px;
       background: rgb(30, 144, 255); }
#pic { position: absolute; left: 260px; top: 20px; }
#denied { position: absolute; left: 20px; top: 250px; }
#direct { position: absolute; left: 260px; top: 250px; }
"""
SCRIPT = b"""var d = document.createElement("div");
d.id = "scripted";
d.style.cssText = "position:absolute;left:500px;top:20px;width:200px;height:150px;" +
    "background:rgb(255,0,255)";
document.body.appendChild(d);
document.title = "changed by app.js";
"""


@dataclass
class Stack:
    proxy: ProxyProcess
    access_log: Path
    www: Origin
    cdn: Origin
    denied: Origin
    secure: Origin
    direct: Origin

    def origins(self) -> list[Origin]:
        return [self.www, self.cdn, self.denied, self.secure, self.direct]

    def log(self, *wanted: str, timeout: float = 5.0) -> str:
        """The proxy's access log once it has every `wanted` text (it is written in
        batches, every sweeper tick), or as it is at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.access_log.read_text(errors="replace") if self.access_log.exists() else ""
            if all(w in text for w in wanted) or time.monotonic() > deadline:
                return text
            time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("forward-browser")
    cert = issue(base / "ca", ("secure.ferry.test",))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert.cert, cert.key)
    www = Origin("www.ferry.test", "127.0.0.2")
    cdn = Origin("cdn.ferry.test", "127.0.0.3")
    denied = Origin("denied.ferry.test", "127.0.0.4")
    secure = Origin("secure.ferry.test", "127.0.0.5", tls=tls)
    direct = Origin("direct.ferry.test", "127.0.0.6")
    origins = [www, cdn, denied, secure, direct]
    for origin in origins:
        origin.start()
    try:
        cdn.files["/pic.png"] = ("image/png", solid_png(*BOX, GREEN))
        cdn.files["/app.js"] = ("text/javascript", SCRIPT)
        www.files["/style.css"] = ("text/css", STYLE)
        denied.files["/denied.png"] = ("image/png", solid_png(*BOX, CRIMSON))
        direct.files["/direct.png"] = ("image/png", solid_png(*BOX, GREEN))
        www.files["/"] = (
            "text/html",
            page(
                www.url("/style.css"),
                cdn.url("/pic.png"),
                cdn.url("/app.js"),
                denied.url("/denied.png"),
            ),
        )
        www.files["/pac.html"] = (
            "text/html",
            page(
                www.url("/style.css"),
                cdn.url("/pic.png"),
                cdn.url("/app.js"),
                denied.url("/denied.png"),
                direct=direct.url("/direct.png"),
            ),
        )
        for path, ctype, body in (
            ("/style.css", "text/css", STYLE),
            ("/pic.png", "image/png", solid_png(*BOX, GREEN)),
            ("/app.js", "text/javascript", SCRIPT),
        ):
            secure.files[path] = (ctype, body)
        secure.files["/"] = (
            "text/html",
            page("/style.css", "/pic.png", "/app.js", denied.url("/denied.png")),
        )
        port = free_port()
        access_log = base / "access.log"
        hosts = ", ".join(f"{o.name}: {o.ip}" for o in origins)
        config = f"""workers: 1
hosts: {{{hosts}}}
access_log: {{path: "{access_log}"}}
servers:
  - listen: "127.0.0.1:{port}"
    forward:
      allow_private: true
      connect_ports: [{secure.port}]
      destinations:
        - deny: denied.ferry.test
        # Chromium's own background requests: refused by name, never looked up.
        - deny: .google.com
        - deny: .googleapis.com
        - deny: .duckduckgo.com
      pac:
        path: /proxy.pac
        direct: [direct.ferry.test, denied.ferry.test]
"""
        proxy = start_proxy(base / "proxy", config, port)
        try:
            yield Stack(proxy, access_log, www, cdn, denied, secure, direct)
        finally:
            proxy.stop()
    finally:
        for origin in origins:
            origin.stop()


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    for origin in stack.origins():
        origin.clear()
    return stack


def shoot(stack: Stack, url: str, out: Path, args: list[str]) -> Png:
    run = screenshot(url, out, args=args, timeout=90)
    print(f"screenshot: {out}")
    image = read_png(out)
    assert (image.width, image.height) == (800, 600), run.output
    return image


def proxied(stack: Stack) -> list[str]:
    return [
        f"--proxy-server=http://127.0.0.1:{stack.proxy.port}",
        # Chromium never proxies loopback on its own; this removes that implicit bypass.
        "--proxy-bypass-list=<-loopback>",
    ]


def assert_rendered(image: Png, *, direct_box: bool = False) -> None:
    """The three boxes each show their colour over (nearly) their whole area, and the
    denied image nowhere."""
    area = BOX[0] * BOX[1]
    for color, box in ((BLUE, (20, 20)), (GREEN, (260, 20)), (MAGENTA, (500, 20))):
        x, y = box
        assert image.rgb(x + 100, y + 75) == color
        assert image.count(color, box=(x, y, x + BOX[0], y + BOX[1])) >= 0.98 * area
    assert image.count(CRIMSON) == 0
    if direct_box:
        assert image.count(GREEN, box=(260, 250, 460, 400)) >= 0.98 * area


def test_page_with_assets_from_two_origins_through_the_proxy(fresh: Stack, tmp_path: Path) -> None:
    # The page by address (Chromium could reach it alone: only <-loopback> sends it to
    # the proxy), its assets by names only the proxy can resolve.
    page_url = fresh.www.url("/", host="127.0.0.2")
    image = shoot(fresh, page_url, tmp_path / "forward-http.png", proxied(fresh))
    assert_rendered(image)
    # Every asset reached its origin, each through the proxy (its Via).
    assert {"/", "/style.css"} <= set(fresh.www.paths())
    assert set(fresh.cdn.paths()) == {"/pic.png", "/app.js"}
    assert f"127.0.0.2:{fresh.www.port}" in {h.host for h in fresh.www.hits}
    hits = fresh.www.hits + fresh.cdn.hits
    assert all(h.via is not None and "ferryman" in h.via.lower() for h in hits), hits
    # The denied destination never saw a request; the proxy answered it with 403.
    assert fresh.denied.hits == []
    urls = (page_url, fresh.www.url("/style.css"), fresh.cdn.url("/pic.png"))
    wanted = [f'"GET {url} HTTP/1.1" 200' for url in urls]
    wanted.append(f'"GET {fresh.denied.url("/denied.png")} HTTP/1.1" 403')
    log = fresh.log(*wanted)
    assert [w for w in wanted if w not in log] == []


def test_https_page_through_a_connect_tunnel(fresh: Stack, tmp_path: Path) -> None:
    args = [*proxied(fresh), "--ignore-certificate-errors"]
    image = shoot(fresh, fresh.secure.url("/"), tmp_path / "forward-https.png", args)
    assert_rendered(image)
    assert {"/", "/style.css", "/pic.png", "/app.js"} <= set(fresh.secure.paths())
    # Inside a tunnel the proxy sees no request to add Via to: the origin gets the
    # browser's own; the tunnel shows in the proxy's log.
    assert all(h.via is None for h in fresh.secure.hits)
    tunnel = f'"CONNECT secure.ferry.test:{fresh.secure.port} HTTP/1.1" 200'
    assert tunnel in fresh.log(tunnel)
    assert fresh.denied.hits == []


def test_browser_configured_by_the_served_pac_file(fresh: Stack, tmp_path: Path) -> None:
    # The PAC sends direct.ferry.test DIRECT (Chromium resolves it by its own rule), the
    # rest to the proxy; denied.ferry.test is on the direct list too, but the proxy denies
    # it, so the PAC sends it to the proxy (403) rather than around it.
    args = [
        f"--proxy-pac-url=http://127.0.0.1:{fresh.proxy.port}/proxy.pac",
        "--host-resolver-rules=MAP direct.ferry.test 127.0.0.6, MAP denied.ferry.test 127.0.0.4",
    ]
    image = shoot(fresh, fresh.www.url("/pac.html"), tmp_path / "forward-pac.png", args)
    assert_rendered(image, direct_box=True)
    assert fresh.direct.paths() == ["/direct.png"]
    assert fresh.direct.hits[0].via is None  # straight from the browser
    assert all(h.via is not None for h in fresh.www.hits + fresh.cdn.hits)
    assert fresh.denied.hits == []
    wanted = [
        '"GET /proxy.pac HTTP/1.1" 200',
        f'"GET {fresh.denied.url("/denied.png")} HTTP/1.1" 403',
    ]
    log = fresh.log(*wanted)
    assert [w for w in wanted if w not in log] == []


def test_pac_is_served_with_its_media_type(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.proxy.port}/proxy.pac"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-ns-proxy-autoconfig"
        body = response.read().decode("ascii")
    # Generated for the address the PAC was fetched by, from this proxy's own rules.
    assert f'var FM_PROXY = "PROXY 127.0.0.1:{stack.proxy.port}";' in body
    assert f"var FM_CONNECT_PORTS = [{stack.secure.port}];" in body
    assert '["deny", ["domain", "denied.ferry.test", true, false]]' in body
    assert "function FindProxyForURL(url, host)" in body
