"""Typed errors that say who is at fault.

A client's malformed request, a bad configuration, and an upstream's failure are
different classes so that the proxy can map each to the right status (400, refuse to
start, 502/504) and log whose fault it was. Knows nothing about sockets or asyncio.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FerrymanError",
    "ProtocolError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamResetError",
    "UpstreamTimeoutError",
]


class FerrymanError(Exception):
    """Base of every error Ferryman raises on purpose."""


class ConfigError(FerrymanError):
    """A configuration was refused at load; `where` is a key path or `file:line`."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class ProtocolError(FerrymanError):
    """The client sent something HTTP does not allow; answer `status` and close."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class UpstreamError(FerrymanError):
    """An upstream failed us; `status` is what the client gets (if nothing was sent yet)."""

    status = 502
    kind = "error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamConnectError(UpstreamError):
    """Could not connect: refused, unreachable, or the connect timed out."""

    kind = "connect"


class UpstreamTimeoutError(UpstreamError):
    """The upstream accepted but did not answer (or read/send) in time."""

    status = 504
    kind = "timeout"


class UpstreamResetError(UpstreamError):
    """The upstream closed or reset the connection before the response was complete."""

    kind = "reset"


class UpstreamProtocolError(UpstreamError):
    """The upstream's response is not valid HTTP/1.x (nginx: `invalid_header`)."""

    kind = "invalid_header"
