"""Histograms and worker stats: merge, quantiles, serialization."""

from __future__ import annotations

import json
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from siokit.load.stats import Histogram, WorkerStats, merge_all


def test_empty_histogram() -> None:
    h = Histogram()
    assert h.quantile(0.5) is None
    assert h.summary()["count"] == 0


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([(0.0005, 0.01), (0.001, 2.0), (0.5, 90.0), (1.0, 3000.0)]))
def test_quantiles_exact_to_one_percent(seed: int, span: tuple[float, float]) -> None:
    """p50/p90/p95/p99 within 1% of the true sample quantile (nearest rank), from ms to an hour."""
    rng = random.Random(seed)
    values = [rng.uniform(*span) for _ in range(2_000)]
    h = Histogram()
    for v in values:
        h.add(v)
    values.sort()
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = values[max(1, math.ceil(q * len(values))) - 1]
        got = h.quantile(q)
        assert got is not None
        # the upper edge of a 1%-wide bucket: never below the sample, at most 1% above it
        assert exact - 1e-6 <= got <= exact * 1.01, (q, exact, got)
    assert h.max == values[-1]
    assert h.min == values[0]
    assert h.quantile(1.0) == values[-1]


def test_weird_values_do_not_break() -> None:
    h = Histogram()
    for v in (0.0, -1.0, 1e-9, 1e9, float("nan")):
        h.add(v)
    assert h.count == 4
    assert h.max == 1e9 and h.min == 0.0
    assert h.quantile(0.5) is not None


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
    s.on_broadcast(3, 0.2)
    s.on_broadcast(3, 0.4)
    s.pings_held[2] += 5
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
    assert total.broadcast_received[3] == 24
    assert total.fanout_by_seq[3].count == 4 and total.fanout_pooled().count == 6
    assert total.pings_held == {2: 10}
    assert total.connected == 10
    assert total.connect.count == 2
    assert len(json.dumps(total.to_dict())) < 5000


def test_per_broadcast_histograms_merge_across_workers_without_samples() -> None:
    a, b = WorkerStats(), WorkerStats()
    for i in range(100):
        a.on_broadcast(1, 0.010 + i / 10_000)  # 10.0 .. 19.9 ms
        b.on_broadcast(1, 1.000 + i / 1_000)  # 1.000 .. 1.099 s
        b.on_broadcast(2, 0.5)
    total = merge_all([a.to_dict(), b.to_dict()])
    one = total.fanout_by_seq[1]
    assert one.count == 200 and total.broadcast_received == {1: 200, 2: 100}
    p50 = one.quantile(0.5)
    assert p50 is not None and 0.0199 <= p50 <= 0.0199 * 1.01  # the 100th of 200 samples
    assert one.max == 1.099 and total.fanout_by_seq[2].quantile(0.99) == 0.5
