"""The one configuration model. Every front end (native YAML, nginx.conf, the CLI's quick
flags) produces these frozen objects; the runtime never sees a dict.

Defaults follow nginx where nginx has one, so that a translated nginx.conf and a native
file with the same intent behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_CIPHERS",
    "FORWARD_ANONYMITY",
    "IF_OPERATORS",
    "IGNORABLE_HEADERS",
    "MATCH_KINDS",
    "TLS_PROTOCOLS",
    "AccessLogSpec",
    "AccessRule",
    "AdminSpec",
    "AuthBasicSpec",
    "BreakSpec",
    "CacheSpec",
    "CacheZoneSpec",
    "ClientLimits",
    "ClientTimeouts",
    "ClusterSpec",
    "Config",
    "DestinationRule",
    "ErrorPageSpec",
    "ForwardSpec",
    "HeaderAdd",
    "HealthCheckSpec",
    "IfSpec",
    "LimitConnSpec",
    "LimitReqSpec",
    "LimitZoneSpec",
    "ListenSpec",
    "MapSpec",
    "PacSpec",
    "PeerSpec",
    "ProxyAuthSpec",
    "RealIpSpec",
    "ReturnSpec",
    "RewriteSpec",
    "RouteSpec",
    "ScriptStep",
    "ServerSpec",
    "SetSpec",
    "StaticSpec",
    "TlsCertificate",
    "TlsSpec",
    "TraceSpec",
    "UpstreamSpec",
    "UpstreamTlsSpec",
]

# How a route's `path` matches the request path, in nginx's terms:
#   prefix          location /path        (longest prefix wins)
#   exact           location = /path      (checked first, ends the search)
#   prefix_priority location ^~ /path     (a longest prefix that skips the regexes)
#   regex           location ~ pattern    (in order of appearance, case-sensitive)
#   regex_icase     location ~* pattern
#   named           location @name        (only reachable by internal redirects)
MATCH_KINDS = ("prefix", "exact", "prefix_priority", "regex", "regex_icase", "named")


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """One `server` line of an upstream. `host` may be a name; it is resolved at start."""

    host: str
    port: int
    weight: int = 1
    # nginx defaults: max_fails=1 fail_timeout=10s (ngx_http_upstream_server).
    max_fails: int = 1
    fail_timeout: float = 10.0
    backup: bool = False
    down: bool = False
    # At most this many requests in flight to this peer (per worker, as nginx without a
    # shared zone); 0: no limit.
    max_conns: int = 0
    # After the peer comes back (from failures or failed health checks), its weight
    # ramps from 1 to `weight` over this many seconds (nginx's `slow_start`); 0: at once.
    slow_start: float = 0.0
    # Re-resolve `host` every Config.resolve_interval, one peer per address it has
    # (nginx's `resolve`); peers come and go without touching requests in flight.
    resolve: bool = False

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    """Active health checks of every peer of an upstream (nginx's commercial
    `health_check`): a probe each `interval`; `fails` failed probes in a row take a peer
    out, `passes` good ones in a row bring it back."""

    kind: str = "http"  # http | tcp
    path: str = "/"
    interval: float = 5.0
    timeout: float = 1.0
    # Statuses that pass, as inclusive ranges ("200-399" -> ((200, 399),)).
    statuses: tuple[tuple[int, int], ...] = ((200, 399),)
    # A Python regex the body must contain (searched in the first 64 KiB); "" = any.
    body: str = ""
    passes: int = 1
    fails: int = 1


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    name: str
    servers: tuple[PeerSpec, ...]
    # round_robin | least_conn | hash | ip_hash | random | least_time | peak_ewma
    balance: str = "round_robin"
    # hash: the key template (nginx `hash $request_uri`) and ketama consistency.
    hash_key: str = ""
    consistent: bool = False
    # random: nginx `random two [least_conn|least_time]` ("" = one random pick).
    random_two: bool = False
    random_method: str = ""
    # least_time (and random ... least_time): measure to the response head ("header")
    # or to its last byte ("last_byte").
    least_time: str = "header"
    # Idle kept-alive connections cached per peer in each worker. nginx's `keepalive N`
    # is per worker for the whole group; per peer is easier to reason about and never
    # starves one peer's connections because another is busy.
    keepalive: int = 32
    keepalive_timeout: float = 60.0
    keepalive_requests: int = 1000
    # Idle connections beyond `keepalive` close after this long unused instead of at
    # once (nginx closes them at once; HAProxy purges surplus idle connections every
    # pool-purge-delay). Under bursts of more concurrent requests than `keepalive`, a
    # burst's connections serve the next burst instead of being closed and reconnected:
    # at 1,000 client connections that churn was most of the proxy's system calls.
    # 0: nginx's behaviour. The surplus is bounded by the peak concurrency it served.
    keepalive_surplus_timeout: float = 1.0
    # When every peer is at max_conns: hold up to `queue` requests (per worker) for at
    # most `queue_timeout` seconds, then 502 (nginx's `queue N timeout=T`). 0: no queue.
    queue: int = 0
    queue_timeout: float = 60.0
    health_check: HealthCheckSpec | None = None


@dataclass(frozen=True, slots=True)
class ReturnSpec:
    """nginx `return`: answer locally. For 301/302/303/307/308 `text` is the Location
    (a template), otherwise the body (a template); status 444 closes without answering."""

    status: int
    text: str = ""


@dataclass(frozen=True, slots=True)
class RewriteSpec:
    """nginx `rewrite REGEX REPLACEMENT [last|break|redirect|permanent]`, applied to the
    normalised path; `$1`..`$9` in the replacement are the regex's groups."""

    pattern: str
    replacement: str
    flag: str = ""


