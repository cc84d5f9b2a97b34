"""Request filters: one feature per module behind one `RequestFilter` base class
(access rules, basic auth, rate and connection limits). A route holds its filters in
nginx's phase order; each may let the request continue, answer it locally, or delay
it."""

from __future__ import annotations

from ferryman.filters.base import Delay, Deny, RequestFilter, Verdict

__all__ = ["Delay", "Deny", "RequestFilter", "Verdict"]
