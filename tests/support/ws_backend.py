"""A real WebSocket (and tiny HTTPS) backend for the TLS and upgrade tests, built on the
`websockets` package, run as its own process:

    python ws_backend.py [--cert FILE --key FILE] [--client-ca FILE]

It prints `ws listening on PORT` once ready. Paths:

    WebSocket /echo     echoes every message (text or binary, any size up to 32 MiB)
    WebSocket /drop     echoes the first message, then drops the TCP connection
    GET /refuse         403: an Upgrade refused (the connection stays HTTP at the proxy)
    GET anything else   200 JSON: {"path", "headers", "tls"} of the request as received

It imports nothing from ferryman: a bug in the proxy cannot hide behind it. Tests
start it with `start_ws_backend`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

if TYPE_CHECKING:
    from support.procs import Proc


def start_ws_backend(workdir: Path, *args: str) -> tuple[Proc, int]:
    """Start this backend as a process; returns it and its port once it listens."""
    from support.procs import REPO_ROOT, start_process, wait_for_line

    argv = [sys.executable, str(REPO_ROOT / "tests/support/ws_backend.py"), *args]
    proc = start_process(argv, workdir / f"ws-{time.monotonic_ns()}.log")
    try:
        return proc, int(wait_for_line(proc, re.compile(r"ws listening on (?P<port>\d+)"))["port"])
    except BaseException:
        proc.stop()
        raise


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else "/"
    if path == "/drop":
        msg = await ws.recv()
        await ws.send(msg)
        transport = ws.transport
        transport.abort()
        return
    async for msg in ws:
        await ws.send(msg)


def process_request(tls: bool):  # type: ignore[no-untyped-def]
    def process(ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/refuse":
            headers = Headers([("Content-Length", "7"), ("Connection", "close")])
            return Response(403, "Forbidden", headers, b"refused")
        if "upgrade" not in request.headers.get("Connection", "").lower():
            body = json.dumps(
                {"path": request.path, "headers": dict(request.headers.raw_items()), "tls": tls}
            ).encode()
            # websockets closes the connection after such an answer: it says so.
            headers = Headers(
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Connection", "close"),
                ]
            )
            return Response(200, "OK", headers, body)
        return None

    return process


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--client-ca")
    args = p.parse_args(argv)
    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        if args.client_ca:
            ctx.load_verify_locations(args.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    server = await serve(
        handler,
        args.host,
        args.port,
        ssl=ctx,
        process_request=process_request(ctx is not None),
        max_size=32 * 1024 * 1024,
        compression=None,
    )
    port = next(iter(server.sockets)).getsockname()[1]
    print(f"ws listening on {port}", flush=True)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    await stop
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
