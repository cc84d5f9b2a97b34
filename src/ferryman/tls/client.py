"""Connecting to an upstream over TLS (nginx `proxy_pass https://`): the same contract
as upstream.pool.tcp_connect, with the handshake inside the connect timeout.

Owns how TLS failures become UpstreamConnectError with a reason a log reader can act
on ("certificate verify failed: unable to get local issuer certificate"). Must not
know about pools, balancing or HTTP.
"""

from __future__ import annotations

import asyncio
import ssl

from ferryman.errors import UpstreamConnectError
from ferryman.upstream.connection import UpstreamConnection
from ferryman.upstream.peer import PeerState
from ferryman.upstream.pool import ConnectFn

__all__ = ["tls_connect"]


def tls_connect(
    loop: asyncio.AbstractEventLoop, context: ssl.SSLContext, server_name: str | None
) -> ConnectFn:
    """`server_name`: sent as SNI and checked against the certificate (when the context
    checks names); None sends no SNI."""

    async def connect(peer: PeerState, timeout: float) -> UpstreamConnection:
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(peer),  # type: ignore[arg-type,type-var]
                    peer.connect_host,
                    peer.spec.port,
                    ssl=context,
                    server_hostname=server_name,
                    ssl_handshake_timeout=timeout,
                )
        except TimeoutError:
            raise UpstreamConnectError(f"TLS connect to {peer.name} timed out") from None
        except ssl.SSLCertVerificationError as exc:
            raise UpstreamConnectError(
                f"TLS to {peer.name}: certificate verify failed: {exc.verify_message}"
            ) from None
        except ssl.SSLError as exc:
            raise UpstreamConnectError(
                f"TLS handshake with {peer.name} failed: {exc.reason or exc}"
            ) from None
        except OSError as exc:
            raise UpstreamConnectError(
                f"connect to {peer.name} failed: {exc.strerror or exc}"
            ) from None
        return conn

    return connect
