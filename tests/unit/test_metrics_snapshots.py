"""observability/metrics.py: per-worker counting, snapshots, folding of exited workers,
and the Prometheus exposition, read back with prometheus_client's own text parser."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ferryman.observability.metrics import (
    BUCKETS,
    WorkerMetrics,
    aggregate,
    render,
    retire,
    route_entry,
)


class FakeRoute:
    """Hashable by identity, like proxy/route.py's Route."""

    def __init__(self, path: str, upstream: str | None) -> None:
        self.spec = SimpleNamespace(path=path, upstream=upstream)


def exchange(route: FakeRoute | None, status: int = 200, **kw: Any) -> SimpleNamespace:
    fields: dict[str, Any] = {
        "route": route,
        "server": SimpleNamespace(names=("example.com",)),
        "status": status,
        "received": 0,
        "body_bytes": 10,
        "started": 100.0,
        "upstream_start": 100.001,
        "tries": 1,
        "cache_op": None,
    }
    fields.update(kw)
    return SimpleNamespace(**fields)


def record(
    m: WorkerMetrics, ex: SimpleNamespace, now: float, cache: tuple[str, str] | None = None
) -> None:
    """Count `ex` as the exchange's end of life does (Exchange._log_access); `cache` is
    what its CacheOp.metric_key gives."""
    m.count(
        ex.route,
        ex.status,
        ex.received,
        ex.body_bytes,
        ex.started,
        ex.upstream_start,
        now,
        max(ex.tries - 1, 0),
        cache,
        ex,
    )


