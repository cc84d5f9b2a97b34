"""A route at run time: a RouteSpec compiled against this worker's upstream group and
pool, with header templates compiled and constant header bytes pre-rendered."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ferryman.config.schema import (
    BreakSpec,
    HeaderAdd,
    IfSpec,
    RewriteSpec,
    RouteSpec,
    ScriptStep,
    SetSpec,
)
from ferryman.filters.base import RequestFilter
from ferryman.proxy.body import UpstreamRequest, wants_upstream_request
from ferryman.proxy.error_pages import ErrorPages
from ferryman.proxy.redirects import Redirects, default_rule
from ferryman.proxy.variables import Template, compile_template, is_request_host
from ferryman.upstream.group import UpstreamGroup
from ferryman.upstream.pool import ConnectionPool

if TYPE_CHECKING:
    from ferryman.cache.handler import RouteCache
    from ferryman.proxy.static.serve import StaticFiles

__all__ = [
    "AddHeaders",
    "Route",
    "compile_add_headers",
    "parse_proxy_url",
    "render_add_headers",
    "script_templates",
]


# Added by nginx's add_header only to responses with these statuses, unless `always`.
_ADD_HEADER_STATUSES: Final = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})


class Route:
    __slots__ = (
        "add_headers",
        "cache",
        "connect_timeout",
        "debug",
        "default_type",
        "drop",
        "dynamic_headers",
        "error_pages",
        "filters",
        "forwarded",
        "group",
        "hide",
        "host",
        "host_is_host",
        "http10",
        "intercept_errors",
        "max_body",
        "max_tries",
        "pass_date",
        "pass_upgrade",
        "pool",
        "prefix",
        "proxies",
        "proxy_host",
        "read_timeout",
        "redirect_templates",
        "redirects",
        "retry_deadline",
        "retry_key",
        "retry_non_idempotent",
        "retry_off",
        "retry_on",
        "retry_statuses",
        "script",
        "send_timeout",
        "spec",
        "static",
        "static_headers",
        "templates",
        "upstream_request",
        "upstream_uri",
        "url",
    )

    def __init__(
        self,
        spec: RouteSpec,
        group: UpstreamGroup,
        pool: ConnectionPool,
        where: str,
        user_vars: frozenset[str] = frozenset(),
        script: Any = None,
    ) -> None:
        self.spec = spec
        self.group = group
        self.pool = pool
        self.host: Template = compile_template(spec.host_header, f"{where}.host_header", user_vars)
        # The default, `$host`: the exchange computes it natively (variables.request_host).
        self.host_is_host = is_request_host(self.host)
        static: list[bytes] = []
        dynamic: list[tuple[bytes, Template]] = []
        # Client fields replaced by the route's own (hop-by-hop fields, Host, Expect and
        # X-Forwarded-* are never copied anyway: see RequestHead.fields).
        drop = set()
        for name, value in spec.set_headers:
            bname = name.encode()
            drop.add(bname.lower())
            tpl = compile_template(value, f"{where}.set_headers.{name}", user_vars)
            if isinstance(tpl, bytes):
                if tpl:  # nginx: an empty value removes the header
                    static.append(b"%s: %s\r\n" % (bname, tpl))
            else:
                dynamic.append((bname, tpl))
        self.forwarded = spec.forwarded_headers
        self.drop = frozenset(drop)
        self.static_headers = b"".join(static)
        self.dynamic_headers = tuple(dynamic)
        self.connect_timeout = spec.connect_timeout
        self.read_timeout = spec.read_timeout
        self.send_timeout = spec.send_timeout
        # A route without proxy_pass (say, only `return`) gets an empty group and pool,
        # so the proxying code never deals with None.
        self.proxies = spec.upstream is not None or spec.upstream_url is not None
        # proxy_pass with variables: the URL, evaluated per request.
        self.url: Template | None = (
            compile_template(spec.upstream_url, f"{where}.upstream_url", user_vars)
            if spec.upstream_url is not None
            else None
        )
        npeers = max(1, len(group.peers))
        self.max_tries = min(spec.next_upstream_tries or npeers, npeers)
        # proxy_next_upstream: which failures pass a request on to the next peer.
        conditions = frozenset(spec.next_upstream)
        self.retry_off = "off" in conditions
        self.retry_on = conditions
        self.retry_statuses = frozenset(
            int(c[5:]) for c in conditions if c.startswith("http_") and c[5:].isdigit()
        )
        self.retry_non_idempotent = "non_idempotent" in conditions
        self.retry_key = spec.retry_idempotency_key
        self.retry_deadline = spec.next_upstream_timeout
        self.debug = spec.debug_header
        # $proxy_host: nginx's name for the proxy_pass host (the upstream block's name).
        self.proxy_host = (spec.upstream or "").encode()
        self.upstream_uri = spec.upstream_uri.encode() if spec.upstream_uri is not None else None
        self.prefix = spec.path.encode()
        self.http10 = spec.http_version == "1.0"
        self.max_body = spec.client_max_body_size
        passed = {h.lower().encode() for h in spec.pass_headers}
        self.hide = frozenset(h.lower().encode() for h in spec.hide_headers) - passed
        # The proxy writes its own Date unless told to pass the upstream's (nginx).
        self.pass_date = b"date" in passed
        self.pass_upgrade = spec.pass_upgrade
        self.default_type = spec.default_type.encode()
        self.add_headers = compile_add_headers(spec.add_headers, where, user_vars)
        # The compiled rewrite-module script (proxy.script), if the route has one, and its
        # templates compiled by their text (the script hands texts to its renderer).
        self.script = script
        self.templates = script_templates(spec.script, where, user_vars)
        # Protection filters (filters/registry.py), set by the route builder: they need
        # worker-wide state a Route does not own.
        self.filters: tuple[RequestFilter, ...] = ()
        # The proxy cache (cache/handler.py RouteCache), set by the route builder: it
        # needs the worker's cache zones.
        self.cache: RouteCache | None = None
        # proxy_method / proxy_set_body / proxy_pass_request_* (proxy/body.py): None
        # unless the route uses one, so the common path only tests for None.
        self.upstream_request: UpstreamRequest | None = (
            UpstreamRequest(spec, where, user_vars) if wants_upstream_request(spec) else None
        )
        self._build_content(spec, where, user_vars)

    def _build_content(self, spec: RouteSpec, where: str, user_vars: frozenset[str]) -> None:
        """Static files, error_page and proxy_redirect (proxy/static/, error_pages.py,
        redirects.py)."""
        # Imported here: serve.py renders add_header lines with this module's helper.
        from ferryman.proxy.static.serve import StaticFiles

        regex = spec.match in ("regex", "regex_icase")
        self.static: StaticFiles | None = (
            StaticFiles(spec.static, self.prefix, regex, where, user_vars)
            if spec.static is not None
            else None
        )
        self.error_pages = ErrorPages(spec.error_pages)
        self.intercept_errors = spec.intercept_errors
        rules = spec.redirects
        if rules is None:
            rules = ()
            if spec.upstream is not None and spec.upstream_url is None:
                url = f"{'https' if spec.upstream_tls is not None else 'http'}://{spec.upstream}"
                if spec.upstream_uri is not None:
                    url += spec.upstream_uri
                location = "" if spec.match in ("regex", "regex_icase", "named") else spec.path
                rules = (default_rule(url, spec.upstream_uri, location),)
        self.redirects = Redirects(rules)
        self.redirect_templates = {
            to: compile_template(to, f"{where}.redirects", user_vars) for _, to in rules
        }

    def render_host(self, ctx: Any) -> bytes:
        host = self.host
        return host if isinstance(host, bytes) else host(ctx)

    def render_extra(self, ctx: Any) -> bytes:
        if not self.dynamic_headers:
            return self.static_headers
        out = [self.static_headers]
        for name, tpl in self.dynamic_headers:
            value = tpl if isinstance(tpl, bytes) else tpl(ctx)
            if value:
                out.append(b"%s: %s\r\n" % (name, value))
        return b"".join(out)

    def __repr__(self) -> str:
        target = self.group.name if self.proxies else "(local)"
        return f"Route({self.spec.match} {self.spec.path} -> {target})"


AddHeaders = tuple[tuple[bytes, Template, bool], ...]


def parse_proxy_url(value: bytes) -> tuple[bytes, bytes, int | None, bytes | None] | None:
    """`http://HOST[:PORT][/URI]` -> (authority, host, port or None, URI or None)."""
    if value[:7].lower() != b"http://":
        return None
    rest = value[7:]
    slash = rest.find(b"/")
    authority, uri = (rest, None) if slash < 0 else (rest[:slash], rest[slash:])
    if authority.startswith(b"["):
        end = authority.find(b"]")
        if end < 0:
            return None
        host, port_text = authority[1:end], authority[end + 1 :].removeprefix(b":")
    else:
        host, _, port_text = authority.partition(b":")
    if not host:
        return None
    port = None
    if port_text:
        if not port_text.isdigit() or len(port_text) > 5 or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    return authority, host, port, uri


def script_templates(
    steps: tuple[ScriptStep, ...], where: str, user_vars: frozenset[str]
) -> dict[str, Template]:
    """Every text the script may hand its renderer, compiled: values, return texts, and
    a rewrite's replacement as a whole, without its final `?`, and split at its `?`
    into path and arguments (proxy.script renders those parts separately)."""
    out: dict[str, Template] = {}
    for i, step in enumerate(steps):
        if isinstance(step, BreakSpec):
            continue
        if isinstance(step, IfSpec):
            # The condition's texts, then those of the steps it guards.
            texts = [step.operand, step.value]
            inner = script_templates(step.steps, f"{where}.script[{i}]", user_vars)
            for text, tpl in inner.items():
                out.setdefault(text, tpl)
        elif isinstance(step, SetSpec):
            texts = [step.value]
        elif isinstance(step, RewriteSpec):
            whole = step.replacement
            trimmed = whole.removesuffix("?")
            path, _, args = trimmed.partition("?")
            texts = [whole, trimmed, path, args]
        else:
            texts = [step.text]
        for text in texts:
            if text not in out:
                out[text] = compile_template(text, f"{where}.script[{i}]", user_vars)
    return out


def compile_add_headers(
    specs: tuple[HeaderAdd, ...], where: str, user_vars: frozenset[str]
) -> AddHeaders:
    return tuple(
        (
            h.name.encode(),
            compile_template(h.value, f"{where}.add_headers.{h.name}", user_vars),
            h.always,
        )
        for h in specs
    )


def render_add_headers(headers: AddHeaders, status: int, ctx: Any) -> bytes:
    """The `name: value` lines nginx's add_header would add to a response of `status`."""
    if not headers:
        return b""
    out = []
    ok = status in _ADD_HEADER_STATUSES
    for name, tpl, always in headers:
        if ok or always:
            value = tpl if isinstance(tpl, bytes) else tpl(ctx)
            if value:  # nginx: an empty value adds nothing
                out.append(b"%s: %s\r\n" % (name, value))
    return b"".join(out)