@dataclass(frozen=True, slots=True)
class SetSpec:
    """nginx `set $variable value`: `variable` without the `$`; `value` is a template."""

    variable: str
    value: str


@dataclass(frozen=True, slots=True)
class BreakSpec:
    """nginx `break`: the rest of this block's rewrite-module steps are skipped."""


# nginx `if` operators: "" (the operand is true: not empty and not "0"), string and
# regex comparisons, and file tests (`!` negates).
IF_OPERATORS = (
    "",
    "=",
    "!=",
    "~",
    "~*",
    "!~",
    "!~*",
    "-f",
    "!-f",
    "-d",
    "!-d",
    "-e",
    "!-e",
    "-x",
    "!-x",
)


@dataclass(frozen=True, slots=True)
class IfSpec:
    """nginx `if (CONDITION) { ... }` in its common forms: `operand` is a template (a
    variable, or a file name for the file tests), `operator` one of IF_OPERATORS and
    `value` the string or regex compared with (empty for the others). `steps` run when
    the condition holds; `break` among them, or a rewrite with `break`, ends the script."""

    operand: str
    operator: str = ""
    value: str = ""
    steps: tuple[ScriptStep, ...] = ()


# The rewrite-module steps of a server or route, run in the order they are written, as
# nginx runs them.
ScriptStep = SetSpec | RewriteSpec | ReturnSpec | BreakSpec | IfSpec


@dataclass(frozen=True, slots=True)
class HeaderAdd:
    """nginx `add_header`: added to responses with 200, 201, 204, 206, 301, 302, 303, 304,
    307 or 308, or to every response with `always`."""

    name: str
    value: str
    always: bool = False


@dataclass(frozen=True, slots=True)
class MapSpec:
    """nginx `map SOURCE $variable { ... }`. `entries` are (pattern, value) in order:
    a pattern starting with `~` (or `~*`, case-insensitive) is a regex, tried in order
    after the exact patterns; `default` when nothing matches."""

    source: str
    variable: str
    entries: tuple[tuple[str, str], ...] = ()
    default: str = ""


