"""Translate functions for nginx's `upstream` block: `server` lines with their
parameters, the load-balancing methods (`least_conn`, `hash`, `ip_hash`, `random`, and
nginx Plus's `least_time`), `keepalive*`, `zone`.

Owns nginx's rules between them: one method per block, and the server parameters a
method allows (nginx's NGX_HTTP_UPSTREAM_* flags). Server parameters Ferryman does not
implement yet are refused by name. Knows nothing about how peers are picked at run time.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ferryman.config.nginx import values
from ferryman.config.nginx.draft import Context, Scope, UpstreamDraft
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.schema import PeerSpec

__all__ = [
    "hash_",
    "ip_hash",
    "keepalive",
    "keepalive_requests",
    "keepalive_timeout",
    "least_conn",
    "least_time",
    "peer",
    "random",
    "upstream",
    "zone",
]

_DEFAULT_PORT = 80
# The native schema's cap (config/native.py): far above any sane ratio.
_MAX_WEIGHT = 1000
_MAX_COUNT = 1_000_000
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
# Server parameters nginx knows that Ferryman does not implement yet.
_PLANNED_PARAMS = ("service=", "route=", "drain")
# The methods whose modules leave NGX_HTTP_UPSTREAM_BACKUP out of the server parameters
# they allow (ngx_http_upstream_hash, _ip_hash, _random set `uscf->flags` so): a key
# or a random draw picks among the primaries only. weight=, max_fails=, fail_timeout=
# and down are allowed with every method.
_NO_BACKUP = frozenset({"hash", "ip_hash", "random"})
_NO_BACKUP_REASON = 'balancing method does not support parameter "backup"'
# nginx Plus `least_time header|last_byte`: time to the response head or its last byte.
_LEAST_TIME_MEASURES = ("header", "last_byte")
# nginx takes any byte in a hash key; native.py refuses control characters in one (they
# can only be a typo), and a translation must load as native YAML.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
        elif eq and key == "slow_start":
            spec = replace(spec, slow_start=values.time(stmt, value))
            if scope.the_upstream().balance in _NO_BACKUP:
                raise stmt.error(
                    'balancing method does not support parameter "slow_start" in "server" directive'
                )
        elif eq and key == "max_conns":
            spec = replace(spec, max_conns=_param_number(stmt, param, value, 0, _MAX_COUNT))
        elif param == "backup":
            spec = replace(spec, backup=True)
            _note_backup(scope.the_upstream(), stmt)
        elif param == "resolve":
            spec = replace(spec, resolve=True)
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


def _note_backup(draft: UpstreamDraft, stmt: Stmt) -> None:
    if draft.balance in _NO_BACKUP:
        raise stmt.error(_NO_BACKUP_REASON)
    if draft.backup_stmt is None:
        draft.backup_stmt = stmt


def least_conn(scope: Scope, stmt: Stmt) -> None:
    _method(scope, stmt, "least_conn")


def hash_(scope: Scope, stmt: Stmt) -> None:
    """`hash KEY [consistent]`. KEY is a template (`$request_uri`, `$cookie_NAME`, ...)
    kept as written; the runtime compiles it, and `check` reports unknown variables."""
    key, *rest = stmt.args
    if rest and rest[0] != "consistent":
        raise stmt.error(f'invalid parameter "{rest[0]}"')
    if not key:
        # nginx takes it, and sends every request to one server.
        raise values.invalid(stmt, key, "an empty key sends every request to one server")
    if _CONTROL.search(key):
        raise values.invalid(stmt, key, "control characters")
    draft = _method(scope, stmt, "hash")
    draft.hash_key, draft.consistent = key, bool(rest)


def ip_hash(scope: Scope, stmt: Stmt) -> None:
    _method(scope, stmt, "ip_hash")


def random(scope: Scope, stmt: Stmt) -> None:
    """`random [two [least_conn|least_time=header|least_time=last_byte]]`; the
    `least_time=` forms are nginx Plus's."""
    if stmt.args and stmt.args[0] != "two":
        raise stmt.error(f'invalid parameter "{stmt.args[0]}"')
    method, measure = "", "header"
    if len(stmt.args) == 2:
        method, eq, measure = stmt.args[1].partition("=")
        if (method, eq) == ("least_conn", ""):
            measure = "header"
        elif method != "least_time" or not eq or measure not in _LEAST_TIME_MEASURES:
            raise stmt.error(f'invalid parameter "{stmt.args[1]}"')
    draft = _method(scope, stmt, "random")
    draft.random_two, draft.random_method, draft.least_time = bool(stmt.args), method, measure


def least_time(scope: Scope, stmt: Stmt) -> None:
    """nginx Plus `least_time header|last_byte [inflight]`. `inflight` is accepted:
    Ferryman always counts requests in flight."""
    measure, *rest = stmt.args
    if measure not in _LEAST_TIME_MEASURES:
        raise stmt.error(f'invalid parameter "{measure}"')
    if rest and rest[0] != "inflight":
        raise stmt.error(f'invalid parameter "{rest[0]}"')
    _method(scope, stmt, "least_time").least_time = measure


def _method(scope: Scope, stmt: Stmt, balance: str) -> UpstreamDraft:
    """Set the block's balancing method. nginx warns "load balancing method redefined"
    and keeps the last; a second method is a mistake in one of the two lines, so here
    it is an error naming both."""
    draft = scope.the_upstream()
    first = draft.balance_stmt
    if first is not None:
        raise stmt.error(
            f'load balancing method redefined: "{stmt.name}" after "{first.name}" at {first.where}'
        )
    backup = draft.backup_stmt
    if balance in _NO_BACKUP and backup is not None:
        # nginx checks a server's parameters against the method set so far, so it takes
        # a backup written before the method; the method then never uses it.
        raise backup.error(
            f'{_NO_BACKUP_REASON} in "server" directive ("{stmt.name}" at {stmt.where})'
        )
    draft.balance, draft.balance_stmt = balance, stmt
    return draft


def keepalive(scope: Scope, stmt: Stmt) -> None:
    # nginx caches N idle connections per worker for the whole group; Ferryman caches N
    # per peer (UpstreamSpec.keepalive), which is never fewer.
    scope.the_upstream().keepalive = values.number(stmt, stmt.args[0], 1, _MAX_COUNT)


def keepalive_timeout(scope: Scope, stmt: Stmt) -> None:
    scope.the_upstream().keepalive_timeout = values.time(stmt, stmt.args[0])


def queue(scope: Scope, stmt: Stmt) -> None:
    """`queue N [timeout=T]` (nginx's commercial edition; default timeout 60s)."""
    draft = scope.the_upstream()
    draft.queue = values.number(stmt, stmt.args[0], 1, _MAX_COUNT)
    for param in stmt.args[1:]:
        key, eq, value = param.partition("=")
        if not (eq and key == "timeout"):
            raise stmt.error(f'invalid parameter "{param}"')
        draft.queue_timeout = values.time(stmt, value)


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
