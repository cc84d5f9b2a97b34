"""observability/metrics.py's cluster part: Redis up per instance (the minimum over the
workers that know), failed calls and local fallbacks summed, folded across a worker's
exit like every counter, and the admin view (`cluster_status`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ferryman.observability.metrics import (
    FALLBACK_FEATURES,
    WorkerMetrics,
    aggregate,
    cluster_status,
    render,
    retire,
)


class FakeAgent:
    """ClusterAgent.status() as a worker reports it."""

    def __init__(self, **kw: Any) -> None:
        self.state: dict[str, Any] = {
            "address": "10.0.0.5:6379",
            "available": True,
            "checked": True,
            "failed_calls": 0,
            "fallbacks": {},
            "instances": 0,
        }
        self.state.update(kw)

    def status(self) -> dict[str, Any]:
        return dict(self.state)


def publish(directory: Path, name: str, agent: FakeAgent | None) -> None:
    metrics = WorkerMetrics(str(directory))
    metrics._path = str(directory / f"w-{name}.bin")  # one file per fake worker
    metrics.cluster = agent
    metrics.flush(force=True)


def values(directory: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(render(str(directory)).decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_no_cluster_section_exports_nothing_about_redis(tmp_path: Path) -> None:
    publish(tmp_path, "1", None)
    assert not any(k.startswith("ferryman_cluster") for k in values(tmp_path))
    assert cluster_status(str(tmp_path)) is None


def test_one_worker_cut_off_makes_the_instance_down(tmp_path: Path) -> None:
    publish(tmp_path, "1", FakeAgent(instances=3, fallbacks={"cache": 2}, failed_calls=1))
    publish(tmp_path, "2", FakeAgent(available=False, fallbacks={"limit_req": 5}, failed_calls=4))
    v = values(tmp_path)
    assert v["ferryman_cluster_redis_up"] == 0
    assert v["ferryman_cluster_redis_failed_calls_total"] == 5
    assert v["ferryman_cluster_instances"] == 3
    assert v["ferryman_cluster_local_fallbacks_total{feature=limit_req}"] == 5
    assert v["ferryman_cluster_local_fallbacks_total{feature=cache}"] == 2
    assert v["ferryman_cluster_local_fallbacks_total{feature=health}"] == 0  # exported at 0
    view = cluster_status(str(tmp_path))
    assert view is not None
    assert view["up"] is False and view["workers"] == 2 and view["workers_up"] == 1
    assert set(view["fallbacks"]) == set(FALLBACK_FEATURES)


def test_up_is_unknown_until_a_worker_has_tried(tmp_path: Path) -> None:
    publish(tmp_path, "1", FakeAgent(available=False, checked=False))
    assert "ferryman_cluster_redis_up" not in values(tmp_path)
    view = cluster_status(str(tmp_path))
    assert view is not None and view["up"] is None
    publish(tmp_path, "2", FakeAgent())
    assert values(tmp_path)["ferryman_cluster_redis_up"] == 1


def test_counters_survive_a_worker_exit(tmp_path: Path) -> None:
    publish(tmp_path, str(os.getpid()), FakeAgent(failed_calls=7, fallbacks={"health": 2}))
    retire(str(tmp_path), os.getpid())
    assert not (tmp_path / f"w-{os.getpid()}.bin").exists()
    publish(tmp_path, "9", FakeAgent(failed_calls=1))
    totals = aggregate(str(tmp_path))
    assert totals.cluster_failed == 8
    assert totals.cluster_fallbacks == {"health": 2}
    assert totals.cluster_workers == 1  # gauges: live workers only