@dataclass(frozen=True, slots=True)
class StaticSpec:
    """Files served from disk (nginx `root`/`alias`, `index`, `try_files`, `expires`,
    `etag`, `types`). Exactly one of `root` and `alias` is set: with `root` a file is
    ROOT + $uri; with `alias` the part of $uri the location matched is replaced by ALIAS
    (for a regex location ALIAS is a template with its captures, the whole path)."""

    root: str | None = None
    alias: str | None = None
    # nginx `index`: tried in order for a URI ending in "/" (templates allowed).
    index: tuple[str, ...] = ("index.html",)
    # nginx `try_files FILE ... LAST`: empty for none; LAST is `=CODE`, `@named` or a URI.
    try_files: tuple[str, ...] = ()
    # nginx `expires`: None is off; seconds (negative: already expired, "no-cache"); or
    # "epoch" / "max".
    expires: float | str | None = None
    etag: bool = True
    # Extension (lower case) -> media type; None: Ferryman's built-in table (nginx's
    # mime.types).
    types: tuple[tuple[str, str], ...] | None = None
    # nginx `default_type` for files with an unknown extension.
    default_type: str = "application/octet-stream"
    # nginx `autoindex on`: a directory without an index file is listed (else 403), as
    # HTML (or json); sizes exact or rounded (autoindex_exact_size), times in UTC or
    # the server's local time (autoindex_localtime).
    autoindex: bool = False
    autoindex_exact_size: bool = True
    autoindex_localtime: bool = False
    autoindex_format: str = "html"  # html | json


@dataclass(frozen=True, slots=True)
class ErrorPageSpec:
    """nginx `error_page CODE... [=[RESPONSE]] TARGET`: an answer with one of `codes`
    (made here, or from an upstream with `intercept_errors`) is replaced by TARGET: an
    internal redirect (GET) to a URI or `@named` location, or a 302 for a full URL.
    `status` None keeps the code; 0 (a bare `=`) takes the status of TARGET's answer;
    another value is sent instead."""

    codes: tuple[int, ...]
    target: str
    status: int | None = None


