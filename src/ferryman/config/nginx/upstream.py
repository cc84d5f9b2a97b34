"""Translate functions for nginx's `upstream` block: `server` lines with their
parameters, `least_conn`, `keepalive*`, `zone`.

Load-balancing methods other than round robin and least_conn, and the server
parameters that come with them, are refused by name here or by the table (`hash`,
`ip_hash`, `random`, ... come with the balancing issue). Knows nothing about how
peers are picked at run time.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ferryman.config.nginx import values
from ferryman.config.nginx.draft import Context, Scope, UpstreamDraft
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.schema import PeerSpec

__all__ = [
    "keepalive",
    "keepalive_requests",
    "keepalive_timeout",
    "least_conn",
    "peer",
    "upstream",
    "zone",
]

_DEFAULT_PORT = 80
# The native schema's cap (config/native.py): far above any sane ratio.
_MAX_WEIGHT = 1000
_MAX_COUNT = 1_000_000
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
# Server parameters nginx knows that Ferryman does not implement yet.
_PLANNED_PARAMS = ("max_conns=", "resolve", "service=", "route=", "slow_start=", "drain")


def upstream(scope: Scope, stmt: Stmt) -> None:
    name = stmt.args[0]
    if not _NAME.fullmatch(name):
        raise stmt.error(f'invalid upstream name "{name}" (letters, digits, _ . -)')
    if any(other.name.lower() == name.lower() for other in scope.config.upstreams):
        raise stmt.error(f'duplicate upstream "{name}"')
    draft = UpstreamDraft(stmt=stmt, name=name)
    scope.config.upstreams.append(draft)
    scope.walk(stmt.block or (), scope.inner(Context.UPSTREAM, upstream=draft))
    if not any(not p.backup for p in draft.peers):
        # nginx: "no servers in upstream" (backups do not count: they need a primary).
        raise stmt.error(f'no servers are inside upstream "{name}"')


def peer(scope: Scope, stmt: Stmt) -> None:
    """`server ADDRESS [weight=N] [max_fails=N] [fail_timeout=T] [backup] [down]`."""
    address, *params = stmt.args
    host, port = values.host_port(stmt, address, what="upstream")
    spec = PeerSpec(host=host, port=_DEFAULT_PORT if port is None else port)
    for param in params:
        key, eq, value = param.partition("=")
        if eq and key == "weight":
            spec = replace(spec, weight=_param_number(stmt, param, value, 1, _MAX_WEIGHT))
        elif eq and key == "max_fails":
            spec = replace(spec, max_fails=_param_number(stmt, param, value, 0, _MAX_COUNT))
        elif eq and key == "fail_timeout":
            spec = replace(spec, fail_timeout=values.time(stmt, value))
        elif param == "backup":
            spec = replace(spec, backup=True)
        elif param == "down":
            spec = replace(spec, down=True)
        elif param.startswith(_PLANNED_PARAMS):
            raise stmt.error(f'the "{key}" parameter of "server" is not supported yet')
        else:
            raise stmt.error(f'invalid parameter "{param}"')
    scope.the_upstream().peers.append(spec)


def _param_number(stmt: Stmt, param: str, value: str, low: int, high: int) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 15:
        raise stmt.error(f'invalid parameter "{param}"')
    if not low <= int(value) <= high:
        raise stmt.error(f'invalid parameter "{param}" (want {low} to {high})')
    return int(value)


def least_conn(scope: Scope, stmt: Stmt) -> None:
    draft = scope.the_upstream()
    if draft.balance_stmt is not None:
        scope.config.warn(stmt, "load balancing method redefined")
    draft.balance, draft.balance_stmt = "least_conn", stmt


def keepalive(scope: Scope, stmt: Stmt) -> None:
    # nginx caches N idle connections per worker for the whole group; Ferryman caches N
    # per peer (UpstreamSpec.keepalive), which is never fewer.
    scope.the_upstream().keepalive = values.number(stmt, stmt.args[0], 1, _MAX_COUNT)


def keepalive_timeout(scope: Scope, stmt: Stmt) -> None:
    scope.the_upstream().keepalive_timeout = values.time(stmt, stmt.args[0])


def keepalive_requests(scope: Scope, stmt: Stmt) -> None:
    scope.the_upstream().keepalive_requests = values.number(stmt, stmt.args[0], 1, _MAX_COUNT)


def zone(scope: Scope, stmt: Stmt) -> None:
    if len(stmt.args) > 1:
        values.size(stmt, stmt.args[1])
    scope.config.warn(
        stmt,
        '"zone" is accepted, but workers do not share state yet: each worker balances and'
        " counts failures on its own",
    )
