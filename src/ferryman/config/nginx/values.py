"""The values inside nginx directives: numbers, sizes, times, flags, addresses, URLs,
regexes, file paths; each read strictly, each failure a `ConfigError` at the
statement's `file:line` in nginx's wording (`invalid value "x" in "y" directive`).

Owns nginx's spelling of values (PCRE named groups, `[::1]:80`, default port 80,
paths relative to the configuration's directory). Knows nothing about contexts or the
schema's shape.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from ferryman.config.native import check_regex
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.units import parse_duration, parse_host_name, parse_size
from ferryman.errors import ConfigError

__all__ = [
    "ProxyTarget",
    "ProxyTemplate",
    "flag",
    "host_port",
    "number",
    "path",
    "proxy_target",
    "regex",
    "size",
    "time",
    "unsupported",
]

_DIGITS = re.compile(r"[0-9]{1,15}")
# PCRE's `(?<name>...)` is Python's `(?P<name>...)`; `(?<=` and `(?<!` are lookbehinds.
_PCRE_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")
_PCRE_NAMED_GROUP_QUOTED = re.compile(r"\(\?'([A-Za-z_][A-Za-z0-9_]*)'")
_VARIABLE = re.compile(r"\$(?:\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)")
_HTTP_PORT = 80
_HTTPS_PORT = 443
# What a URL template may hold: printable ASCII, as in a request line (RFC 9112 3.2).
_URL_TEXT = re.compile(r"[\x21-\x7e]+")


class Unsupported(Exception):  # a signal to the walker, not a failure
    """A valid nginx directive Ferryman does not implement here. `--lenient` turns it
    into a warning; otherwise it becomes a ConfigError at the statement."""

    def __init__(self, stmt: Stmt, reason: str) -> None:
        super().__init__(reason)
        self.stmt = stmt
        self.reason = reason


def unsupported(stmt: Stmt, reason: str | None = None) -> Unsupported:
    return Unsupported(stmt, reason or f'"{stmt.name}" directive is not supported yet')


def invalid(stmt: Stmt, value: str, hint: str = "") -> ConfigError:
    suffix = f" ({hint})" if hint else ""
    return stmt.error(f'invalid value "{value}" in "{stmt.name}" directive{suffix}')


def number(stmt: Stmt, text: str, low: int = 0, high: int = 10**15) -> int:
    """ASCII digits only (no sign, no `_`, no spaces), from `low` to `high`."""
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise invalid(stmt, text, f"want a number from {low} to {high}")
    return int(text)


def size(stmt: Stmt, text: str) -> int:
    """nginx sizes: `512`, `64k`, `1m`, `1g` (either case)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise invalid(stmt, text, str(exc)) from None


