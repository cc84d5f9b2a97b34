"""The proxy auto-config (PAC) file a forward listener serves, made from its own rules.

Owns: turning a `ForwardSpec` (its destination rules, CONNECT ports and `pac.direct`
list) and the proxy's public address into the JavaScript text of
`FindProxyForURL(url, host)`, and choosing that public address for one request. The
rules travel into the script as JSON data read by a small fixed interpreter, so no
configured value is ever spliced into code.

The decision the script makes, for a URL and its host:

* DIRECT only when the host is on `pac.direct` AND the proxy itself would let the
  request through: the destination rules (first match wins, default allow) do not deny
  it, and an https:/wss: URL's port is one of `connect_ports`. A PAC file must never be
  a way around the proxy's policy, so every destination the proxy would deny goes to
  the proxy, which answers it with its own 403 (seen, logged, explained) instead of the
  browser connecting on its own.
* Everything else: `PROXY host:port`, with no `; DIRECT` fallback: when the proxy is
  down, requests fail rather than silently leave the policy (fail closed).
* Address and CIDR rules are matched, as the proxy matches them, on the resolved
  address: the script resolves a name (`isInNet`) only for a host already on the direct
  list, so the common path makes no DNS lookup. `pac.direct`'s own networks match
  address literals only. An IPv6 network is checked against a name only where the
  engine has Microsoft's `dnsResolveEx` (Chromium does); elsewhere a deny rule then
  counts as matching and an allow rule as not (both lean towards the proxy).
* The proxy's refusal of private and loopback addresses (`allow_private`) is not
  applied: it protects the proxy's network, and a client reaching its own machine or
  LAN directly goes around nothing.

The script is plain ES3 (no `Array.indexOf`, no `let`), because Windows' WinHTTP runs
PAC files in JScript. Must not know about sockets, the exchange's internals or the
clock; the only I/O is reading `pac.file` when one is configured.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from ferryman.config.schema import DestinationRule, ForwardSpec, PacSpec
from ferryman.filters.destination import compile_destinations

__all__ = ["PAC_MEDIA_TYPE", "compile_value", "pac_body", "proxy_address", "render_pac"]

# The media type Netscape defined for PAC files, which browsers expect.
PAC_MEDIA_TYPE: Final = "application/x-ns-proxy-autoconfig"

# JSON: ["all"] | ["port", lo, hi] | ["domain", name, exact, subdomains]
# | ["net4", address, mask] | ["net6", [8 groups], prefix]
Matcher = list[object]

# A Host field we are willing to name in the script: a DNS name, an IPv4 address or a
# bracketed IPv6 literal, and an optional port. Anything else (the field is the
# client's) falls back to the listener's own name.
_AUTHORITY: Final = re.compile(
    rb"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    rb"(?::(?P<port>[0-9]{1,5}))?"
)


class PacRequest(Protocol):
    """What `pac_body` reads of the request that asked for the PAC (the exchange)."""

    @property
    def head(self) -> _HasHost: ...

    @property
    def server_name(self) -> bytes: ...

    @property
    def server_port(self) -> bytes: ...


class _HasHost(Protocol):
    @property
    def host(self) -> bytes | None: ...


def pac_body(spec: ForwardSpec, request: PacRequest) -> bytes:
    """The PAC file for one request: `pac.file` as it is on disk, else generated for
    the address the client reached the proxy by (`proxy_address`)."""
    pac = spec.pac or PacSpec()
    if pac.file is not None:
        return Path(pac.file).read_bytes()
    address = proxy_address(pac, request.head.host, request.server_name, request.server_port)
    return render_pac(spec, address).encode("ascii")


def proxy_address(pac: PacSpec, host: bytes | None, server_name: bytes, server_port: bytes) -> str:
    """The "host:port" the script names: `pac.proxy` when configured, else the Host the
    client fetched the PAC with (the name it can reach us by; port 80 if it gave none,
    the port an http: URL without one means), else the server's name and port."""
    if pac.proxy is not None:
        return pac.proxy
    if host is not None:
        match = _AUTHORITY.fullmatch(host)
        if match is not None:
            port = match["port"]
            number = int(port) if port is not None else 80  # digits only: fullmatch above
            if 0 < number <= 65535:
                return f"{match['host'].decode('ascii')}:{number}"
    return f"{server_name.decode('ascii', 'replace')}:{server_port.decode('ascii', 'replace')}"


