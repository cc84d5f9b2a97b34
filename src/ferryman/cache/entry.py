"""EntryMeta: what the cache remembers about one stored response, besides its body.

Owns the metadata record and its byte encoding (used by the disk store's file header).
Knows no freshness rules beyond the arithmetic of RFC 9111 4.2 on values fixed at store
time (cache/policy.py decides them), and nothing of where entries are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["EntryMeta", "decode_meta", "encode_meta"]


@dataclass(frozen=True, slots=True)
class EntryMeta:
    """One stored response (a variant of a key). Times are wall-clock seconds."""

    key: str
    # The normalised values of the request fields named by Vary (policy.variant_key).
    variant: bytes
    status: int
    # As received from upstream, names in original case (hop-by-hop fields included;
    # the integration drops them when serving).
    headers: list[tuple[bytes, bytes]]
    request_time: float
    response_time: float
    stored_at: float
    # Freshness lifetime in seconds, fixed at store time (policy.freshness_lifetime).
    lifetime: float
    # RFC 9111 4.2.3 corrected_initial_age.
    initial_age: float
    etag: bytes | None = None
    last_modified: bytes | None = None
    # RFC 5861 windows from the response: stale-while-revalidate / stale-if-error.
    swr: float | None = None
    sie: float | None = None
    # must-revalidate, proxy-revalidate, s-maxage or no-cache: never served stale.
    must_revalidate: bool = False
    body_size: int = 0
    # The response's Vary field names, lower case, sorted.
    vary: tuple[bytes, ...] = ()

    def age(self, now: float) -> float:
        """RFC 9111 4.2.3 current_age = corrected_initial_age + resident_time."""
        return self.initial_age + max(0.0, now - self.response_time)

    def ttl(self, now: float) -> float:
        """Seconds of freshness left; negative once stale (the staleness)."""
        return self.lifetime - self.age(now)

    def is_fresh(self, now: float) -> bool:
        return self.age(now) < self.lifetime

    def header(self, name: bytes) -> bytes | None:
        """The first value of a field (name in lower case), or None."""
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None


def encode_meta(meta: EntryMeta) -> bytes:
    """Meta as compact JSON; bytes as latin-1 text (field values are octets, RFC 9110 5.5)."""
    doc: dict[str, Any] = {
        "v": 1,
        "key": meta.key,
        "variant": meta.variant.decode("latin-1"),
        "status": meta.status,
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in meta.headers],
        "request_time": meta.request_time,
        "response_time": meta.response_time,
        "stored_at": meta.stored_at,
        "lifetime": meta.lifetime,
        "initial_age": meta.initial_age,
        "etag": None if meta.etag is None else meta.etag.decode("latin-1"),
        "last_modified": (
            None if meta.last_modified is None else meta.last_modified.decode("latin-1")
        ),
        "swr": meta.swr,
        "sie": meta.sie,
        "must_revalidate": meta.must_revalidate,
        "body_size": meta.body_size,
        "vary": [f.decode("latin-1") for f in meta.vary],
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise ValueError(f"{name}: not a string")
    return value


def _opt_bytes(doc: dict[str, Any], name: str) -> bytes | None:
    value = doc[name]
    return None if value is None else _text(doc, name).encode("latin-1")


def _num(doc: dict[str, Any], name: str) -> float:
    value = doc[name]
    # bool is an int subclass; a header written by us never holds one here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: not a number")
    return float(value)


def _opt_num(doc: dict[str, Any], name: str) -> float | None:
    return None if doc[name] is None else _num(doc, name)


def _pairs(doc: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    raw = doc["headers"]
    if not isinstance(raw, list):
        raise ValueError("headers: not a list")
    out: list[tuple[bytes, bytes]] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2):
            raise ValueError("headers: bad pair")
        n, v = item
        if not (isinstance(n, str) and isinstance(v, str)):
            raise ValueError("headers: bad pair")
        out.append((n.encode("latin-1"), v.encode("latin-1")))
    return out


def decode_meta(data: bytes) -> EntryMeta:
    """The inverse of encode_meta. Raises ValueError on anything malformed (a corrupt
    file must never be served), including UnicodeError and JSON errors."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"meta: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise ValueError("meta: unknown version")
    try:
        vary = doc["vary"]
        if not (isinstance(vary, list) and all(isinstance(f, str) for f in vary)):
            raise ValueError("vary: bad list")
        status, body_size = doc["status"], doc["body_size"]
        if type(status) is not int or type(body_size) is not int or body_size < 0:
            raise ValueError("status/body_size: not an int")
        return EntryMeta(
            key=_text(doc, "key"),
            variant=_text(doc, "variant").encode("latin-1"),
            status=status,
            headers=_pairs(doc),
            request_time=_num(doc, "request_time"),
            response_time=_num(doc, "response_time"),
            stored_at=_num(doc, "stored_at"),
            lifetime=_num(doc, "lifetime"),
            initial_age=_num(doc, "initial_age"),
            etag=_opt_bytes(doc, "etag"),
            last_modified=_opt_bytes(doc, "last_modified"),
            swr=_opt_num(doc, "swr"),
            sie=_opt_num(doc, "sie"),
            must_revalidate=doc["must_revalidate"] is True,
            body_size=body_size,
            vary=tuple(f.encode("latin-1") for f in vary),
        )
    except KeyError as exc:
        raise ValueError(f"meta: missing {exc}") from None
    except UnicodeEncodeError as exc:
        raise ValueError(f"meta: {exc}") from None
