"""Parsed message heads. Plain slotted classes rather than dataclasses: one is built for
every request on the hot path, and a slotted __init__ is the cheapest constructor."""

from __future__ import annotations

import enum

from mypy_extensions import mypyc_attr

from ferryman.http.fields import host_name as _host_name

__all__ = ["Framing", "RequestHead", "ResponseHead"]


class Framing(enum.Enum):
    """How a message body is delimited (RFC 9112 section 6)."""

    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    # Response only: the body runs until the upstream closes the connection.
    UNTIL_CLOSE = "until-close"


Headers = list[tuple[bytes, bytes]]


# acyclic: heads hold only bytes, ints, enums and lists of byte pairs, so they can
# never be part of a reference cycle. Untracked by the cyclic collector, they are not
# walked by each young collection while their requests are in flight (at 1,000 clients,
# a thousand heads are).
@mypyc_attr(acyclic=True)
class RequestHead:
    __slots__ = (
        "connection_tokens",
        "content_length",
        "fields",
        "forwarded_for",
        "forwarded_other",
        "framing",
        "headers",
        "host",
        "host_name",
        "keep_alive",
        "method",
        "path",
        "query",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: Headers,
        host: bytes | None,
        keep_alive: bool,
        framing: Framing,
        content_length: int,
        connection_tokens: frozenset[bytes],
        upgrade: bytes | None,
        path: bytes,
        query: bytes,
        fields: bytes,
        forwarded_for: bytes | None,
        forwarded_other: bytes = b"",
        host_name: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        # As received, names in their original case, in order, including hop-by-hop ones.
        self.headers = headers
        self.host = host
        self.keep_alive = keep_alive
        self.framing = framing
        self.content_length = content_length
        self.connection_tokens = connection_tokens
        self.upgrade = upgrade
        self.path = path
        self.query = query
        # The end-to-end fields, pre-rendered as `name: value\r\n` lines, without
        # hop-by-hop fields and without those the proxy writes itself (Host, Expect,
        # X-Forwarded-*). Built in the parser's single pass over the headers so the hot
        # path never walks them twice.
        self.fields = fields
        # The client's X-Forwarded-For values joined, if it sent any.
        self.forwarded_for = forwarded_for
        # The client's X-Forwarded-Proto/-Host lines as received.
        self.forwarded_other = forwarded_other
        # `host` as nginx's $host and server_name matching see it (fields.host_name):
        # the parser passes the one it keeps per connection; computed otherwise.
        self.host_name = host_name if host_name is not None or host is None else _host_name(host)

    @property
    def request_line(self) -> bytes:
        return b"%s %s HTTP/%s" % (self.method, self.target, self.version)

    def header(self, lname: bytes) -> bytes | None:
        """First value of the header whose lower-case name is `lname`."""
        for n, v in self.headers:
            if n.lower() == lname:
                return v
        return None

    def __repr__(self) -> str:
        return (
            f"RequestHead({self.method!r} {self.target!r} HTTP/{self.version.decode()} "
            f"host={self.host!r} {self.framing.value} keep_alive={self.keep_alive})"
        )


@mypyc_attr(acyclic=True)  # as RequestHead
class ResponseHead:
    __slots__ = (
        "connection_tokens",
        "content_length",
        "date",
        "fields",
        "framing",
        "headers",
        "length_field",
        "status",
    )

    def __init__(
        self,
        status: int,
        headers: Headers,
        framing: Framing,
        content_length: int,
        connection_tokens: frozenset[bytes],
        fields: bytes,
        length_field: bytes | None,
        date: bytes | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.framing = framing
        self.content_length = content_length
        self.connection_tokens = connection_tokens
        # End-to-end fields pre-rendered as lines (see RequestHead.fields).
        self.fields = fields
        # The Content-Length value as received, for HEAD and 304 responses that describe
        # a body they do not carry.
        self.length_field = length_field
        # The upstream's Date, kept out of `fields`: the proxy writes its own.
        self.date = date

    def __repr__(self) -> str:
        return f"ResponseHead({self.status} {self.framing.value})"