def render_pac(spec: ForwardSpec, proxy: str) -> str:
    """The script for `spec`'s rules, sending proxied requests to `proxy` ("host:port")."""
    pac = spec.pac or PacSpec()
    direct = [_labelled(compile_value, v, f"pac.direct[{i}]") for i, v in enumerate(pac.direct)]
    rules = [
        [r.action, _labelled(compile_value, r.value, f"destinations[{i}]")]
        for i, r in enumerate(spec.destinations)
    ]
    header = (
        "// Proxy auto-config generated by Ferryman from its forward-proxy rules.\n"
        "// DIRECT only for the hosts listed in FM_DIRECT that the proxy itself would allow\n"
        "// (FM_RULES, first match wins; https/wss ports in FM_CONNECT_PORTS); every other\n"
        "// request, denied ones included, goes to the proxy, with no DIRECT fallback.\n"
    )
    data = (
        f"var FM_PROXY = {_js(f'PROXY {proxy}')};\n"
        f"var FM_CONNECT_PORTS = {_js(list(spec.connect_ports))};\n"
        f"var FM_DIRECT = {_js(direct)};\n"
        f"var FM_RULES = {_js(rules)};\n"
    )
    return header + data + _INTERPRETER


def compile_value(value: str) -> Matcher:
    """A destination-rule (or `pac.direct`) value as the script's matcher data, parsed
    by the proxy's own rule compiler (filters/destination.py) so that both read a value
    alike: `all`; `port:N` / `port:N-M`; an address or CIDR; `example.com` (that name);
    `*.example.com` (its subdomains); `.example.com` (the name and its subdomains).
    Raises ValueError for anything else."""
    try:
        (rule,) = compile_destinations((DestinationRule("allow", value),))
    except ValueError as exc:
        raise ValueError(str(exc).partition(": ")[2] or str(exc)) from None
    if rule.ports is not None:
        return ["port", rule.ports[0], rule.ports[1]]
    network = rule.network
    if isinstance(network, ipaddress.IPv4Network):
        return ["net4", str(network.network_address), str(network.netmask)]
    if isinstance(network, ipaddress.IPv6Network):
        packed = network.network_address.packed
        words = [packed[i] << 8 | packed[i + 1] for i in range(0, 16, 2)]
        return ["net6", words, network.prefixlen]
    if rule.domain:
        return ["domain", rule.domain, rule.exact, rule.subdomains]
    return ["all"]


