"""filters/destination.py: host normalisation as browsers/libc read hosts, destination
rules (domain, wildcard, address/CIDR, port, all), and the SSRF defaults. Pure: no
sockets, no resolver."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from ferryman.config.schema import DestinationRule
from ferryman.filters.destination import (
    DestinationPolicy,
    compile_destinations,
    parse_host,
    special_kind,
)

LOOPBACK = ipaddress.ip_address("127.0.0.1")
PUBLIC = ipaddress.ip_address("93.184.216.34")


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "2130706433",  # decimal
        "0177.0.0.1",  # octal first part
        "0x7f.0.0.1",  # hex first part
        "0x7F000001",  # one hex number
        "017700000001",  # one octal number
        "127.1",  # a.b: b is 24 bits
        "127.0.1",  # a.b.c: c is 16 bits
        "0x7f.1",
        "127.0.0.1.",  # trailing dot
        "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
        "[::ffff:7f00:1]",
        "[64:ff9b::7f00:1]",  # NAT64
    ],
)
def test_loopback_spellings_normalise_to_127_0_0_1(text: str) -> None:
    assert parse_host(text) == LOOPBACK


def test_normalisation_agrees_with_inet_aton() -> None:
    # libc is the reference for the numeric forms it accepts.
    for text in ("2130706433", "0177.0.0.1", "0x7f.1", "127.1", "10.0x10.0377", "1.2.3"):
        packed = socket.inet_aton(text)
        assert parse_host(text) == ipaddress.IPv4Address(packed), text


@pytest.mark.parametrize(
    "text",
    ["256.0.0.1", "1.2.3.4.5", "0x100.0.0.1", "08.0.0.1", "1.2.3.256", "4294967296", "[::1"],
)
def test_invalid_numeric_hosts_are_refused(text: str) -> None:
    assert parse_host(text) is None


def test_names_are_lowercased_and_lose_the_trailing_dot() -> None:
    assert parse_host("WWW.Example.COM.") == "www.example.com"
    # A number that is not the last label does not make a name an address.
    assert parse_host("1.2.3.example") == "1.2.3.example"
    assert parse_host("[::1]") == ipaddress.ip_address("::1")


@pytest.mark.parametrize(
    ("addr", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.1.2", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("224.0.0.1", "multicast"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_special_addresses(addr: str, kind: str | None) -> None:
    assert special_kind(ipaddress.ip_address(addr)) == kind


def _policy(*rules: tuple[str, str], allow_private: bool = False) -> DestinationPolicy:
    return DestinationPolicy(tuple(DestinationRule(a, v) for a, v in rules), allow_private)


def test_default_allows_public_and_refuses_private() -> None:
    policy = _policy()
    assert policy.check_address("example.com", PUBLIC, 80).allowed
    refused = policy.check_address("rebind.example", LOOPBACK, 80)
    assert not refused.allowed
    assert "loopback" in refused.rule and "allow_private" in refused.rule
    # The rule text never carries the resolved address.
    assert "127.0.0.1" not in refused.rule


def test_allow_private_opens_them() -> None:
    decision = _policy(allow_private=True).check_address(None, LOOPBACK, 80)
    assert decision.allowed and "loopback" in decision.rule


def test_domain_rules_exact_wildcard_and_dot_forms() -> None:
    policy = _policy(("deny", "exact.test"), ("deny", "*.wild.test"), ("deny", ".both.test"))
    assert policy.check_name("exact.test", 80) is not None
    assert policy.check_name("sub.exact.test", 80) is None
    assert policy.check_name("a.wild.test", 80) is not None
    assert policy.check_name("a.b.wild.test", 80) is not None
    assert policy.check_name("wild.test", 80) is None
    assert policy.check_name("notwild.test", 80) is None
    assert policy.check_name("both.test", 80) is not None
    assert policy.check_name("x.both.test", 80) is not None
    denied = policy.check_name("a.wild.test", 80)
    assert denied is not None and denied.rule == "destinations[1] deny *.wild.test"


def test_first_match_wins() -> None:
    policy = _policy(("allow", "ok.ads.test"), ("deny", "*.ads.test"))
    assert policy.check_name("ok.ads.test", 80) is None
    assert policy.check_address("ok.ads.test", PUBLIC, 80).allowed
    assert not policy.check_address("x.ads.test", PUBLIC, 80).allowed


def test_port_rules() -> None:
    policy = _policy(("deny", "port:25"), ("deny", "port:6000-6010"))
    assert policy.check_name("mail.example", 25) is not None
    assert policy.check_name("x.example", 6005) is not None
    assert policy.check_name("x.example", 6011) is None
    assert not policy.check_address(None, PUBLIC, 25).allowed
    assert policy.check_address(None, PUBLIC, 80).allowed


def test_cidr_rules_apply_to_the_resolved_address() -> None:
    policy = _policy(("deny", "93.184.0.0/16"))
    # Undecidable before the lookup: the name must be resolved first.
    assert policy.check_name("example.com", 80) is None
    decision = policy.check_address("example.com", PUBLIC, 80)
    assert not decision.allowed and decision.rule == "destinations[0] deny 93.184.0.0/16"
    assert policy.check_address("other.com", ipaddress.ip_address("8.8.8.8"), 80).allowed


def test_an_address_allow_opens_a_private_address_but_a_domain_allow_does_not() -> None:
    by_address = _policy(("allow", "127.0.0.0/8"), ("deny", "all"))
    assert by_address.check_address("local.test", LOOPBACK, 80).allowed
    by_name = _policy(("allow", "*.corp.test"), ("deny", "all"))
    assert not by_name.check_address("db.corp.test", LOOPBACK, 80).allowed
    assert by_name.check_address("db.corp.test", PUBLIC, 80).allowed
    assert not by_name.check_address("other.test", PUBLIC, 80).allowed


def test_deny_all_after_an_allow_list() -> None:
    policy = _policy(("allow", ".example.com"), ("deny", "all"))
    assert policy.check_name("elsewhere.test", 80) is not None
    assert policy.check_name("www.example.com", 80) is None


@pytest.mark.parametrize(
    "value",
    ["port:0", "port:70000", "port:9-1", "port:+5", "port:1_0", "*.", "a..b", "x*y.test"],
)
def test_bad_rule_values_are_refused_at_load(value: str) -> None:
    with pytest.raises(ValueError, match=r"destinations\[0\]"):
        compile_destinations((DestinationRule("deny", value),))
