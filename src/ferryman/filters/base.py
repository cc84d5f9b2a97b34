"""The filter interface. A filter sees the exchange only through the variables it
exposes (`remote_addr`, `head`, `var(name)` and compiled templates), answers with a
verdict, and never does I/O itself: the exchange acts on the verdict.

Phase order on a route (nginx's): limit_req, limit_conn (preaccess), then access rules
and basic auth (access). The first verdict that is not None ends the walk, except a
`Delay`, after which the walk resumes with the next filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Delay", "Deny", "RequestFilter", "Verdict"]


@dataclass(frozen=True, slots=True)
class Deny:
    """Answer locally with `status`. `reason` names what decided, for the error log
    (never for the client); `body` empty means the standard error page."""

    status: int
    reason: str
    body: bytes = b""
    # Extra response fields, e.g. (b"WWW-Authenticate", b'Basic realm="x"') or
    # (b"Retry-After", b"1").
    headers: tuple[tuple[bytes, bytes], ...] = ()
    # The filter already logged the refusal at its own level (limit_req logs as nginx
    # does, with the excess and the key): the exchange does not log it again.
    logged: bool = False


@dataclass(frozen=True, slots=True)
class Delay:
    """Hold the request `seconds` before going on (limit_req beyond `delay=`)."""

    seconds: float


Verdict = Deny | Delay | None


class RequestFilter(Protocol):
    # True when `done` must be called once the exchange ends (limit_conn's release).
    holds: bool

    def check(self, exchange: Any, now: float) -> Verdict:
        """Decide for one request; `now` is the worker's monotonic clock."""
        ...

    def done(self, exchange: Any) -> None:
        """The exchange that passed `check` ended (only for filters that hold)."""
        ...
