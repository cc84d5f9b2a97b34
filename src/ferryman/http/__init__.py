"""HTTP/1.x protocol logic with no I/O: framing (httptools/llhttp wrapped), strict
validation, hop-by-hop rules and serialisation. Nothing here imports asyncio or
touches a socket; it is driven by byte strings and tested with byte scripts."""

from __future__ import annotations

from ferryman.http.messages import Framing, RequestHead, ResponseHead
from ferryman.http.request_parser import RequestParser, RequestSink
from ferryman.http.response_parser import ResponseParser, ResponseSink

__all__ = [
    "Framing",
    "RequestHead",
    "RequestParser",
    "RequestSink",
    "ResponseHead",
    "ResponseParser",
    "ResponseSink",
]
