"""The cluster bus's messages (cluster/bus.py) and the shared cache's entry format
(cluster/cache.py), without Redis: received messages go into the real shared tables,
sent ones are recorded instead of published."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from ferryman.cache.entry import EntryMeta
from ferryman.cluster.bus import PROBE_HOLD, ClusterBus
from ferryman.cluster.cache import pack_entry, unpack_entry
from ferryman.cluster.limiter import redis_key
from ferryman.config.schema import ClusterSpec
from ferryman.health.shared import SharedHealth
from ferryman.upstream.overrides import SharedOverrides

PEERS = {"app/10.0.0.1:80": 0, "app/10.0.0.2:80": 1}


@dataclass
class FakeClient:
    spec: ClusterSpec = field(default_factory=lambda: ClusterSpec(url="redis://h"))
    available: bool = True


class FakeStore:
    zone = "c"

    def __init__(self) -> None:
        self.forgotten: list[tuple[str, bool]] = []
        self.on_purge: Any = None

    def forget(self, key: str, prefix: bool) -> int:
        self.forgotten.append((key, prefix))
        return 1


def make_bus(lead: bool = True, now: float = 100.0) -> tuple[ClusterBus, list[dict[str, Any]]]:
    bus = ClusterBus(FakeClient(), "me", lead=lead, clock=lambda: now)  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []
    bus._send = sent.append  # type: ignore[method-assign]
    return bus, sent


def msg(**fields: Any) -> bytes:
    return json.dumps({"i": "other", **fields}).encode()


def test_a_peer_another_instance_saw_fail_goes_into_the_health_table() -> None:
    health = SharedHealth(2)
    bus, _ = make_bus()
    bus.share_health(health, PEERS)
    bus.handle(msg(t="down", p="app/10.0.0.2:80", s=7.5))
    assert health.down_until(1) == pytest.approx(107.5)
    assert health.down_until(0) == 0.0
    # Unknown peers, silly durations, junk, and our own messages change nothing.
    bus.handle(msg(t="down", p="app/10.0.0.9:80", s=5))
    bus.handle(msg(t="down", p="app/10.0.0.1:80", s=-1))
    bus.handle(msg(t="down", p="app/10.0.0.1:80", s=1e9))
    bus.handle(msg(t="down", p="app/10.0.0.1:80", s="5"))
    bus.handle(b"{not json")
    bus.handle(json.dumps({"i": "me", "t": "down", "p": "app/10.0.0.1:80", "s": 5}))
    assert health.down_until(0) == 0.0


def test_only_the_lead_worker_writes_health_and_overrides() -> None:
    health = SharedHealth(2)
    bus, _ = make_bus(lead=False)
    bus.share_health(health, PEERS)
    bus.handle(msg(t="down", p="app/10.0.0.1:80", s=5))
    assert health.down_until(0) == 0.0


def test_peers_failing_our_checks_are_announced_with_a_hold() -> None:
    health = SharedHealth(2)
    bus, sent = make_bus()
    bus.share_health(health, PEERS)
    bus.check_tables()
    assert sent == []
    health.set_probe_down(1, True)
    bus.check_tables()
    assert sent == [{"t": "down", "p": "app/10.0.0.2:80", "s": PROBE_HOLD}]


def test_overrides_made_here_are_sent_and_others_applied_without_echo() -> None:
    table = SharedOverrides(8)
    slots = {name: table.register("app", name.split("/")[1]) for name in PEERS}
    bus, sent = make_bus()
    bus.share_overrides(table, slots)
    bus.check_tables()
    assert sent == []
    table.set_drained(slots["app/10.0.0.1:80"], True)  # the admin API, here
    bus.check_tables()
    assert sent == [{"t": "ovr", "p": "app/10.0.0.1:80", "d": True, "w": 0}]
    sent.clear()
    bus.handle(msg(t="ovr", p="app/10.0.0.2:80", d=False, w=7))  # another instance's
    assert table.get(slots["app/10.0.0.2:80"]).weight == 7
    bus.check_tables()
    assert sent == []  # applying it is not news to send back
    bus.handle(msg(t="ovr", p="app/10.0.0.2:80", d=False, w=99999))  # out of range
    assert table.get(slots["app/10.0.0.2:80"]).weight == 7


def test_purges_reach_every_worker_store() -> None:
    bus, _ = make_bus(lead=False)
    store = FakeStore()
    bus.share_store(store)  # type: ignore[arg-type]
    assert store.on_purge == bus.announce_purge
    bus.handle(msg(t="purge", z="c", k="httpapp/x", x=False))
    bus.handle(msg(t="purge", z="c", k="httpapp/", x=True))
    bus.handle(msg(t="purge", z="other", k="httpapp/", x=True))
    assert store.forgotten == [("httpapp/x", False), ("httpapp/", True)]


def _meta(body: bytes) -> EntryMeta:
    return EntryMeta(
        key="httpapp/x",
        variant=b"gzip",
        status=200,
        headers=[(b"Content-Type", b"text/plain"), (b"ETag", b'"1"')],
        request_time=10.0,
        response_time=10.5,
        stored_at=10.5,
        lifetime=60.0,
        initial_age=0.0,
        etag=b'"1"',
        body_size=len(body),
        vary=(b"accept-encoding",),
    )


def test_entries_round_trip_and_malformed_ones_are_refused() -> None:
    body = b"hello" * 100
    data = pack_entry(_meta(body), body)
    meta, got = unpack_entry(data)
    assert meta == _meta(body) and got == body
    for bad in (b"", data[:3], data[:10], data[:-1], data + b"x", b"\0\0\0\2{}"):
        with pytest.raises(ValueError):
            unpack_entry(bad)


def test_limit_keys_hide_the_client_key_and_spread_over_cluster_slots() -> None:
    a = redis_key("ferryman", "lr", "zone", b"10.0.0.1")
    b = redis_key("ferryman", "lr", "zone", b"10.0.0.2")
    assert a.startswith("ferryman:lr:zone:{") and a.endswith("}")
    assert a != b and "10.0.0.1" not in a
    assert redis_key("ferryman", "lr", "zone", b"\r\n*" * 1000).count("\n") == 0
