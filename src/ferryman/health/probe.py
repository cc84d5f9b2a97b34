"""One active health probe of one peer: connect (tcp) or send a GET and judge the
answer (http), all within `spec.timeout`.

Owns the probe's bytes on the wire and the verdict `(ok, reason)`. It does not know
about schedules, thresholds (`health/thresholds.py`) or peer state; network failures
are verdicts, never exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from ferryman.config.schema import HealthCheckSpec

__all__ = ["MAX_BODY", "MAX_HEAD", "probe"]

# Bounds on what a probe reads: a health endpoint answers small, and a peer that
# streams forever must not hold a probe's memory (the schema documents 64 KiB for body).
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024

# RFC 9112 section 4: status-line = HTTP-version SP status-code SP [ reason-phrase ].
# The SP before an empty reason is often omitted in the wild, so it is optional here.
# [0-9] keeps the code to ASCII digits, so int() on the group is safe.
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,18}")

Verdict = tuple[bool, str]


async def probe(host: str, port: int, spec: HealthCheckSpec) -> Verdict:
    """Probe `host:port` once as `spec` says; return (ok, reason)."""
    try:
        async with asyncio.timeout(spec.timeout):
            if spec.kind == "tcp":
                return await _probe_tcp(host, port)
            return await _probe_http(host, port, spec)
    except TimeoutError:
        return False, "timeout"
    except ConnectionRefusedError:
        return False, "connect refused"
    except ConnectionResetError:
        return False, "connection reset"
    except OSError as e:
        return False, f"network error: {e.strerror or e}"


async def _probe_tcp(host: str, port: int) -> Verdict:
    _, writer = await asyncio.open_connection(host, port)
    await _close(writer)
    return True, "connected"


async def _probe_http(host: str, port: int, spec: HealthCheckSpec) -> Verdict:
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
    try:
        writer.write(_request(host, port, spec.path))
        await writer.drain()
        head = await _read_head(reader)
        if head is None:
            return False, "no complete response head"
        status, content_length = _parse_head(head)
        if status is None:
            return False, "malformed status line"
        if not any(lo <= status <= hi for lo, hi in spec.statuses):
            return False, f"status {status}"
        if not spec.body:
            return True, f"status {status}"
        body = await _read_body(reader, content_length)
        return _judge_body(spec.body, body, status)
    finally:
        await _close(writer)


def _request(host: str, port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "User-Agent: ferryman-health-check\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The status line and headers, or None if the peer closed early or sent too much."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None


def _parse_head(head: bytes) -> tuple[int | None, int | None]:
    """(status, Content-Length) from a raw head; None where absent or malformed."""
    lines = head.split(b"\r\n")
    m = _STATUS_LINE.fullmatch(lines[0])
    if m is None:
        return None, None
    content_length = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.lower() == b"content-length":
            cl = _CONTENT_LENGTH.fullmatch(value.strip(b" \t"))
            content_length = int(cl.group()) if cl else None
    return int(m.group(1)), content_length


async def _read_body(reader: asyncio.StreamReader, content_length: int | None) -> bytes:
    """Up to MAX_BODY bytes: Content-Length's worth if given, else until EOF."""
    want = MAX_BODY if content_length is None else min(content_length, MAX_BODY)
    body = bytearray()
    while len(body) < want:
        chunk = await reader.read(want - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _judge_body(pattern: str, body: bytes, status: int) -> Verdict:
    try:
        matched = re.search(pattern, body.decode("latin-1")) is not None
    except re.error as e:  # config should reject it at load; never kill the prober
        return False, f"invalid body regex: {e}"
    return (True, f"status {status}") if matched else (False, "body did not match")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):  # a reset on close: the verdict is already made
        await writer.wait_closed()
