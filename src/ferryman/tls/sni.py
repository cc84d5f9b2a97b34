"""SNI name -> the certificate (context) that answers it: pure, no ssl, no I/O.

Owns the matching rules, in nginx's server_name order: an exact name first, then the
longest `*.suffix` wildcard, then the longest `prefix.*` wildcard, then the default.
It must not know what a value is (an SSLContext at run time, a string in tests).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Generic, TypeVar

__all__ = ["SniTable", "is_valid_sni_pattern"]

T = TypeVar("T")
# A DNS label as host names use it (RFC 1123 2.1; `_` is seen in the wild).
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")


def is_valid_sni_pattern(name: str) -> bool:
    """An exact host name, `*.example.com`, or `www.example.*` (ASCII, no empty label)."""
    if not name:
        return False
    core = name
    if name.startswith("*."):
        core = name[2:]
    elif name.endswith(".*"):
        core = name[:-2]
    if "*" in core:
        return False
    return all(_LABEL.fullmatch(label) for label in core.split("."))


class SniTable(Generic[T]):
    """`select(name)` -> the value whose pattern matches `name` best, else the default."""

    __slots__ = ("_exact", "_prefix", "_suffix", "default")

    def __init__(self, entries: Iterable[tuple[Iterable[str], T]], default: T) -> None:
        self.default = default
        self._exact: dict[str, T] = {}
        self._suffix: list[tuple[str, T]] = []  # ".example.com" for *.example.com
        self._prefix: list[tuple[str, T]] = []  # "www." for www.*
        for names, value in entries:
            for raw in names:
                name = raw.lower().rstrip(".")
                if name.startswith("*."):
                    self._suffix.append((name[1:], value))
                elif name.endswith(".*"):
                    self._prefix.append((name[:-1], value))
                else:
                    # The first certificate to claim a name keeps it (nginx: the first
                    # server with a name wins).
                    self._exact.setdefault(name, value)
        # Longest first: the most specific wildcard wins.
        self._suffix.sort(key=lambda e: -len(e[0]))
        self._prefix.sort(key=lambda e: -len(e[0]))

    def select(self, name: str | None) -> T:
        if not name:
            return self.default
        name = name.lower().rstrip(".")
        found = self._exact.get(name)
        if found is not None:
            return found
        for suffix, value in self._suffix:
            # `*.example.com` matches one or more labels before the suffix, not the
            # bare `example.com` (nginx, and RFC 6125 for the certificate itself).
            if name.endswith(suffix) and len(name) > len(suffix):
                return value
        for prefix, value in self._prefix:
            if name.startswith(prefix) and len(name) > len(prefix):
                return value
        return self.default

    def __repr__(self) -> str:
        return (
            f"SniTable(exact={len(self._exact)} wildcard={len(self._suffix) + len(self._prefix)})"
        )