def time(stmt: Stmt, text: str, *, positive: bool = False) -> float:
    """Seconds in an nginx time: `30s`, `500ms`, `1m30s`, or a bare number of seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise invalid(stmt, text, str(exc)) from None
    if positive and seconds <= 0:
        raise invalid(stmt, text, "must be longer than 0")
    return seconds


def flag(stmt: Stmt, text: str) -> bool:
    if text not in ("on", "off"):
        raise stmt.error(
            f'invalid value "{text}" in "{stmt.name}" directive, it must be "on" or "off"'
        )
    return text == "on"


def regex(stmt: Stmt, pattern: str, *, icase: bool = False) -> str:
    """`pattern` in Python's `re` syntax, checked to compile. PCRE's named groups
    `(?<name>...)` and `(?'name'...)` are rewritten to `(?P<name>...)`; any other PCRE
    construct Python lacks is refused here, not at the first request."""
    python = _PCRE_NAMED_GROUP.sub("(?P<", pattern)
    python = _PCRE_NAMED_GROUP_QUOTED.sub(r"(?P<\1>", python)
    try:
        check_regex(python, icase=icase)
    except ValueError as exc:
        raise stmt.error(f'cannot compile regex "{pattern}": {exc}') from None
    return python


def host_port(stmt: Stmt, text: str, *, what: str) -> tuple[str, int | None]:
    """(host, port or None) from `host`, `host:port`, `[v6]`, `[v6]:port`; IPv6 comes
    back unbracketed. `what` names the thing in errors ("upstream", "listen")."""
    if text.startswith("unix:"):
        raise stmt.error(f'unix domain sockets are not supported yet in "{text}"')
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise stmt.error(f'invalid host in {what} "{text}"')
        return _checked_ipv6(stmt, host, text, what), _port(stmt, rest[1:], text, what)
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, ""
    try:
        host = parse_host_name(host)
    except ValueError:
        raise stmt.error(f'invalid host in {what} "{text}"') from None
    return host, _port(stmt, port_text, text, what) if sep else None


def _checked_ipv6(stmt: Stmt, host: str, text: str, what: str) -> str:
    try:
        return str(ipaddress.IPv6Address(host))
    except ValueError:
        raise stmt.error(f'invalid IPv6 address in {what} "{text}"') from None


def _port(stmt: Stmt, text: str, whole: str, what: str) -> int | None:
    if text == "":
        return None
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise stmt.error(f'invalid port in {what} "{whole}"')
    return int(text)


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    """`proxy_pass http://HOST[:PORT][/URI]` taken apart. `host` is as written (IPv6 in
    brackets), which is what nginx's `$proxy_host` shows."""

    host: str
    port: int | None
    uri: str | None
    # `proxy_pass https://` (TLS to the upstream; default port 443).
    https: bool = False

    @property
    def default_port(self) -> int:
        return _HTTPS_PORT if self.https else _HTTP_PORT

    @property
    def proxy_host(self) -> str:
        # nginx (ngx_http_proxy_set_vars): the default port is left out of $proxy_host.
        if self.port is None or self.port == self.default_port:
            return self.host
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ProxyTemplate:
    """`proxy_pass` with variables: `url` as written, a template the runtime evaluates
    per request. `target` is the host part when it has no variables (`uri` then None):
    that host must name an upstream or be an IP address, which only the whole file can
    tell."""

    url: str
    target: ProxyTarget | None


def proxy_target(stmt: Stmt, url: str) -> ProxyTarget | ProxyTemplate:
    scheme, sep, rest = url.partition("://")
    if _VARIABLE.search(scheme if sep else url):
        raise stmt.error(f'variables in the scheme of "proxy_pass" are not supported yet: "{url}"')
    if not sep or scheme.lower() not in ("http", "https"):
        raise stmt.error(f'invalid URL prefix in "{url}"')
    https = scheme.lower() == "https"
    if https and _VARIABLE.search(url):
        raise stmt.error(f'https:// in "proxy_pass" with variables is not supported yet: "{url}"')
    authority, slash, path_part = rest.partition("/")
    if not authority:
        raise stmt.error(f'no host in "{url}" of the "proxy_pass" directive')
    if _VARIABLE.search(url):
        return _proxy_template(stmt, url, authority)
    return _static_target(stmt, authority, f"/{path_part}" if slash else None, https)


def _static_target(stmt: Stmt, authority: str, uri: str | None, https: bool = False) -> ProxyTarget:
    host, port = host_port(stmt, authority, what="upstream")
    written_host = authority[: authority.index("]") + 1] if authority.startswith("[") else host
    return ProxyTarget(host=written_host, port=port, uri=uri, https=https)


def _proxy_template(stmt: Stmt, url: str, authority: str) -> ProxyTemplate:
    # nginx checks such a URL only per request; what is visible at load is checked here.
    # The variables themselves are checked when the runtime compiles the template.
    if not _URL_TEXT.fullmatch(url):
        raise stmt.error(f'invalid URL "{url}" in "proxy_pass" directive (want printable ASCII)')
    if authority.startswith("unix:"):
        raise stmt.error(f'unix domain sockets are not supported yet in "{url}"')
    if _VARIABLE.search(authority):
        return ProxyTemplate(url=url, target=None)
    return ProxyTemplate(url=url, target=_static_target(stmt, authority, None))


def path(stmt: Stmt, base_dir: str, text: str) -> str:
    """A file path; a relative one is taken relative to the directory of the main
    configuration file (nginx: its prefix)."""
    if not text or any(ord(ch) < 0x20 or ch == "\x7f" for ch in text):
        raise invalid(stmt, text, "want a file path")
    return os.path.normpath(os.path.join(base_dir, text))
