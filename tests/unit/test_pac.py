"""proxy/pac.py: the generated PAC file, run in a real JavaScript engine (node).

The script runs in a fresh `vm` context that holds only the PAC standard's helpers
(_STUBS), with `dnsResolve` answering from a table and recording every lookup.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ferryman.config.schema import DestinationRule, ForwardSpec, PacSpec
from ferryman.filters.destination import DestinationPolicy, parse_host
from ferryman.proxy.pac import PAC_MEDIA_TYPE, compile_value, pac_body, proxy_address, render_pac

PROXY = "PROXY proxy.test:3128"

# The PAC standard's helpers, as Mozilla's reference (ascii_pac_utils.js) writes them;
# dnsResolve answers from HOSTS and records each lookup. The ES5 array and string
# methods go first: Windows runs PAC files in ES3 JScript.
_STUBS = r"""
delete Array.prototype.indexOf; delete Array.prototype.forEach;
delete Array.prototype.map; delete Array.prototype.filter; delete String.prototype.trim;
function dnsResolve(host) {
    LOOKUPS.push(host);
    return Object.prototype.hasOwnProperty.call(HOSTS, host) ? HOSTS[host] : null;
}
function dnsDomainIs(host, domain) {
    return host.length >= domain.length &&
        host.substring(host.length - domain.length) == domain;
}
function shExpMatch(url, pattern) {
    pattern = pattern.replace(/\./g, "\\.").replace(/\*/g, ".*").replace(/\?/g, ".");
    return new RegExp("^" + pattern + "$").test(url);
}
function isPlainHostName(host) { return host.search(/\./) == -1; }
function convert_addr(ipchars) {
    var bytes = ipchars.split(".");
    return ((bytes[0] & 0xff) << 24) | ((bytes[1] & 0xff) << 16) |
        ((bytes[2] & 0xff) << 8) | (bytes[3] & 0xff);
}
function isInNet(ipaddr, pattern, maskstr) {
    var test = /^(\d{1,4})\.(\d{1,4})\.(\d{1,4})\.(\d{1,4})$/.exec(ipaddr);
    if (test == null) {
        ipaddr = dnsResolve(ipaddr);
        if (ipaddr == null) return false;
    } else if (test[1] > 255 || test[2] > 255 || test[3] > 255 || test[4] > 255) {
        return false;
    }
    var host = convert_addr(ipaddr), pat = convert_addr(pattern), mask = convert_addr(maskstr);
    return (host & mask) == (pat & mask);
}
"""
_STUB_EX = r"""
function dnsResolveEx(host) {
    LOOKUPS.push(host + " (ex)");
    return Object.prototype.hasOwnProperty.call(HOSTS6, host) ? HOSTS6[host] : "";
}
"""
_NODE_PROGRAM = r"""
const vm = require("vm");
const job = JSON.parse(require("fs").readFileSync(0, "utf8"));
const ctx = {HOSTS: job.hosts, HOSTS6: job.hosts6, LOOKUPS: []};
vm.createContext(ctx);
vm.runInContext(job.stubs, ctx, {filename: "pac-stubs.js"});
vm.runInContext(job.pac, ctx, {filename: "proxy.pac"});
const answers = job.cases.map(([url, host]) => ctx.FindProxyForURL(url, host));
process.stdout.write(JSON.stringify({answers, lookups: ctx.LOOKUPS}));
"""


@dataclass
class PacRun:
    answers: list[str]
    lookups: list[str]


def run_pac(
    pac: str,
    cases: list[tuple[str, str]],
    hosts: dict[str, str] | None = None,
    *,
    hosts6: dict[str, str] | None = None,
) -> PacRun:
    """FindProxyForURL(url, host) for each case, in node; `hosts6` set: the engine
    has dnsResolveEx answering from it."""
    node = shutil.which("node")
    assert node is not None, "node is needed to run the PAC tests"
    stubs = _STUBS + (_STUB_EX if hosts6 is not None else "")
    job = {"pac": pac, "stubs": stubs, "cases": cases, "hosts": hosts or {}, "hosts6": hosts6 or {}}
    done = subprocess.run(
        [node, "-e", _NODE_PROGRAM],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return PacRun(out["answers"], out["lookups"])


def _spec(*rules: tuple[str, str], direct: tuple[str, ...], ports: tuple[int, ...]) -> ForwardSpec:
    return ForwardSpec(
        connect_ports=ports,
        destinations=tuple(DestinationRule(a, v) for a, v in rules),
        pac=PacSpec(direct=direct),
    )


SPEC = _spec(
    ("deny", ".ads.example"),
    ("deny", "port:25"),
    ("allow", "10.1.2.0/24"),
    ("deny", "10.1.0.0/16"),
    ("deny", "192.0.2.128/25"),
    ("deny", "*.blocked.corp.example"),
    direct=(
        "localhost",
        "*.localhost",
        "127.0.0.0/8",
        "::1",
        ".corp.example",
        "ads.example",
        "10.0.0.0/8",
        "192.0.2.0/24",
        "2001:db8::/32",
    ),
    ports=(443, 8443),
)

HOSTS = {
    "wiki.corp.example": "192.0.2.5",
    "corp.example": "192.0.2.6",
    "bad.corp.example": "192.0.2.200",  # resolves into the denied 192.0.2.128/25
    "lab.corp.example": "10.1.9.9",  # into the denied 10.1.0.0/16
    "build.corp.example": "10.1.2.3",  # into the allowed 10.1.2.0/24 (first match)
}

TABLE: list[tuple[str, str, str]] = [
    # not on the direct list: always the proxy, whatever the rules say
    ("http://example.com/", "example.com", PROXY),
    ("https://example.com/", "example.com", PROXY),
    ("http://x.ads.example/", "x.ads.example", PROXY),
    ("http://[2001:db9::1]/", "2001:db9::1", PROXY),
    ("http://10.0.0.1.nip.example/", "10.0.0.1.nip.example", PROXY),
    # the loopback defaults
    ("http://localhost:8080/x?y", "localhost", "DIRECT"),
    ("http://LOCALHOST./", "LOCALHOST.", "DIRECT"),
    ("http://app.localhost/", "app.localhost", "DIRECT"),
    ("http://127.0.0.5:9000/", "127.0.0.5", "DIRECT"),
    ("http://[::1]:8000/", "::1", "DIRECT"),
    ("http://[::1]:8000/", "[::1]", "DIRECT"),
    # CONNECT ports: an https URL on a port the proxy would refuse goes to the proxy
    ("https://localhost/", "localhost", "DIRECT"),
    ("https://localhost:8443/", "localhost", "DIRECT"),
    ("https://localhost:9443/", "localhost", PROXY),
    ("wss://localhost:9443/", "localhost", PROXY),
    ("http://localhost:9443/", "localhost", "DIRECT"),
    # `.corp.example`: the name and its subdomains
    ("http://corp.example/", "corp.example", "DIRECT"),
    ("http://wiki.corp.example/", "wiki.corp.example", "DIRECT"),
    ("http://Wiki.Corp.Example./", "Wiki.Corp.Example.", "DIRECT"),
    # ...but the proxy's rules win: port, domain, resolved-address denials
    ("http://wiki.corp.example:25/", "wiki.corp.example", PROXY),
    ("http://x.blocked.corp.example/", "x.blocked.corp.example", PROXY),
    ("http://bad.corp.example/", "bad.corp.example", PROXY),
    ("http://lab.corp.example/", "lab.corp.example", PROXY),
    ("http://build.corp.example/", "build.corp.example", "DIRECT"),
    ("http://nxdomain.corp.example/", "nxdomain.corp.example", "DIRECT"),
    # `ads.example` is on the direct list and denied by `.ads.example`: the proxy
    ("http://ads.example/", "ads.example", PROXY),
    # address literals on direct networks, with the rules applied
    ("http://10.9.9.9/", "10.9.9.9", "DIRECT"),
    ("http://10.1.2.3/", "10.1.2.3", "DIRECT"),
    ("http://10.1.7.7/", "10.1.7.7", PROXY),
    ("http://192.0.2.7/", "192.0.2.7", "DIRECT"),
    ("http://192.0.2.200/", "192.0.2.200", PROXY),
    # an IPv6 literal that reaches an IPv4 address is that address (as the proxy reads it)
    ("http://[::ffff:192.0.2.200]/", "::ffff:192.0.2.200", PROXY),
    ("http://[::ffff:c000:2c8]/", "::ffff:c000:2c8", PROXY),
    ("http://[::ffff:c000:207]/", "::ffff:c000:207", "DIRECT"),
    ("http://[2001:db8::1]/", "2001:db8::1", "DIRECT"),
    ("http://[2001:DB8:0:0:0:0:0:2]:81/", "2001:DB8:0:0:0:0:0:2", "DIRECT"),
]


def test_generated_pac_answers_the_table() -> None:
    pac = render_pac(SPEC, "proxy.test:3128")
    run = run_pac(pac, [(url, host) for url, host, _ in TABLE], HOSTS)
    got = {(url, host): answer for (url, host, _), answer in zip(TABLE, run.answers, strict=True)}
    want = {(url, host): answer for url, host, answer in TABLE}
    assert got == want


def test_only_direct_candidates_are_resolved() -> None:
    # A DNS lookup in a PAC file stalls the browser: none for hosts that go to the proxy
    # anyway, nor for literals.
    pac = render_pac(SPEC, "proxy.test:3128")
    cases = [
        ("http://example.com/", "example.com"),
        ("http://x.ads.example/", "x.ads.example"),
        ("http://10.1.7.7/", "10.1.7.7"),
        ("http://wiki.corp.example:25/", "wiki.corp.example"),
        ("http://bad.corp.example/", "bad.corp.example"),
    ]
    run = run_pac(pac, cases, HOSTS)
    assert run.answers == [PROXY] * 5
    # wiki:25 is decided by `port:25` before any address rule; bad.corp.example is a
    # direct candidate, so its address is looked up (the rule for 10.1.2.0/24 first).
    assert set(run.lookups) == {"bad.corp.example"}


def test_no_rules_means_direct_for_the_direct_list_only() -> None:
    spec = ForwardSpec()  # defaults: connect 443, no rules, loopback direct
    pac = render_pac(spec, "127.0.0.1:3128")
    run = run_pac(
        pac,
        [
            ("http://localhost/", "localhost"),
            ("http://127.0.0.1:8000/", "127.0.0.1"),
            ("https://localhost/", "localhost"),
            ("https://localhost:8443/", "localhost"),
            ("http://example.com/", "example.com"),
            ("http://10.0.0.1/", "10.0.0.1"),
        ],
    )
    p = "PROXY 127.0.0.1:3128"
    assert run.answers == ["DIRECT", "DIRECT", "DIRECT", p, p, p]
    assert run.lookups == []


def test_ipv6_deny_rule_against_a_name() -> None:
    spec = _spec(("deny", "2001:db8:bad::/48"), direct=(".corp.example",), ports=(443,))
    pac = render_pac(spec, "proxy.test:3128")
    cases = [
        ("http://good.corp.example/", "good.corp.example"),
        ("http://evil.corp.example/", "evil.corp.example"),
        ("http://[2001:db8:bad::7]/", "2001:db8:bad::7"),
    ]
    # Without dnsResolveEx a name's IPv6 addresses are unknown: the deny counts.
    plain = run_pac(pac, cases)
    assert plain.answers == [PROXY, PROXY, PROXY]
    # With it (Chromium), the name's addresses decide.
    hosts6 = {
        "good.corp.example": "2001:db8:1::5;192.0.2.5",
        "evil.corp.example": "2001:db8:bad::9",
    }
    ex = run_pac(pac, cases[:2], hosts6=hosts6)
    assert ex.answers == ["DIRECT", PROXY]
    assert ex.lookups == ["good.corp.example (ex)", "evil.corp.example (ex)"]


# Hosts as a client writes them, with what they resolve to (None: an address literal).
_GRID_HOSTS: list[tuple[str, str | None]] = [
    ("example.com", "93.184.216.34"),
    ("ads.example", "198.51.100.1"),
    ("x.ads.example", "198.51.100.2"),
    ("ads.example.net", "198.51.100.3"),
    ("www.shop.test", "203.0.113.9"),
    ("shop.test", "203.0.113.10"),
    ("intranet.test", "10.1.2.3"),
    ("lab.test", "10.1.9.9"),
    ("loop.test", "127.0.0.1"),
    ("10.1.2.3", None),
    ("10.1.3.3", None),
    ("203.0.113.77", None),
    ("127.0.0.1", None),
    ("::ffff:a01:203", None),
    ("2001:db8::1", None),
    ("2001:db8:bad::1", None),
    ("fe80::1", None),
]
_GRID_PORTS = (80, 25, 8000, 8080, 9000)
_GRID_RULES = (
    ("deny", ".ads.example"),
    ("allow", "*.shop.test"),
    ("deny", "shop.test"),
    ("deny", "port:8000-8999"),
    ("deny", "port:25"),
    ("allow", "10.1.2.0/24"),
    ("deny", "10.0.0.0/8"),
    ("deny", "2001:db8:bad::/48"),
    ("allow", "203.0.113.0/24"),
    ("deny", "all"),
)


@pytest.mark.parametrize("tail", [len(_GRID_RULES), 9, 6, 3, 0])
def test_pac_allows_exactly_what_the_proxy_allows(tail: int) -> None:
    # Differential: with every host a direct candidate (`all`), the PAC says DIRECT
    # exactly when the proxy's own policy (filters/destination.py) would let the
    # request through, the private-address default left out (see pac.py).
    rules = _GRID_RULES[:tail]
    spec = _spec(*rules, direct=("all",), ports=(443,))
    policy = DestinationPolicy(spec.destinations, allow_private=True)
    cases, want = [], []
    hosts = {name: addr for name, addr in _GRID_HOSTS if addr is not None}
    hosts6 = {name: "" for name in hosts}  # the names have no IPv6 address
    for host, resolved in _GRID_HOSTS:
        parsed = parse_host(host)
        assert parsed is not None
        for port in _GRID_PORTS:
            url_host = f"[{host}]" if ":" in host else host
            cases.append((f"http://{url_host}:{port}/", host))
            if isinstance(parsed, str):
                assert resolved is not None
                decision = policy.check_address(parsed, ipaddress.ip_address(resolved), port)
            else:
                decision = policy.check_address(None, parsed, port)
            want.append("DIRECT" if decision.allowed else PROXY)
    run = run_pac(render_pac(spec, "proxy.test:3128"), cases, hosts, hosts6=hosts6)
    mismatches = [
        (case, got, exp)
        for case, got, exp in zip(cases, run.answers, want, strict=True)
        if got != exp
    ]
    assert mismatches == []
    assert "DIRECT" in run.answers or tail == len(_GRID_RULES)


def test_every_proxied_answer_is_the_proxy_alone() -> None:
    pac = render_pac(SPEC, "proxy.test:3128")
    # Fail closed: no "; DIRECT" after the proxy anywhere in the script.
    code = "\n".join(line.split("//")[0] for line in pac.splitlines())
    assert code.replace("FM_DIRECT", "").count("DIRECT") == 1  # the one `return "DIRECT"`
    assert f'var FM_PROXY = "{PROXY}";' in pac
    for word in ("let ", "const ", "=>", "`"):  # ES3 for WinHTTP's JScript
        assert word not in pac


def test_configured_values_stay_data() -> None:
    # A value with quotes or JavaScript line separators cannot end the string literal.
    odd = 'p"x\u2028y</script>:1'
    pac = render_pac(SPEC, odd)
    run = run_pac(pac, [("http://example.com/", "example.com")])
    assert run.answers == [f"PROXY {odd}"]
    pac.encode("ascii")  # all escaped


@pytest.mark.parametrize(
    ("host", "want"),
    [
        (b"proxy.corp.example:3128", "proxy.corp.example:3128"),
        (b"proxy.corp.example", "proxy.corp.example:80"),
        (b"10.0.0.7:8080", "10.0.0.7:8080"),
        (b"[::1]:3128", "[::1]:3128"),
        (b'evil";alert(1)//:3128', "ferry.test:3128"),
        (b"proxy.example:99999", "ferry.test:3128"),
        (b"proxy.example:+80", "ferry.test:3128"),
        (b"proxy.example:0", "ferry.test:3128"),
        (b"", "ferry.test:3128"),
        (None, "ferry.test:3128"),
    ],
)
def test_proxy_address_from_the_host_field(host: bytes | None, want: str) -> None:
    assert proxy_address(PacSpec(), host, b"ferry.test", b"3128") == want


def test_configured_proxy_address_wins() -> None:
    pac = PacSpec(proxy="proxy.public.example:8080")
    assert proxy_address(pac, b"127.0.0.1:3128", b"x", b"1") == "proxy.public.example:8080"


@dataclass
class _Head:
    host: bytes | None


@dataclass
class _Request:
    head: _Head
    server_name: bytes = b"ferry.test"
    server_port: bytes = b"3128"


def test_pac_body_generates_for_the_requests_host() -> None:
    body = pac_body(SPEC, _Request(_Head(b"gw.example:3128")))
    run = run_pac(body.decode("ascii"), [("http://example.com/", "example.com")])
    assert run.answers == ["PROXY gw.example:3128"]
    assert PAC_MEDIA_TYPE == "application/x-ns-proxy-autoconfig"


def test_pac_body_serves_a_configured_file(tmp_path: Path) -> None:
    path = tmp_path / "site.pac"
    path.write_bytes(b'function FindProxyForURL(u, h) { return "PROXY site:1"; }\n')
    spec = replace(SPEC, pac=PacSpec(file=str(path)))
    assert pac_body(spec, _Request(_Head(b"x:1"))) == path.read_bytes()


@pytest.mark.parametrize(
    ("value", "matcher"),
    [
        ("all", ["all"]),
        ("port:25", ["port", 25, 25]),
        ("port:8000-8999", ["port", 8000, 8999]),
        ("10.1.2.0/24", ["net4", "10.1.2.0", "255.255.255.0"]),
        ("10.1.2.3", ["net4", "10.1.2.3", "255.255.255.255"]),
        ("[::1]", ["net6", [0, 0, 0, 0, 0, 0, 0, 1], 128]),
        ("2001:db8::/32", ["net6", [0x2001, 0xDB8, 0, 0, 0, 0, 0, 0], 32]),
        ("Example.COM.", ["domain", "example.com", True, False]),
        ("*.example.com", ["domain", "example.com", False, True]),
        (".example.com", ["domain", "example.com", True, True]),
    ],
)
def test_compile_value(value: str, matcher: list[object]) -> None:
    assert compile_value(value) == matcher


@pytest.mark.parametrize("value", ["port:0", "port:9-1", "port:+5", "a..b", "*", "ex ample.com"])
def test_bad_values_are_refused_with_where(value: str) -> None:
    spec = _spec(direct=("localhost", value), ports=(443,))
    with pytest.raises(ValueError, match=r"^pac\.direct\[1\]: "):
        render_pac(spec, "p:1")
    spec = _spec(("deny", value), direct=(), ports=(443,))
    with pytest.raises(ValueError, match=r"^destinations\[0\]: "):
        render_pac(spec, "p:1")
