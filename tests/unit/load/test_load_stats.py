"""Histograms and worker stats: merge, quantiles, serialization."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from siokit.load.stats import GROWTH, Histogram, WorkerStats, bucket_index, merge_all


def test_empty_histogram() -> None:
    h = Histogram()
    assert h.quantile(0.5) is None
    assert h.summary()["count"] == 0


def test_quantiles_within_bucket_error() -> None:
    rng = random.Random(1)
    values = [rng.uniform(0.001, 2.0) for _ in range(10_000)]
    h = Histogram()
    for v in values:
        h.add(v)
    values.sort()
    for q in (0.5, 0.9, 0.99):
        exact = values[int(q * len(values)) - 1]
        got = h.quantile(q)
        assert got is not None
        assert exact / GROWTH <= got <= exact * GROWTH * GROWTH
    assert h.max == values[-1]
    assert h.min == values[0]
    assert h.quantile(1.0) == values[-1]


def test_weird_values_do_not_break() -> None:
    h = Histogram()
    for v in (0.0, -1.0, 1e-9, 1e9, float("nan")):
        h.add(v)
    assert h.count == 4
    assert bucket_index(float("nan")) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 100), max_size=50), st.lists(st.floats(0, 100), max_size=50))
def test_merge_equals_adding_everything(a: list[float], b: list[float]) -> None:
    ha, hb, hall = Histogram(), Histogram(), Histogram()
    for v in a:
        ha.add(v)
        hall.add(v)
    for v in b:
        hb.add(v)
        hall.add(v)
    ha.merge(hb)
    assert ha.buckets == hall.buckets
    assert ha.count == hall.count
    assert ha.quantile(0.99) == hall.quantile(0.99)


def test_worker_stats_roundtrip_through_json_and_merge() -> None:
    s = WorkerStats()
    s.connect.add(0.01)
    s.echo.add(0.002)
    s.fanout.add(0.05)
    s.fail("refused")
    s.fail("refused")
    s.fail("timeout")
    s.broadcast_received[3] += 10
    s.transports["websocket"] += 5
    s.connected = 5
    s.reconnects = 1
    d = json.loads(json.dumps(s.to_dict()))
    back = WorkerStats.from_dict(d)
    assert back.to_dict() == s.to_dict()
    total = merge_all([d, d])
    assert total.failures == {"refused": 4, "timeout": 2}
    assert total.broadcast_received[3] == 20
    assert total.connected == 10
    assert total.connect.count == 2
    assert len(json.dumps(total.to_dict())) < 5000