def _labelled(compile: Callable[[str], Matcher], value: str, where: str) -> Matcher:
    try:
        return compile(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _js(data: object) -> str:
    # JSON is a JavaScript literal; ensure_ascii also escapes U+2028/U+2029, which are
    # line breaks in older JavaScript strings.
    return json.dumps(data, ensure_ascii=True, separators=(", ", ": "))


# The fixed part of every generated PAC. Helpers are prefixed `_fm` so that they cannot
# collide with the PAC standard's functions (dnsDomainIs, isInNet, ...) it calls.
_INTERPRETER: Final = r"""
function FindProxyForURL(url, host) {
    var h = _fmHost(host);
    var port = _fmPort(url);
    if (!_fmOnDirectList(h, port)) return FM_PROXY;
    if (/^(https|wss):/i.test(url) && !_fmContains(FM_CONNECT_PORTS, port)) return FM_PROXY;
    return _fmAllowed(h, port) ? "DIRECT" : FM_PROXY;
}

function _fmHost(host) {
    var h = String(host).toLowerCase();
    if (h.charAt(0) === "[" && h.charAt(h.length - 1) === "]") h = h.substring(1, h.length - 1);
    if (h.charAt(h.length - 1) === ".") h = h.substring(0, h.length - 1);
    return _fmIsIPv6(h) ? _fmUnwrap(h) : h;
}

// An IPv6 literal that reaches an IPv4 address is that address, as the proxy reads it:
// mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96 and the old compatible ::a.b.c.d.
function _fmUnwrap(h) {
    var g = _fmIPv6Groups(h);
    if (g === null || g[2] !== 0 || g[3] !== 0 || g[4] !== 0) return h;
    var mapped = g[0] === 0 && g[1] === 0 && g[5] === 0xffff;
    var nat64 = g[0] === 0x64 && g[1] === 0xff9b && g[5] === 0;
    var compat = g[0] === 0 && g[1] === 0 && g[5] === 0 && (g[6] !== 0 || g[7] > 1);
    if (!mapped && !nat64 && !compat) return h;
    return (g[6] >> 8) + "." + (g[6] & 255) + "." + (g[7] >> 8) + "." + (g[7] & 255);
}

function _fmPort(url) {
    var m = /^([a-z][a-z0-9+.\-]*):\/\/(?:[^\/?#@]*@)?(\[[^\]]*\]|[^\/?#:]*)(?::(\d+))?/i.exec(url);
    if (!m) return 0;
    if (m[3]) return parseInt(m[3], 10);
    var scheme = m[1].toLowerCase();
    if (scheme === "https" || scheme === "wss") return 443;
    return scheme === "ftp" ? 21 : 80;
}

function _fmContains(list, value) {
    for (var i = 0; i < list.length; i++) if (list[i] === value) return true;
    return false;
}

// The direct list: names by name, networks on address literals only (no DNS lookup).
function _fmOnDirectList(h, port) {
    for (var i = 0; i < FM_DIRECT.length; i++) {
        if (_fmMatch(FM_DIRECT[i], h, port, false) === true) return true;
    }
    return false;
}

// The proxy's destination rules: first match wins, default allow. A rule that cannot be
// decided here (null) counts as matching if it denies and as not matching if it allows.
function _fmAllowed(h, port) {
    for (var i = 0; i < FM_RULES.length; i++) {
        var hit = _fmMatch(FM_RULES[i][1], h, port, true);
        if (hit === null) {
            if (FM_RULES[i][0] === "deny") return false;
        } else if (hit) {
            return FM_RULES[i][0] === "allow";
        }
    }
    return true;
}

// true, false, or null when only an IPv6 lookup of a name could tell.
function _fmMatch(m, h, port, resolve) {
    var kind = m[0];
    if (kind === "all") return true;
    if (kind === "port") return port >= m[1] && port <= m[2];
    if (kind === "domain") {
        if (_fmIsIPv4(h) || _fmIsIPv6(h)) return false;  // names only, as the proxy
        return (m[2] === true && h === m[1]) || (m[3] === true && dnsDomainIs(h, "." + m[1]));
    }
    if (kind === "net4") {
        if (_fmIsIPv4(h)) return isInNet(h, m[1], m[2]);
        if (!resolve || _fmIsIPv6(h)) return false;
        return isInNet(h, m[1], m[2]);  // resolves the name, as the proxy would
    }
    if (kind === "net6") {
        if (_fmIsIPv6(h)) return _fmInNet6(h, m[1], m[2]);
        if (!resolve || _fmIsIPv4(h)) return false;
        return _fmNameInNet6(h, m[1], m[2]);
    }
    return null;
}

// Only Microsoft's IPv6 extension dnsResolveEx (Chromium, IE/WinHTTP) lists a name's
// IPv6 addresses; without it the answer is unknown (null).
function _fmNameInNet6(h, net, prefix) {
    if (typeof dnsResolveEx !== "function") return null;
    var all = String(dnsResolveEx(h) || "").toLowerCase().split(";");
    for (var i = 0; i < all.length; i++) {
        if (_fmIsIPv6(all[i]) && _fmInNet6(all[i], net, prefix)) return true;
    }
    return false;
}

function _fmIsIPv4(h) {
    return /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

function _fmIsIPv6(h) {
    return h.indexOf(":") >= 0 && /^[0-9a-f:.]+$/.test(h);
}

function _fmInNet6(h, net, prefix) {
    var g = _fmIPv6Groups(h);
    if (g === null) return false;
    for (var i = 0; i < 8 && prefix > 0; i++, prefix -= 16) {
        var mask = (0xffff << (16 - (prefix >= 16 ? 16 : prefix))) & 0xffff;
        if ((g[i] & mask) !== (net[i] & mask)) return false;
    }
    return true;
}

function _fmIPv6Groups(h) {
    var halves = h.split("::");
    if (halves.length > 2) return null;
    var head = _fmIPv6Part(halves[0]);
    var tail = halves.length === 2 ? _fmIPv6Part(halves[1]) : [];
    if (head === null || tail === null) return null;
    var fill = 8 - head.length - tail.length;
    if (halves.length === 2 ? fill < 1 : fill !== 0) return null;
    var out = head;
    for (var i = 0; i < fill; i++) out.push(0);
    for (var j = 0; j < tail.length; j++) out.push(tail[j]);
    return out;
}

function _fmIPv6Part(s) {
    var out = [];
    if (s === "") return out;
    var bits = s.split(":");
    for (var i = 0; i < bits.length; i++) {
        var b = bits[i];
        if (i === bits.length - 1 && _fmIsIPv4(b)) {  // ::ffff:192.0.2.1
            var q = b.split(".");
            for (var k = 0; k < 4; k++) if (parseInt(q[k], 10) > 255) return null;
            out.push(parseInt(q[0], 10) * 256 + parseInt(q[1], 10));
            out.push(parseInt(q[2], 10) * 256 + parseInt(q[3], 10));
        } else if (/^[0-9a-f]{1,4}$/.test(b)) {
            out.push(parseInt(b, 16));
        } else {
            return null;
        }
    }
    return out;
}
"""
