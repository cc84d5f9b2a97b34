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

from ferryman.config.nginx import (
    access,
    cache,
    core,
    limits,
    proxy,
    realip,
    rewrite,
    static,
    tls,
    upstream,
)
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
    "worker_shutdown_timeout": (_d(MAIN, ONE, core.worker_shutdown_timeout),),
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
        _d(HTTP_ANY, ONE, core.keepalive_requests),
        _d(UPSTREAM, ONE, upstream.keepalive_requests),
    ),
    "client_max_body_size": (_d(HTTP_ANY, ONE, proxy.client_max_body_size),),
    "large_client_header_buffers": (_d(HTTP_SERVER, TWO, core.large_client_header_buffers),),
    # --- real client address (realip.py; refused in a location there)
    "set_real_ip_from": (_d(HTTP_ANY, ONE, realip.set_real_ip_from, once=False),),
    "real_ip_header": (_d(HTTP_ANY, ONE, realip.real_ip_header),),
    "real_ip_recursive": (_d(HTTP_ANY, ONE, realip.real_ip_recursive),),
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
    "proxy_method": (_d(HTTP_ANY, ONE, proxy.proxy_method),),
    "proxy_set_body": (_d(HTTP_ANY, ONE, proxy.proxy_set_body),),
    "proxy_pass_request_headers": (_d(HTTP_ANY, ONE, proxy.proxy_pass_request_flag),),
    "proxy_pass_request_body": (_d(HTTP_ANY, ONE, proxy.proxy_pass_request_flag),),
    "proxy_ignore_headers": (_d(HTTP_ANY, ONE_OR_MORE, proxy.proxy_ignore_headers, once=False),),
    "proxy_redirect": (_d(HTTP_ANY, (1, 2), static.proxy_redirect, once=False),),
    "proxy_intercept_errors": (_d(HTTP_ANY, ONE, static.proxy_intercept_errors),),
    # --- files (static.py): root/alias, index, try_files, validators, types
    "root": (_d(HTTP_ANY, ONE, static.root),),
    "alias": (_d(LOCATION, ONE, static.alias),),
    "index": (_d(HTTP_ANY, ONE_OR_MORE, static.index, once=False),),
    "try_files": (_d(SERVER_LOCATION, (2, None), static.try_files),),
    "autoindex": (_d(HTTP_ANY, ONE, static.autoindex),),
    "autoindex_exact_size": (_d(HTTP_ANY, ONE, static.autoindex),),
    "autoindex_localtime": (_d(HTTP_ANY, ONE, static.autoindex),),
    "autoindex_format": (_d(HTTP_ANY, ONE, static.autoindex_format),),
    "expires": (_d(HTTP_ANY, (1, 2), static.expires),),
    "etag": (_d(HTTP_ANY, ONE, static.etag),),
    "error_page": (_d(HTTP_ANY, (2, None), static.error_page, once=False),),
    # Buffer sizes: Ferryman streams, so there is nothing to size; accepted.
    **{
        name: (_d(HTTP_ANY, ONE, core.no_op_size),)
        for name in (
            "client_body_buffer_size",
            "proxy_buffer_size",
            "proxy_busy_buffers_size",
            "proxy_temp_file_write_size",
            "proxy_max_temp_file_size",
        )
    },
    "client_header_buffer_size": (_d(HTTP_SERVER, ONE, core.no_op_size),),
    "proxy_buffers": (_d(HTTP_ANY, TWO, core.no_op_buffers),),
    "output_buffers": (_d(HTTP_ANY, TWO, core.no_op_buffers),),
    # --- proxy cache (cache.py)
    "proxy_cache_path": (_d(HTTP, (2, None), cache.proxy_cache_path, once=False),),
    "proxy_cache": (_d(HTTP_ANY, ONE, cache.proxy_cache),),
    "proxy_cache_key": (_d(HTTP_ANY, ONE, cache.proxy_cache_key),),
    "proxy_cache_valid": (_d(HTTP_ANY, ONE_OR_MORE, cache.proxy_cache_valid, once=False),),
    "proxy_cache_bypass": (_d(HTTP_ANY, ONE_OR_MORE, cache.proxy_cache_templates, once=False),),
    "proxy_no_cache": (_d(HTTP_ANY, ONE_OR_MORE, cache.proxy_cache_templates, once=False),),
    "proxy_cache_use_stale": (_d(HTTP_ANY, ONE_OR_MORE, cache.proxy_cache_use_stale),),
    "proxy_cache_lock": (_d(HTTP_ANY, ONE, cache.proxy_cache_flag),),
    "proxy_cache_lock_timeout": (_d(HTTP_ANY, ONE, cache.proxy_cache_lock_timeout),),
    "proxy_cache_background_update": (_d(HTTP_ANY, ONE, cache.proxy_cache_flag),),
    "proxy_cache_methods": (_d(HTTP_ANY, ONE_OR_MORE, cache.proxy_cache_methods),),
    "proxy_cache_min_uses": (_d(HTTP_ANY, ONE, cache.proxy_cache_min_uses),),
    "add_header": (_d(HTTP_ANY, (2, 3), proxy.add_header, once=False),),
    "default_type": (_d(HTTP_ANY, ONE, proxy.default_type),),
    # --- access and auth_basic modules (access.py); allow and deny share one list
    "allow": (_d(HTTP_ANY, ONE, access.access_rule, once=False),),
    "deny": (_d(HTTP_ANY, ONE, access.access_rule, once=False),),
    "auth_basic": (_d(HTTP_ANY, ONE, access.auth_basic),),
    "auth_basic_user_file": (_d(HTTP_ANY, ONE, access.auth_basic_user_file),),
    # --- limit_req and limit_conn modules (limits.py)
    "limit_req_zone": (_d(HTTP, (3, 3), limits.limit_req_zone, once=False),),
    "limit_conn_zone": (_d(HTTP, TWO, limits.limit_conn_zone, once=False),),
    "limit_req": (_d(HTTP_ANY, (1, 3), limits.limit_req, once=False),),
    "limit_conn": (_d(HTTP_ANY, TWO, limits.limit_conn, once=False),),
    "limit_req_status": (_d(HTTP_ANY, ONE, limits.limit_status),),
    "limit_conn_status": (_d(HTTP_ANY, ONE, limits.limit_status),),
    "limit_req_dry_run": (_d(HTTP_ANY, ONE, limits.limit_dry_run),),
    "limit_conn_dry_run": (_d(HTTP_ANY, ONE, limits.limit_dry_run),),
    # --- TLS (config/nginx/tls.py): termination, then TLS to upstreams
    "ssl_certificate": (_d(HTTP_SERVER, ONE, tls.ssl_certificate, once=False),),
    "ssl_certificate_key": (_d(HTTP_SERVER, ONE, tls.ssl_certificate, once=False),),
    "ssl_protocols": (_d(HTTP_SERVER, ONE_OR_MORE, tls.ssl_protocols),),
    "ssl_ciphers": (_d(HTTP_SERVER, ONE, tls.ssl_ciphers),),
    "ssl_prefer_server_ciphers": (_d(HTTP_SERVER, ONE, tls.ssl_flag),),
    "ssl_session_tickets": (_d(HTTP_SERVER, ONE, tls.ssl_flag),),
    "ssl_session_cache": (_d(HTTP_SERVER, (1, 2), tls.ssl_no_effect),),
    "ssl_session_timeout": (_d(HTTP_SERVER, ONE, tls.ssl_no_effect),),
    "ssl_client_certificate": (_d(HTTP_SERVER, ONE, tls.ssl_client_certificate),),
    "ssl_verify_client": (_d(HTTP_SERVER, ONE, tls.ssl_verify_client),),
    "ssl_verify_depth": (_d(HTTP_SERVER, ONE, tls.ssl_no_effect),),
    # HTTP/2 on TLS addresses (nginx 1.25.1+; `listen ... http2` before that).
    "http2": (_d(HTTP_SERVER, ONE, tls.ssl_flag),),
    "proxy_ssl_verify": (_d(HTTP_ANY, ONE, tls.proxy_ssl_flag),),
    "proxy_ssl_server_name": (_d(HTTP_ANY, ONE, tls.proxy_ssl_flag),),
    "proxy_ssl_name": (_d(HTTP_ANY, ONE, tls.proxy_ssl_name),),
    "proxy_ssl_trusted_certificate": (_d(HTTP_ANY, ONE, tls.proxy_ssl_file),),
    "proxy_ssl_certificate": (_d(HTTP_ANY, ONE, tls.proxy_ssl_file),),
    "proxy_ssl_certificate_key": (_d(HTTP_ANY, ONE, tls.proxy_ssl_file),),
    "proxy_ssl_protocols": (_d(HTTP_ANY, ONE_OR_MORE, tls.proxy_ssl_protocols),),
    "proxy_ssl_ciphers": (_d(HTTP_ANY, ONE, tls.ssl_ciphers),),
    "proxy_ssl_verify_depth": (_d(HTTP_ANY, ONE, tls.ssl_no_effect),),
    "proxy_ssl_session_reuse": (_d(HTTP_ANY, ONE, tls.ssl_no_effect),),
    # --- rewrite module, in order
    "set": (_d(SERVER_LOCATION, TWO, rewrite.set_, once=False),),
    "rewrite": (_d(SERVER_LOCATION, (2, 3), rewrite.rewrite, once=False),),
    "return": (_d(SERVER_LOCATION, (1, 2), rewrite.return_, once=False),),
    "if": (_d(SERVER_LOCATION, ONE_OR_MORE, static.if_, block=True, once=False),),
    "break": (_d(SERVER_LOCATION, NONE, static.break_, once=False),),
    # --- accepted as no-ops: they change nothing a client or an upstream sees here
    "sendfile": (_d(HTTP_ANY, ONE, core.no_op_flag),),
    "tcp_nopush": (_d(HTTP_ANY, ONE, core.no_op_flag),),
    "tcp_nodelay": (_d(HTTP_ANY, ONE, core.no_op_flag),),
    # Ferryman sends no Server field at all, whatever this says.
    "server_tokens": (_d(HTTP_ANY, ONE, core.no_op),),
    "types": (_d(HTTP_ANY, NONE, static.types, block=True),),
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
    ("http2", "the TLS issue"),
    ("sticky", "the balancing issue"),
    ("health_check", "the balancing issue"),
)


def planned_reason(name: str) -> str:
    """Why a real nginx directive outside the table is refused."""
    for prefix, issue in _PLANNED:
        if name == prefix or name.startswith(prefix + "_"):
            return f'"{name}" directive is not supported yet (it comes with {issue})'
    return f'"{name}" directive is not supported'
