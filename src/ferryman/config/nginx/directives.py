"""THE directive table: every nginx directive Ferryman understands, with the contexts it
may appear in, how many arguments it takes, whether it opens a block, whether it may
repeat in one block, and the function that translates it into the schema.

A directive missing from this table is either unknown to nginx (an error in nginx's
words) or a real nginx directive that Ferryman does not support (an error naming it,
or a warning with `--lenient`); `planned_reason` says which issue brings it.
The walker (`translate.py`) enforces everything declared here before it calls a
translate function, so those functions only judge values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ferryman.config.nginx import core, proxy, rewrite, upstream
from ferryman.config.nginx.draft import Context, Scope
from ferryman.config.nginx.syntax import Stmt

__all__ = ["DIRECTIVES", "Directive", "planned_reason"]

Translate = Callable[[Scope, Stmt], None]

MAIN = frozenset({Context.MAIN})
EVENTS = frozenset({Context.EVENTS})
HTTP = frozenset({Context.HTTP})
SERVER = frozenset({Context.SERVER})
LOCATION = frozenset({Context.LOCATION})
UPSTREAM = frozenset({Context.UPSTREAM})
HTTP_ANY = frozenset({Context.HTTP, Context.SERVER, Context.LOCATION})
HTTP_SERVER = frozenset({Context.HTTP, Context.SERVER})
SERVER_LOCATION = frozenset({Context.SERVER, Context.LOCATION})
LOGS = frozenset({Context.MAIN, Context.HTTP, Context.SERVER, Context.LOCATION})
ANYWHERE = frozenset(Context)


@dataclass(frozen=True, slots=True)
class Directive:
    contexts: frozenset[Context]
    # (fewest, most) arguments; most None means no limit.
    arity: tuple[int, int | None]
    translate: Translate
    block: bool = False
    # False for directives that accumulate (listen, proxy_set_header, ...); True makes a
    # second one in the same block `"name" directive is duplicate`, as in nginx.
    once: bool = True


def _d(
    contexts: frozenset[Context],
    arity: tuple[int, int | None],
    translate: Translate,
    *,
    block: bool = False,
    once: bool = True,
) -> Directive:
    return Directive(contexts, arity, translate, block, once)


ONE = (1, 1)
TWO = (2, 2)
NONE = (0, 0)
ONE_OR_MORE = (1, None)

# name -> its variants; a name with two (`server`, `keepalive_timeout`) means different
# directives in different contexts, as in nginx's modules.
DIRECTIVES: dict[str, tuple[Directive, ...]] = {
    # --- main and events
    "worker_processes": (_d(MAIN, ONE, core.worker_processes),),
    "pid": (_d(MAIN, ONE, core.pid),),
    "user": (_d(MAIN, (1, 2), core.user),),
    "daemon": (_d(MAIN, ONE, core.process_mode),),
    "master_process": (_d(MAIN, ONE, core.process_mode),),
    "error_log": (_d(LOGS, (1, 2), core.error_log, once=False),),
    "events": (_d(MAIN, NONE, core.events, block=True),),
    "worker_connections": (_d(EVENTS, ONE, core.worker_connections),),
    "use": (_d(EVENTS, ONE, core.no_op),),
    "multi_accept": (_d(EVENTS, ONE, core.no_op_flag),),
    "accept_mutex": (_d(EVENTS, ONE, core.no_op_flag),),
    "include": (_d(ANYWHERE, ONE, core.include, once=False),),
    # --- http and its blocks
    "http": (_d(MAIN, NONE, core.http, block=True),),
    "server": (
        _d(HTTP, NONE, core.server, block=True, once=False),
        _d(UPSTREAM, ONE_OR_MORE, upstream.peer, once=False),
    ),
    "upstream": (_d(HTTP, ONE, upstream.upstream, block=True, once=False),),
    "map": (_d(HTTP, TWO, rewrite.map_block, block=True, once=False),),
    "location": (_d(SERVER_LOCATION, (1, 2), core.location, block=True, once=False),),
    "listen": (_d(SERVER, ONE_OR_MORE, core.listen, once=False),),
    "server_name": (_d(SERVER, ONE_OR_MORE, core.server_name, once=False),),
    "log_format": (_d(HTTP, (2, None), core.log_format, once=False),),
    "access_log": (_d(HTTP_ANY, ONE_OR_MORE, core.access_log, once=False),),
    # --- client side
    "client_header_timeout": (_d(HTTP_SERVER, ONE, core.client_timeout),),
    "client_body_timeout": (_d(HTTP_ANY, ONE, core.client_timeout),),
    "send_timeout": (_d(HTTP_ANY, ONE, core.client_timeout),),
    "keepalive_timeout": (
        _d(HTTP_ANY, (1, 2), core.client_timeout),
        _d(UPSTREAM, ONE, upstream.keepalive_timeout),
    ),
    "keepalive_requests": (
        _d(HTTP_ANY, ONE, core.no_op_number),
        _d(UPSTREAM, ONE, upstream.keepalive_requests),
    ),
    "client_max_body_size": (_d(HTTP_ANY, ONE, proxy.client_max_body_size),),
    # --- upstream blocks
    # once=False: a second method is "load balancing method redefined" (upstream.py).
    "least_conn": (_d(UPSTREAM, NONE, upstream.least_conn, once=False),),
    "hash": (_d(UPSTREAM, (1, 2), upstream.hash_, once=False),),
    "ip_hash": (_d(UPSTREAM, NONE, upstream.ip_hash, once=False),),
    "random": (_d(UPSTREAM, (0, 2), upstream.random, once=False),),
    "least_time": (_d(UPSTREAM, (1, 2), upstream.least_time, once=False),),
    "keepalive": (_d(UPSTREAM, ONE, upstream.keepalive),),
    "queue": (_d(UPSTREAM, (1, 2), upstream.queue),),
    "zone": (_d(UPSTREAM, (1, 2), upstream.zone),),
    # --- proxying
    "proxy_pass": (_d(LOCATION, ONE, proxy.proxy_pass),),
    "proxy_http_version": (_d(HTTP_ANY, ONE, proxy.proxy_http_version),),
    "proxy_set_header": (_d(HTTP_ANY, TWO, proxy.proxy_set_header, once=False),),
    "proxy_hide_header": (_d(HTTP_ANY, ONE, proxy.proxy_header_list, once=False),),
    "proxy_pass_header": (_d(HTTP_ANY, ONE, proxy.proxy_header_list, once=False),),
    "proxy_connect_timeout": (_d(HTTP_ANY, ONE, proxy.proxy_timeout),),
    "proxy_read_timeout": (_d(HTTP_ANY, ONE, proxy.proxy_timeout),),
    "proxy_send_timeout": (_d(HTTP_ANY, ONE, proxy.proxy_timeout),),
    "proxy_next_upstream": (_d(HTTP_ANY, ONE_OR_MORE, proxy.proxy_next_upstream),),
    "proxy_next_upstream_tries": (_d(HTTP_ANY, ONE, proxy.proxy_next_upstream_tries),),
    "proxy_next_upstream_timeout": (_d(HTTP_ANY, ONE, proxy.proxy_next_upstream_timeout),),
    "proxy_buffering": (_d(HTTP_ANY, ONE, core.no_op_flag),),
    "proxy_request_buffering": (_d(HTTP_ANY, ONE, core.no_op_flag),),
    "proxy_redirect": (_d(HTTP_ANY, (1, 2), proxy.proxy_redirect, once=False),),
    "proxy_cache_bypass": (_d(HTTP_ANY, ONE_OR_MORE, proxy.cache_without_cache, once=False),),
    "proxy_no_cache": (_d(HTTP_ANY, ONE_OR_MORE, proxy.cache_without_cache, once=False),),
    "add_header": (_d(HTTP_ANY, (2, 3), proxy.add_header, once=False),),
    "default_type": (_d(HTTP_ANY, ONE, proxy.default_type),),
    # --- rewrite module, in order
    "set": (_d(SERVER_LOCATION, TWO, rewrite.set_, once=False),),
    "rewrite": (_d(SERVER_LOCATION, (2, 3), rewrite.rewrite, once=False),),
    "return": (_d(SERVER_LOCATION, (1, 2), rewrite.return_, once=False),),
    # --- accepted as no-ops: they change nothing a client or an upstream sees here
    "sendfile": (_d(HTTP_ANY, ONE, core.no_op_flag),),
    "tcp_nopush": (_d(HTTP_ANY, ONE, core.no_op_flag),),
    "tcp_nodelay": (_d(HTTP_ANY, ONE, core.no_op_flag),),
    "server_tokens": (_d(HTTP_ANY, ONE, core.no_op),),
    "types": (_d(HTTP_ANY, NONE, core.skip_block, block=True),),
    "charset": (_d(HTTP_ANY, ONE, core.charset),),
    "resolver": (_d(HTTP_ANY, ONE_OR_MORE, core.no_op),),
    "resolver_timeout": (_d(HTTP_ANY, ONE, core.no_op_time),),
    "server_names_hash_max_size": (_d(HTTP, ONE, core.no_op_size),),
    "server_names_hash_bucket_size": (_d(HTTP, ONE, core.no_op_size),),
    "types_hash_max_size": (_d(HTTP_ANY, ONE, core.no_op_size),),
    "types_hash_bucket_size": (_d(HTTP_ANY, ONE, core.no_op_size),),
    "variables_hash_max_size": (_d(HTTP, ONE, core.no_op_size),),
    "variables_hash_bucket_size": (_d(HTTP, ONE, core.no_op_size),),
    "map_hash_max_size": (_d(HTTP, ONE, core.no_op_size),),
    "map_hash_bucket_size": (_d(HTTP, ONE, core.no_op_size),),
    "proxy_headers_hash_max_size": (_d(HTTP_ANY, ONE, core.no_op_size),),
    "proxy_headers_hash_bucket_size": (_d(HTTP_ANY, ONE, core.no_op_size),),
}

# Real nginx directives that later issues bring, by name or name prefix.
_PLANNED: tuple[tuple[str, str], ...] = (
    ("proxy_cache", "the caching issue"),
    ("proxy_store", "the caching issue"),
    ("ssl", "the TLS issue"),
    ("proxy_ssl", "the TLS issue"),
    ("http2", "the TLS issue"),
    ("limit_req", "the rate-limit issue"),
    ("limit_conn", "the rate-limit issue"),
    ("allow", "the access-control issue"),
    ("deny", "the access-control issue"),
    ("auth_basic", "the access-control issue"),
    ("sticky", "the balancing issue"),
    ("health_check", "the balancing issue"),
)


def planned_reason(name: str) -> str:
    """Why a real nginx directive outside the table is refused."""
    for prefix, issue in _PLANNED:
        if name == prefix or name.startswith(prefix + "_"):
            return f'"{name}" directive is not supported yet (it comes with {issue})'
    if name == "if":
        return '"if" directive is not supported yet'
    return f'"{name}" directive is not supported'