def families(text: bytes) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def sample(fams: dict[str, Any], family: str, name: str, **labels: str) -> float:
    for s in fams[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise KeyError((family, name, labels))


def test_requests_by_route_and_code_summed_across_workers(tmp_path: Path) -> None:
    route = FakeRoute("/api/", "app")
    a, b = WorkerMetrics(str(tmp_path)), WorkerMetrics(str(tmp_path))
    b._path = str(tmp_path / "w-other.bin")  # two workers in one test process
    for _ in range(3):
        record(a, exchange(route, received=5), 100.004)
    record(b, exchange(route, 502), 100.2)
    record(b, exchange(None, 404, upstream_start=0.0), 100.001)
    a.flush(force=True)
    b.flush(force=True)
    fams = families(render(str(tmp_path)))
    labels = {"server": "example.com", "location": "/api/", "upstream": "app"}
    assert sample(fams, "ferryman_requests", "ferryman_requests_total", code="200", **labels) == 3
    assert sample(fams, "ferryman_requests", "ferryman_requests_total", code="502") == 1
    assert sample(fams, "ferryman_requests", "ferryman_requests_total", **{"class": "5xx"}) == 1
    no_route = sample(fams, "ferryman_requests", "ferryman_requests_total", code="404")
    assert no_route == 1
    body_in = "ferryman_request_body_bytes_total"
    assert sample(fams, "ferryman_request_body_bytes", body_in, **labels) == 15
    out = "ferryman_response_body_bytes_total"
    assert sample(fams, "ferryman_response_body_bytes", out, **labels) == 40
    hist = "ferryman_request_duration_seconds"
    assert sample(fams, hist, hist + "_count", **labels) == 4
    # 3 requests took 4 ms (<= 5 ms), the 502 took 200 ms.
    assert sample(fams, hist, hist + "_bucket", le="0.005", **labels) == 3
    assert sample(fams, hist, hist + "_bucket", le="0.25", **labels) == 4
    assert sample(fams, hist, hist + "_bucket", le="+Inf", **labels) == 4
    up = "ferryman_upstream_duration_seconds"
    assert sample(fams, up, up + "_count", **labels) == 4
    assert sample(fams, "ferryman_workers", "ferryman_workers") == 2


def test_buckets_are_cumulative_and_le_inclusive(tmp_path: Path) -> None:
    m = WorkerMetrics(str(tmp_path))
    route = FakeRoute("/", "app")
    for took in (BUCKETS[0], BUCKETS[0] + 1e-6, 11.0):
        record(m, exchange(route, started=100.0, upstream_start=0.0), 100.0 + took)
    m.flush(force=True)
    fams = families(render(str(tmp_path)))
    hist = "ferryman_request_duration_seconds"
    assert sample(fams, hist, hist + "_bucket", le="0.005") == 1
    assert sample(fams, hist, hist + "_bucket", le="0.01") == 2
    assert sample(fams, hist, hist + "_bucket", le="10.0") == 2
    assert sample(fams, hist, hist + "_bucket", le="+Inf") == 3
    # Nothing reached an upstream: no upstream histogram series at all.
    assert not fams["ferryman_upstream_duration_seconds"].samples


def test_retired_worker_counters_stay_gauges_go(tmp_path: Path) -> None:
    m = WorkerMetrics(str(tmp_path))
    m.connections = lambda: 7
    route = FakeRoute("/", "app")
    record(m, exchange(route, tries=3), 100.01)
    m.flush(force=True)
    assert aggregate(str(tmp_path)).connections == 7
    retire(str(tmp_path), os.getpid())
    assert not (tmp_path / f"w-{os.getpid()}.bin").exists()
    # A second worker that exits later adds to the retired totals.
    record(m, exchange(route), 100.01)
    m.flush(force=True)
    retire(str(tmp_path), os.getpid())
    fams = families(render(str(tmp_path)))
    assert sample(fams, "ferryman_requests", "ferryman_requests_total", code="200") == 3
    assert sample(fams, "ferryman_upstream_retries", "ferryman_upstream_retries_total") == 4
    assert sample(fams, "ferryman_connections_active", "ferryman_connections_active") == 0
    assert sample(fams, "ferryman_workers", "ferryman_workers") == 0


def test_denials_by_filter_and_zone(tmp_path: Path) -> None:
    m = WorkerMetrics(str(tmp_path))
    m.record_deny('limiting requests by zone "api"')
    m.record_deny('limiting requests by zone "api"')
    m.record_deny('limiting connections by zone "perip"')
    m.record_deny("access forbidden by rule servers[0].access[1]")
    m.record_deny("user 'bob': password mismatch")
    m.flush(force=True)
    fams = families(render(str(tmp_path)))
    name = "ferryman_rejections_total"
    assert sample(fams, "ferryman_rejections", name, filter="limit_req", rule="api") == 2
    assert sample(fams, "ferryman_rejections", name, filter="limit_conn", rule="perip") == 1
    rule = "servers[0].access[1]"
    assert sample(fams, "ferryman_rejections", name, filter="access", rule=rule) == 1
    assert sample(fams, "ferryman_rejections", name, filter="auth") == 1


def test_cache_results(tmp_path: Path) -> None:
    m = WorkerMetrics(str(tmp_path))
    route = FakeRoute("/", "app")
    for key in (
        ("pages", "hit"),
        ("pages", "hit"),
        ("pages", "miss"),
        ("pages", "miss"),
        ("pages", "bypass"),
        ("pages", "revalidated"),
        ("pages", "expired"),
        ("img", "hit"),
        None,  # a request the route does not cache: not counted
    ):
        record(m, exchange(route), 100.01, key)
    m.flush(force=True)
    fams = families(render(str(tmp_path)))
    name = "ferryman_cache_requests_total"
    counts = {
        (s.labels["zone"], s.labels["result"]): s.value
        for s in fams["ferryman_cache_requests"].samples
        if s.name == name
    }
    assert counts == {
        ("pages", "hit"): 2,
        ("pages", "miss"): 2,
        ("pages", "bypass"): 1,
        ("pages", "revalidated"): 1,
        ("pages", "expired"): 1,
        ("img", "hit"): 1,
    }


def test_peers_in_flight_summed_up_from_newest_generation(tmp_path: Path) -> None:
    def peer(name: str, active: int, down_until: float = 0.0) -> Any:
        return SimpleNamespace(
            name=name,
            active=active,
            probe_down=False,
            spec=SimpleNamespace(down=False),
            health=SimpleNamespace(unavailable_until=down_until),
        )

    old = WorkerMetrics(str(tmp_path), generation=0)
    old._path = str(tmp_path / "w-old.bin")
    old.groups = {"app": SimpleNamespace(peers=[peer("a:1", 2, down_until=1e12), peer("b:1", 0)])}
    new = WorkerMetrics(str(tmp_path), generation=1)
    new.groups = {"app": SimpleNamespace(peers=[peer("a:1", 1), peer("b:1", 0, 1e12)])}
    old.flush(force=True)
    new.flush(force=True)
    fams = families(render(str(tmp_path)))
    up = "ferryman_upstream_peer_up"
    # Health as the newest generation sees it; in-flight counts every live worker.
    assert sample(fams, up, up, upstream="app", peer="a:1") == 1
    assert sample(fams, up, up, upstream="app", peer="b:1") == 0
    flight = "ferryman_upstream_peer_in_flight"
    assert sample(fams, flight, flight, upstream="app", peer="a:1") == 3


def test_flush_is_rate_limited_and_route_entry_serves_text(tmp_path: Path) -> None:
    m = WorkerMetrics(str(tmp_path))
    route = FakeRoute("/", "app")
    record(m, exchange(route), 100.01)
    m.flush()
    record(m, exchange(route), 100.01)
    m.flush()  # within a second of the last: not written
    key, handler = route_entry(str(tmp_path))
    assert key == ("GET", "/metrics")
    status, headers, body = handler(None)
    assert status == 200
    assert headers[0][1].startswith("text/plain; version=0.0.4")
    fams = families(body)
    assert sample(fams, "ferryman_requests", "ferryman_requests_total") == 1
    m.flush(force=True)
    fams = families(route_entry(str(tmp_path))[1](None)[2])
    assert sample(fams, "ferryman_requests", "ferryman_requests_total") == 2


def test_render_of_an_empty_or_missing_directory(tmp_path: Path) -> None:
    fams = families(render(str(tmp_path / "absent")))
    assert sample(fams, "ferryman_workers", "ferryman_workers") == 0
    (tmp_path / "w-1.bin").write_bytes(b"not marshal")
    fams = families(render(str(tmp_path)))
    assert sample(fams, "ferryman_workers", "ferryman_workers") == 0


def test_bucket_scan_matches_bisect() -> None:
    from bisect import bisect_left

    from ferryman.observability.metrics import _bucket

    values = [0.0, 1e-6, *BUCKETS, *(b * 1.0001 for b in BUCKETS), 11.0, 1e9]
    values += [b * 0.9999 for b in BUCKETS]
    for v in values:
        assert _bucket(v) == bisect_left(BUCKETS, v), v


def _garbage_cycles(count: int) -> None:
    for _ in range(count):
        pair: list[Any] = []
        pair.append(pair)  # a list that holds itself: only the collector frees it


def test_gc_counters_count_this_workers_collections_and_survive_its_exit(
    tmp_path: Path,
) -> None:
    gc.collect()  # what came before the worker is not its work
    m = WorkerMetrics(str(tmp_path))
    m._path = str(tmp_path / "w-1.bin")
    gc.disable()
    try:
        _garbage_cycles(50)
        gc.collect(0)
        _garbage_cycles(30)
        gc.collect(2)
    finally:
        gc.enable()
    m.flush(force=True)
    fams = families(render(str(tmp_path)))
    runs, found = "ferryman_gc_collections", "ferryman_gc_collected_objects"
    assert sample(fams, runs, runs + "_total", generation="0") >= 1
    assert sample(fams, runs, runs + "_total", generation="2") >= 1
    assert sample(fams, found, found + "_total", generation="0") >= 50
    assert sample(fams, found, found + "_total", generation="2") >= 30
    before = sum(s.value for s in fams[found].samples if s.name == found + "_total")
    # The worker exits: its counts are folded into the retired totals, not lost.
    retire(str(tmp_path), 1)
    assert not (tmp_path / "w-1.bin").exists()
    fams = families(render(str(tmp_path)))
    assert sum(s.value for s in fams[found].samples if s.name == found + "_total") == before
