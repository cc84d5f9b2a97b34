"""The request path as nginx sees it (`$uri`), and the escaping of a path or arguments
that the proxy rebuilt before they go upstream.

Owns ngx_http_parse_complex_uri's rules with `merge_slashes on`: %XX is decoded (a bad
escape or %00 is the client's fault: 400); a decoded `/` or `.` counts as a real one, so
`%2F` merges with its neighbours and `%2e%2e` climbs; runs of `/` collapse; `.` segments
vanish and `..` removes the segment before it, and climbing above the root is a 400.
Owns ngx_escape_uri's NGX_ESCAPE_URI and NGX_ESCAPE_ARGS tables.

Pure: bytes in, bytes out. Knows nothing about locations, upstreams or the query: the
caller splits the request target at the first `?` (and has refused a `#`) first.
"""

from __future__ import annotations

from ferryman.errors import ProtocolError

__all__ = ["encode_args", "encode_path", "normalize_path"]


def _unhex_table() -> dict[bytes, int]:
    digits = b"0123456789abcdefABCDEF"
    return {bytes((hi, lo)): int(bytes((hi, lo)), 16) for hi in digits for lo in digits}


# Two hex digits -> byte value. A table, not int(): int() accepts `+f`, ` f` and `_`.
_UNHEX = _unhex_table()
_SINGLE = tuple(bytes((b,)) for b in range(256))
_PERCENT = ord("%")
_DOT = ord(".")


def normalize_path(raw: bytes) -> bytes:
    """`$uri` from the request path; raises ProtocolError(400) where nginx answers 400."""
    if not raw:
        # nginx's empty_path_in_uri: `GET http://host HTTP/1.1` asks for `/`.
        return b"/"
    if raw[:1] != b"/":
        raise ProtocolError("request path does not start with /")
    # The common path needs none of the work below (nginx skips its complex parse the
    # same way: no `%`, no `//`, no `/.`). An int membership test and find() are several
    # times cheaper than `bytes in bytes` on CPython 3.11.
    quoted = _PERCENT in raw
    if not quoted and raw.find(b"//") < 0 and (_DOT not in raw or raw.find(b"/.") < 0):
        return raw
    decoded = _percent_decode(raw) if quoted else raw
    return _resolve_segments(decoded)


def _percent_decode(raw: bytes) -> bytes:
    # Decoding first and then resolving segments gives what nginx's interleaved state
    # machine gives: decoded `%`, `#` and `?` are plain bytes to both, and only `/` and
    # `.` carry structure.
    parts = raw.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        value = _UNHEX.get(part[:2])
        if value is None:
            raise ProtocolError("invalid percent-encoding in path")
        if value == 0:
            raise ProtocolError("NUL byte (%00) in path")
        out.append(_SINGLE[value])
        out.append(part[2:])
    return b"".join(out)


def _resolve_segments(path: bytes) -> bytes:
    segments = path.split(b"/")
    kept: list[bytes] = []
    for segment in segments[1:]:
        if segment == b"" or segment == b".":
            continue  # merged slash, or `.`
        if segment == b"..":
            if not kept:
                raise ProtocolError("path climbs above the root")
            kept.pop()
        else:
            kept.append(segment)
    if not kept:
        return b"/"
    # `/a/`, `/a/b/.` and `/a/b/..` all end in a slash in nginx's result.
    trailing = segments[-1] in (b"", b".", b"..")
    return b"/" + b"/".join(kept) + (b"/" if trailing else b"")


# ngx_escape_uri: RFC 3986 allows unreserved, gen-delims, sub-delims and `%` unescaped;
# NGX_ESCAPE_URI escapes the rest plus `#`, `%` and `?` (which would end or re-escape the
# path): controls, space, `"` `<` `>` `\` `^` `` ` `` `{` `|` `}`, DEL and every byte >= 0x80.
_URI_ESCAPED = bytes(range(0x21)) + b'"#%<>?\\^`{|}' + bytes(range(0x7F, 0x100))
# NGX_ESCAPE_ARGS also escapes `&`, `+` and `;`, which separate or change arguments.
_ARGS_ESCAPED = _URI_ESCAPED + b"&+;"


def _escape_table(escaped: bytes) -> tuple[bytes, ...]:
    # Upper-case hex, as nginx writes it.
    return tuple(b"%%%02X" % b if b in escaped else bytes((b,)) for b in range(256))


def _safe_bytes(escaped: bytes) -> bytes:
    return bytes(b for b in range(256) if b not in escaped)


_URI_TABLE = _escape_table(_URI_ESCAPED)
_URI_SAFE = _safe_bytes(_URI_ESCAPED)
_ARGS_TABLE = _escape_table(_ARGS_ESCAPED)
_ARGS_SAFE = _safe_bytes(_ARGS_ESCAPED)


def encode_path(path: bytes) -> bytes:
    """Escape a decoded path for the request line upstream (NGX_ESCAPE_URI)."""
    # translate() with `delete` runs in C: what survives is what needs escaping.
    if not path.translate(None, _URI_SAFE):
        return path
    return b"".join([_URI_TABLE[b] for b in path])


def encode_args(value: bytes) -> bytes:
    """Escape a value spliced into the query (NGX_ESCAPE_ARGS), as nginx does to rewrite
    captures placed after the `?` when the client's path had `%` or `+`."""
    if not value.translate(None, _ARGS_SAFE):
        return value
    return b"".join([_ARGS_TABLE[b] for b in value])