# ---- protection (filters/): access rules, auth, rate and connection limits ----


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One access rule. Rules are ordered and the first whose conditions all hold
    decides (nginx's allow/deny); an empty condition always holds.

    addresses    IPs and CIDRs, v4 or v6; "all" is any address
    user_agents  "=exact", "~regex", "~*regex" (case-insensitive), else a substring
    methods      upper-case method names
    paths        "~regex" or a path prefix
    days         mon tue wed thu fri sat sun
    times        "HH:MM-HH:MM" windows; one whose end is before its start crosses
                 midnight
    timezone     an IANA zone name for days and times
    """

    action: str  # allow | deny
    addresses: tuple[str, ...] = ()
    user_agents: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    days: tuple[str, ...] = ()
    times: tuple[str, ...] = ()
    timezone: str = "UTC"
    # Named in the log line of a request the rule denied ("" = its position).
    name: str = ""


@dataclass(frozen=True, slots=True)
class AuthBasicSpec:
    """HTTP basic authentication (nginx auth_basic): users from an htpasswd file
    (bcrypt, {SHA}, {SSHA}, apr1 or {PLAIN} entries)."""

    realm: str
    user_file: str


@dataclass(frozen=True, slots=True)
class LimitZoneSpec:
    """nginx limit_req_zone / limit_conn_zone: state keyed by `key` (a template; an
    empty value is not limited), shared by every worker. `rate` is requests per
    second (limit_req zones only); `size` bounds the zone's memory in bytes."""

    name: str
    key: str
    kind: str  # req | conn
    rate: float = 0.0
    size: int = 10 * 1024 * 1024
    # Cluster (cluster/): the zone's state lives in the `cluster` Redis, shared by every
    # instance, with this zone as the fallback while Redis is unreachable.
    shared: bool = False


@dataclass(frozen=True, slots=True)
class LimitReqSpec:
    """nginx `limit_req zone=NAME [burst=N] [nodelay | delay=N]`."""

    zone: str
    burst: int = 0
    nodelay: bool = False
    delay: int = 0


@dataclass(frozen=True, slots=True)
class LimitConnSpec:
    """nginx `limit_conn ZONE N`: at most `limit` requests in flight per key."""

    zone: str
    limit: int


@dataclass(frozen=True, slots=True)
class RealIpSpec:
    """nginx set_real_ip_from / real_ip_header / real_ip_recursive: the client address
    is taken from `header` ("X-Forwarded-For", "X-Real-IP", "Forwarded" or
    "proxy_protocol") only when the connection comes from a `trusted` address."""

    trusted: tuple[str, ...]
    header: str = "X-Forwarded-For"
    recursive: bool = False


# ---- caching (cache/) ----


# nginx proxy_cache_use_stale's conditions (`off` alone means none).
CACHE_USE_STALE = (
    "error",
    "timeout",
    "invalid_header",
    "updating",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "http_403",
    "http_404",
    "http_429",
)


@dataclass(frozen=True, slots=True)
class CacheZoneSpec:
    """nginx proxy_cache_path: a named cache. `path` None keeps it in memory only;
    otherwise entries persist there (shared by all workers) with `memory_size` bytes
    of hot entries kept in each worker's memory tier."""

    name: str
    path: str | None = None
    max_size: int = 256 * 1024 * 1024
    memory_size: int = 32 * 1024 * 1024
    # Entries not used for this long are removed whatever their freshness.
    inactive: float = 600.0
    # Cluster (cluster/): entries up to ClusterSpec.cache_max_object are also kept in
    # the `cluster` Redis, so one instance's fill is another's hit.
    shared: bool = False


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """nginx proxy_cache and friends, for one route."""

    zone: str
    key: str = "$scheme$proxy_host$request_uri"
    # proxy_cache_valid: (statuses, seconds); an empty statuses tuple means "any".
    valid: tuple[tuple[tuple[int, ...], float], ...] = ()
    # proxy_cache_bypass / proxy_no_cache: templates; any non-empty, non-"0" value holds.
    bypass: tuple[str, ...] = ()
    no_cache: tuple[str, ...] = ()
    # proxy_cache_use_stale: error timeout invalid_header updating http_500 http_502
    # http_503 http_504 http_403 http_404 http_429.
    use_stale: tuple[str, ...] = ()
    lock: bool = False
    lock_timeout: float = 5.0
    background_update: bool = False
    methods: tuple[str, ...] = ("GET", "HEAD")
    min_uses: int = 1
    # Store responses carrying Set-Cookie (RFC 9111 allows it; nginx does not by default).
    store_set_cookie: bool = False
    # Answer PURGE requests on this route (by key, or by prefix with a trailing `*`):
    # 200 with the count removed, 404 when nothing was there. Anyone who can reach the
    # route can purge, so give such a route access rules (`access`) that admit only
    # operators, or put it on a listener only they reach.
    purge: bool = False
    # Add the RFC 9211 Cache-Status response field.
    status_header: bool = True


# ---- TLS (tls/): listeners that terminate TLS, and TLS to upstreams ----

# nginx's default ssl_protocols since 1.23.4 is "TLSv1.2 TLSv1.3"; older ones are refused.
TLS_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
# TLS 1.2 suites with forward secrecy and AEAD only (Mozilla's "intermediate" profile);
# TLS 1.3 suites are all modern and not configurable through this string.
DEFAULT_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


@dataclass(frozen=True, slots=True)
class TlsCertificate:
    """One certificate chain (PEM, leaf first) and its private key. `names` are the SNI
    names it serves: exact, `*.example.com` or `www.example.*` (tls/sni.py). The first
    certificate with no names (else the first one) is the address's default: it serves
    clients with no SNI or a name no certificate claims."""

    cert: str
    key: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TlsSpec:
    """TLS termination on one listening address (nginx `listen ... ssl` and the ssl_*
    directives). Certificates are chosen by SNI; everything else holds for every
    connection to the address, whichever certificate it gets (OpenSSL decides the
    protocol and the client-certificate request before or regardless of SNI)."""

    certificates: tuple[TlsCertificate, ...]
    protocols: tuple[str, ...] = TLS_PROTOCOLS
    ciphers: str = DEFAULT_CIPHERS
    # nginx ssl_prefer_server_ciphers (off by default in nginx; on here, as Mozilla
    # recommends for a list that is all strong anyway).
    prefer_server_ciphers: bool = True
    # Client certificates (mTLS): off | on (required) | optional, checked against the
    # CAs in `client_ca` (nginx ssl_client_certificate / ssl_verify_client).
    verify_client: str = "off"
    client_ca: str | None = None
    verify_depth: int = 1
    # Session resumption: tickets (TLS 1.2 and 1.3) and the TLS 1.2 session cache.
    session_tickets: bool = True
    session_timeout: float = 300.0
    # The Strict-Transport-Security value added to every response of the servers on
    # this address ("" = none), e.g. "max-age=31536000; includeSubDomains".
    hsts: str = ""
    # HTTP/2 offered by ALPN (server/h2_connection.py). On by default for native
    # configs; nginx.conf needs `http2 on` or `listen ... http2`, as nginx does.
    http2: bool = True


@dataclass(frozen=True, slots=True)
class UpstreamTlsSpec:
    """TLS to a route's upstream (nginx `proxy_pass https://` and proxy_ssl_*).
    Verification is ON by default (nginx's proxy_ssl_verify is off): a proxy that
    silently trusts any certificate defeats the point of TLS to the backend."""

    verify: bool = True
    # CA bundle to verify against (proxy_ssl_trusted_certificate); None: the system's.
    trusted_ca: str | None = None
    # Send SNI (proxy_ssl_server_name; nginx: off). The name that is sent and checked
    # against the certificate is `name` (proxy_ssl_name), by default the upstream's.
    server_name: bool = True
    name: str = ""
    verify_depth: int = 1
    # A client certificate to present (proxy_ssl_certificate / _key).
    cert: str | None = None
    key: str | None = None
    protocols: tuple[str, ...] = TLS_PROTOCOLS
    ciphers: str = DEFAULT_CIPHERS


# nginx proxy_ignore_headers: the fields it may name (ngx_http_upstream_ignore_headers_masks).
IGNORABLE_HEADERS = (
    "x-accel-redirect",
    "x-accel-expires",
    "x-accel-limit-rate",
    "x-accel-buffering",
    "x-accel-charset",
    "expires",
    "cache-control",
    "set-cookie",
    "vary",
)


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A `location`: requests whose path matches `path` (see MATCH_KINDS) run `script`,
    then go to `upstream` (nginx `proxy_pass`), or answer by the script's `return`."""

    upstream: str | None = None
    path: str = "/"
    match: str = "prefix"
    # nginx proxy_pass with a URI part (`proxy_pass http://up/api/;`): the part of the
    # normalised path that matched `path` is replaced by it. None: the client's request
    # target goes upstream unchanged.
    upstream_uri: str | None = None
    # nginx proxy_pass with variables (`proxy_pass http://$target/x$uri;`), `upstream`
    # then None: a template evaluated per request to `http://HOST[:PORT][/URI]`. HOST
    # must name an upstream or be an IP address (names are not resolved at run time,
    # as nginx without a `resolver`); a URI part, if any, is the whole upstream target.
    upstream_url: str | None = None
    # Template for the Host sent upstream; `$host` is the client's (nginx: `$proxy_host`
    # by default, but the reference config and most users set `$host`).
    host_header: str = "$host"
    # Extra request headers (name, template); an empty value removes the header, as in
    # nginx's proxy_set_header.
    set_headers: tuple[tuple[str, str], ...] = ()
    connect_timeout: float = 60.0
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    # How many peers one request may try; 0 means every peer once (nginx's default).
    next_upstream_tries: int = 0
    # When a request goes to the next peer (nginx proxy_next_upstream): error, timeout,
    # invalid_header, http_500|502|503|504|403|404|429, non_idempotent, or off.
    next_upstream: tuple[str, ...] = ("error", "timeout")
    # Time limit for passing a request on, seconds; 0: none (nginx's default).
    next_upstream_timeout: float = 0.0
    # Re-send a non-idempotent request (POST, PATCH, ...) that carries an
    # Idempotency-Key header, as if `non_idempotent` were listed for it.
    retry_idempotency_key: bool = False
    # Add `X-Ferryman-Upstream` to responses: the peer that answered, the strategy, the
    # peers tried before and why, the peers skipped and why. Off by default: it names
    # upstream addresses, which a proxy otherwise keeps to itself.
    debug_header: bool = False
    # Add X-Forwarded-For/-Proto/-Host (the common nginx recipe).
    forwarded_headers: bool = True
    # "1.1" keeps upstream connections alive; "1.0" (nginx's default) closes each one.
    http_version: str = "1.1"
    # Response fields not passed to the client (nginx proxy_hide_header), and fields
    # passed although hidden by default (proxy_pass_header); lower case.
    hide_headers: tuple[str, ...] = ()
    pass_headers: tuple[str, ...] = ()
    add_headers: tuple[HeaderAdd, ...] = ()
    script: tuple[ScriptStep, ...] = ()
    # nginx client_max_body_size; None means no limit. Over it: 413.
    client_max_body_size: int | None = None
    # Content-Type of `return` bodies whose path has no known extension (nginx
    # default_type; nginx's own default is text/plain).
    default_type: str = "text/plain"
    # Forward a client's Upgrade request (WebSocket) by itself. nginx does so only when
    # `proxy_set_header Upgrade ...` says so; the nginx front end sets this False.
    pass_upgrade: bool = True
    # Protection, in nginx's phase order: limit_req, limit_conn, then access rules and
    # basic auth. Statuses default to nginx's 503 (429 is the common choice); dry run
    # logs what a limit would do and lets the request through.
    limit_req: tuple[LimitReqSpec, ...] = ()
    limit_req_status: int = 503
    limit_conn: tuple[LimitConnSpec, ...] = ()
    limit_conn_status: int = 503
    limit_dry_run: bool = False
    access: tuple[AccessRule, ...] = ()
    deny_status: int = 403
    # Body of a denial ("" = the standard error page).
    deny_body: str = ""
    auth_basic: AuthBasicSpec | None = None
    cache: CacheSpec | None = None
    # TLS (tls/): set when the upstream is reached over https (nginx proxy_pass https://).
    upstream_tls: UpstreamTlsSpec | None = None
    # Static files (proxy/static/): served when the route has no upstream.
    static: StaticSpec | None = None
    # nginx error_page, and proxy_intercept_errors (upstream answers >= 300 with a code
    # listed there are replaced too).
    error_pages: tuple[ErrorPageSpec, ...] = ()
    intercept_errors: bool = False
    # nginx proxy_redirect: (FROM, TO) rewrites of upstream Location/Refresh values.
    # None: nginx's `default` (the proxy_pass URL -> the route's path); (): off.
    # FROM may start with `~` / `~*` (a regex); TO is a template ($1.. from the regex).
    redirects: tuple[tuple[str, str], ...] | None = None
    # What goes upstream (proxy/body.py): nginx proxy_method (None: the client's),
    # proxy_set_body (a template replacing the body; None: the client's),
    # proxy_pass_request_headers (False: only Host, Connection and set_headers) and
    # proxy_pass_request_body (False: no body; the client's is still read).
    upstream_method: str | None = None
    upstream_body: str | None = None
    pass_request_headers: bool = True
    pass_request_body: bool = True
    # nginx proxy_ignore_headers: upstream fields (lower case, of IGNORABLE_HEADERS)
    # whose meaning is not acted on (the cache's decisions; X-Accel-* processing).
    ignore_headers: tuple[str, ...] = ()
    # Nested locations, searched within this one as nginx does.
    routes: tuple[RouteSpec, ...] = ()


# ---- forward proxy (proxy/forward.py, filters/destination.py) ----

FORWARD_ANONYMITY = ("transparent", "anonymous", "elite")


@dataclass(frozen=True, slots=True)
class DestinationRule:
    """Where a forward proxy may connect: `value` is a domain (`example.com`, or
    `*.example.com` for it and its subdomains), an address or CIDR (checked on the
    resolved address), `port:N` / `port:N-M`, or `all`. First match wins."""

    action: str  # allow | deny
    value: str


@dataclass(frozen=True, slots=True)
class ProxyAuthSpec:
    """Proxy authentication (RFC 9110 11.7.1): 407 + Proxy-Authenticate: Basic; users
    from an htpasswd file (the format filters/auth.py reads)."""

    realm: str
    user_file: str


@dataclass(frozen=True, slots=True)
class PacSpec:
    """A proxy auto-config file served by the forward listener at `path` (origin-form
    GET); `file` None: generated from the forward rules (proxy/pac.py)."""

    path: str = "/proxy.pac"
    file: str | None = None
    # (proxy/pac.py) Hosts the generated PAC may send DIRECT: a domain, `*.domain`, an
    # address or a CIDR (matched on address literals only: the PAC does no DNS lookup for
    # these). Loopback by default: a client's own machine is never the proxy's to reach.
    # A host the destination rules deny still goes to the proxy (which answers 403).
    direct: tuple[str, ...] = ("localhost", "*.localhost", "127.0.0.0/8", "::1")
    # The public "host:port" the PAC names; None: the Host the PAC was fetched with.
    proxy: str | None = None


@dataclass(frozen=True, slots=True)
class ForwardSpec:
    """A server in forward-proxy mode (ServerSpec.forward): absolute-form requests and
    CONNECT tunnels to any origin the destination rules allow."""

    # CONNECT only to these ports (squid's SSL_ports default is 443 alone).
    connect_ports: tuple[int, ...] = (443,)
    anonymity: str = "transparent"  # FORWARD_ANONYMITY
    # Replaces the client's User-Agent ("" = passed as is).
    user_agent: str = ""
    auth: ProxyAuthSpec | None = None
    destinations: tuple[DestinationRule, ...] = ()
    # Loopback, private, link-local, CGNAT and cloud metadata addresses are refused
    # unless this is set (SSRF); explicit `allow` rules for such addresses also let
    # them through.
    allow_private: bool = False
    # Client-side protection, as on a route (filters/).
    access: tuple[AccessRule, ...] = ()
    deny_status: int = 403
    limit_req: tuple[LimitReqSpec, ...] = ()
    limit_req_status: int = 503
    limit_conn: tuple[LimitConnSpec, ...] = ()
    limit_conn_status: int = 503
    # Plain-HTTP responses cached as on a route; the key defaults to the absolute URI.
    cache: CacheSpec | None = None
    resolve_timeout: float = 5.0
    connect_timeout: float = 10.0
    # Also a CONNECT tunnel's idle timeout (traffic either way renews it).
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    # Idle kept-alive connections per origin address, and how long they stay.
    keepalive: int = 8
    keepalive_timeout: float = 30.0
    pac: PacSpec | None = None


@dataclass(frozen=True, slots=True)
class ListenSpec:
    host: str
    port: int
    # Connections start with a PROXY protocol (v1 or v2) header (nginx `listen ...
    # proxy_protocol`); connections without one are refused.
    proxy_protocol: bool = False
    # nginx `listen ... default_server`: the server for Hosts no server_name matches.
    # Not part of identity: two servers on one address share one ListenSpec key.
    default_server: bool = field(default=False, compare=False)
    # TLS (tls/): terminate TLS on this address. Part of its identity: servers sharing an
    # address share its TLS settings (their certificates are merged by the front ends).
    tls: TlsSpec | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    listen: tuple[ListenSpec, ...]
    routes: tuple[RouteSpec, ...]
    # Exact names, `*.example.com` / `example.*` wildcards, `~regex` (nginx order).
    server_names: tuple[str, ...] = ()
    # Server-level rewrite-module steps, run before a route is chosen.
    script: tuple[ScriptStep, ...] = ()
    add_headers: tuple[HeaderAdd, ...] = ()
    real_ip: RealIpSpec | None = None
    # Admin/observability: explainable routing for this server's requests (overrides
    # Config.trace); None: inherit the top-level setting.
    trace: TraceSpec | None = None
    # Forward-proxy mode (proxy/forward.py): such a server has no routes.
    forward: ForwardSpec | None = None


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Several Ferryman instances sharing state through one Redis (cluster/, see
    docs/cluster.md). `url` names it: redis:// or rediss:// (TLS) for one server,
    redis-sentinel:// (rediss-sentinel://) `host:port,host:port/SERVICE` for Sentinel,
    redis-cluster:// (rediss-cluster://) `host:port,...` for Redis Cluster. Limit and
    cache zones opt in with `shared: true`; peer health is shared when `health`."""

    url: str
    # Overrides a password in the URL. `password_file` (its first line) is read by each
    # worker when it connects, so the secret stays out of dumps and the admin API.
    password: str | None = None
    password_file: str | None = None
    username: str | None = None
    # rediss: the CA bundle to verify the server with (None: the system's), and whether
    # to verify at all (a self-signed test server).
    tls_ca: str | None = None
    tls_verify: bool = True
    # Every Redis call on a request's path is bounded by this; past it the decision is
    # taken locally (a 50 ms stall is the most Redis may ever add to a request).
    timeout: float = 0.05
    # Key and channel namespace: the instances of one cluster use the same prefix.
    prefix: str = "ferryman"
    health: bool = True
    # Largest response body kept in Redis for a shared cache zone.
    cache_max_object: int = 1024 * 1024
    # limit_conn leases expire this long after their holder's last renewal (a dead
    # instance's requests stop counting after at most this).
    lease_ttl: float = 10.0


@dataclass(frozen=True, slots=True)
class AdminSpec:
    """The admin API and dashboard listener (observability/admin.py). Loopback by
    default; a non-loopback address must have a token (refused at load otherwise).
    `token_file` is read by the master when it starts the admin process."""

    host: str = "127.0.0.1"
    port: int = 9901
    token: str | None = None
    token_file: str | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TraceSpec:
    """Explainable routing (observability/trace.py): a request carrying `header` (with
    the admin token as its value when one is set) gets the routing decision back in a
    response header of the same name."""

    header: str = "X-Ferryman-Trace"


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """Bounds on what one client may send (nginx large_client_header_buffers: a
    request line longer than `request_line` is 414, a header section over
    `header_bytes` or with more than `headers` fields is 431)."""

    request_line: int = 8 * 1024
    header_bytes: int = 64 * 1024
    headers: int = 100


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    # nginx: client_header_timeout 60s, client_body_timeout 60s, keepalive_timeout 75s.
    header: float = 60.0
    body: float = 60.0
    keepalive: float = 75.0
    # nginx: send_timeout 60s (between two successive writes to the client).
    send: float = 60.0


@dataclass(frozen=True, slots=True)
class AccessLogSpec:
    """`path` None means off; "-" means standard output. `format` is `combined`, `json`
    or the name of one of `Config.log_formats`."""

    path: str | None = "-"
    format: str = "combined"


@dataclass(frozen=True, slots=True)
class Config:
    servers: tuple[ServerSpec, ...]
    upstreams: tuple[UpstreamSpec, ...]
    workers: int = 1
    worker_connections: int = 1024
    client_timeouts: ClientTimeouts = field(default_factory=ClientTimeouts)
    client_limits: ClientLimits = field(default_factory=ClientLimits)
    # Connections open at once across all workers; 0: only worker_connections applies.
    max_connections: int = 0
    limit_zones: tuple[LimitZoneSpec, ...] = ()
    cache_zones: tuple[CacheZoneSpec, ...] = ()
    access_log: AccessLogSpec = field(default_factory=AccessLogSpec)
    # Name -> address overrides applied before the system resolver (Docker's --add-host).
    hosts: tuple[tuple[str, str], ...] = ()
    maps: tuple[MapSpec, ...] = ()
    # Reload/stop (workers.py): how long an old worker may spend finishing in-flight
    # requests and tunnels before what is left is cut (nginx worker_shutdown_timeout;
    # nginx waits forever by default, a bound keeps a stuck long-poll from pinning a
    # generation).
    worker_shutdown_timeout: float = 10.0
    # nginx `pid FILE` (written by the master once listening, removed on exit) and
    # `error_log FILE [LEVEL]`; None: no pid file / standard error.
    pid_file: str | None = None
    # For `resolve` servers: how often names are looked up again, and a hosts file
    # (`ADDRESS NAME...` lines) consulted before DNS, re-read every time.
    resolve_interval: float = 30.0
    hosts_file: str | None = None
    error_log: tuple[str, str] | None = None
    # nginx `daemon on|off` (nginx CLI work): detach once listening. None: not said, and
    # each command keeps its default (`ferryman run` stays in the foreground,
    # `ferryman nginx` detaches, as nginx does).
    daemon: bool | None = None
    # Named access log formats (nginx log_format NAME TEMPLATE), templates of variables.
    log_formats: tuple[tuple[str, str], ...] = ()
    # Admin API + dashboard listener (None: none) and the top-level routing trace.
    admin: AdminSpec | None = None
    trace: TraceSpec | None = None
    # Cluster (cluster/): the Redis several instances share state through; None: alone.
    cluster: ClusterSpec | None = None
    # Close a client connection after this many requests (nginx keepalive_requests).
    keepalive_requests: int = 1000
    # nginx `keepalive_timeout T HEADER`: the `Keep-Alive: timeout=HEADER` field sent
    # on kept-alive responses; 0: none.
    keepalive_header: int = 0
    # Non-fatal findings of the front end (e.g. nginx.conf patterns that hurt), printed
    # by `check`.
    warnings: tuple[str, ...] = field(default=(), compare=False)
    source: str = "<memory>"

    def upstream(self, name: str) -> UpstreamSpec:
        for u in self.upstreams:
            if u.name == name:
                return u
        raise KeyError(name)
