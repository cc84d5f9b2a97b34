"""The filter interface. A filter sees the exchange only through the variables it
exposes (`remote_addr`, `head`, `var(name)` and compiled templates), answers with a
verdict, and never does I/O itself: the exchange acts on the verdict.

Phase order on a route (nginx's): limit_req, limit_conn (preaccess), then access rules
and basic auth (access). The first verdict that is not None ends the walk, except a
`Delay`, after which the walk resumes with the next filter, and a `Pending`, whose
future's verdict is then taken as if `check` had returned it (a zone shared through
the cluster's Redis needs a round trip: cluster/; local zones never return one).
"""

from __future__ import annotations

# At run time too: compiled (mypyc), the dataclasses' annotations are evaluated.
import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from mypy_extensions import mypyc_attr

__all__ = ["Delay", "Deny", "Pending", "RequestFilter", "SharedZones", "Verdict"]


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


@dataclass(frozen=True, slots=True)
class Pending:
    """The decision is on its way (a shared zone's round trip to Redis). The exchange
    waits for `future` and acts on its result; if the exchange ends first it cancels
    the future, and whoever resolves it gives back what the verdict would have held."""

    future: asyncio.Future[Deny | Delay | None]


Verdict = Deny | Delay | Pending | None


@mypyc_attr(allow_interpreted_subclasses=True)
class RequestFilter:
    """What every filter is. A base class rather than a Protocol: the exchange calls
    each filter of a route for every request, and through a compiled base class those
    calls are native, where a Protocol's methods are looked up by name. Filters outside
    the compiled build (basic auth) derive from it as plain Python classes."""

    # True when `done` must be called once the exchange ends (limit_conn's release).
    holds: bool = False

    def check(self, exchange: Any, now: float) -> Verdict:
        """Decide for one request; `now` is the worker's monotonic clock."""
        raise NotImplementedError

    def done(self, exchange: Any) -> None:
        """The exchange that passed `check` ended (only for filters that hold)."""


class SharedZones(Protocol):
    """The cluster's side of limit zones marked `shared` (cluster/limiter.py): the round
    trips only. The filters keep the walk and its meaning; Redis keeps the state."""

    @property
    def available(self) -> bool:
        """Redis answers: False sends every decision to the local zones at once."""
        ...

    def for_filter(self, kind: str) -> SharedZones:
        """The same zones as filter kind `kind` (limit_req, limit_conn) uses them: its
        local fallbacks are counted under that name (metrics)."""
        ...

    def pending(
        self,
        walk: Coroutine[Any, Any, Deny | Delay | None],
        fallback: Callable[[], Verdict],
        orphan: Callable[[], None] | None,
    ) -> Verdict:
        """Runs `walk` and returns a `Pending` on its verdict; if Redis fails during the
        walk, the verdict is `fallback()` (the local zones'). `orphan` gives back what a
        passing verdict holds when the exchange ended before it arrived."""
        ...

    async def limit_req(
        self, zone: str, key: bytes, rate: int, burst: int, mode: str
    ) -> tuple[bool, int]:
        """One limit_req bucket change (`mode`: check, check_take, take), atomically in
        Redis with Redis's clock: (over burst, excess), as rate_limit.lookup/take."""
        ...

    async def lease(self, zone: str, key: bytes, limit: int) -> str | None:
        """A limit_conn slot for `key` if fewer than `limit` are held cluster-wide: its
        lease id (renewed until `unlease`), or None."""
        ...

    def unlease(self, zone: str, key: bytes, lease: str) -> None:
        """Give a slot back (in the background; a lost release expires by itself)."""
        ...
