"""proxy.py (abhinavsingh/proxy.py) as a reverse proxy for the shared harness: every
path goes to one of PROXYPY_BACKENDS ("127.0.0.1:9001,127.0.0.1:9002,..."), picked at
random per request (proxy.py's own static routes pick with random.choice too), with the
request's path kept. Loaded by bench/proxypy/target.sh with `--plugins
bench_reverse.BenchReverseProxy`; it runs inside proxy.py's own venv, not Ferryman's.
"""

from __future__ import annotations

import os
import random
from typing import Any

from proxy.http import Url
from proxy.http.server import ReverseProxyBasePlugin

_BACKENDS = [f"http://{b}".encode() for b in os.environ.get("PROXYPY_BACKENDS", "").split(",") if b]


class BenchReverseProxy(ReverseProxyBasePlugin):  # type: ignore[misc]
    def routes(self) -> list[str]:
        return [r"/.*"]

    def handle_route(self, request: Any, pattern: Any) -> Url:
        # The chosen URL's remainder becomes the upstream request's path.
        return Url.from_bytes(random.choice(_BACKENDS) + (request.path or b"/"))
