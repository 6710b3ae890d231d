"""Mergeable latency histograms and per-worker counters.

Workers never ship raw samples: a Histogram is ~200 log-spaced buckets (5% wide) plus exact
count/sum/min/max, so a snapshot stays a few KB whatever the number of clients.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# bucket i covers [BASE * GROWTH**i, BASE * GROWTH**(i+1)) seconds; index 0 also takes anything smaller
BASE = 1e-5  # 10 microseconds
GROWTH = 1.05
_LOG_GROWTH = math.log(GROWTH)
MAX_INDEX = 400  # BASE * 1.05**400 ~ 3e3 s; larger values land in the last bucket


def bucket_index(value: float) -> int:
    if not value > BASE:  # also catches NaN
        return 0
    idx = int(math.log(value / BASE) / _LOG_GROWTH)
    return min(idx, MAX_INDEX)


def bucket_upper(index: int) -> float:
    return BASE * GROWTH ** (index + 1)


@dataclass
class Histogram:
    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def add(self, value: float) -> None:
        if math.isnan(value):
            return
        value = max(value, 0.0)
        i = bucket_index(value)
        self.buckets[i] = self.buckets.get(i, 0) + 1
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        for i, n in other.buckets.items():
            self.buckets[i] = self.buckets.get(i, 0) + n
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """Upper edge of the bucket holding the q-quantile, clamped to the exact min/max."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                return min(max(bucket_upper(i), self.min), self.max)
        return self.max

    def summary(self) -> dict[str, float | int | None]:
        if self.count == 0:
            return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "min": None, "mean": None}
        return {
            "count": self.count,
            "min": self.min,
            "mean": self.total / self.count,
            "p50": self.quantile(0.50),
            "p90": self.quantile(0.90),
            "p99": self.quantile(0.99),
            "max": self.max,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "count": self.count,
            "total": self.total,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        h = cls({int(k): int(v) for k, v in d.get("buckets", {}).items()}, int(d.get("count", 0)))
        h.total = float(d.get("total", 0.0))
        if h.count:
            h.min = float(d["min"])
            h.max = float(d["max"])
        return h


# integer fields of WorkerStats that merge by addition (gauges too: they add up across workers)
COUNTERS = (
    "broadcasts_sent",
    "connected",
    "attempts",
    "established",
    "reconnects",
    "reconnect_attempts",
    "drops",
    "echo_sent",
    "echo_timeouts",
    "rss_kb",
    "cpu_ms",
)


@dataclass
class WorkerStats:
    """Everything one worker process measures; cumulative, shipped to the parent as a dict."""

    connect: Histogram = field(default_factory=Histogram)
    echo: Histogram = field(default_factory=Histogram)
    fanout: Histogram = field(default_factory=Histogram)
    failures: Counter[str] = field(default_factory=Counter)
    transports: Counter[str] = field(default_factory=Counter)
    broadcast_received: Counter[int] = field(default_factory=Counter)  # seq -> clients that got it
    broadcasts_sent: int = 0
    connected: int = 0  # gauge: clients connected to the namespace right now
    attempts: int = 0
    established: int = 0  # successful namespace connects, including reconnects
    reconnects: int = 0  # successful re-connections after a drop or a failed first attempt
    reconnect_attempts: int = 0
    drops: int = 0  # connections lost while they should have stayed up
    echo_sent: int = 0
    echo_timeouts: int = 0
    rss_kb: int = 0  # gauge: resident memory of the worker process(es)
    cpu_ms: int = 0  # user+system CPU time of the worker process(es)

    def fail(self, reason: str) -> None:
        self.failures[reason] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "connect": self.connect.to_dict(),
            "echo": self.echo.to_dict(),
            "fanout": self.fanout.to_dict(),
            "failures": dict(self.failures),
            "transports": dict(self.transports),
            "broadcast_received": {str(k): v for k, v in self.broadcast_received.items()},
            "broadcasts_sent": self.broadcasts_sent,
            "connected": self.connected,
            "attempts": self.attempts,
            "established": self.established,
            "reconnects": self.reconnects,
            "reconnect_attempts": self.reconnect_attempts,
            "drops": self.drops,
            "echo_sent": self.echo_sent,
            "echo_timeouts": self.echo_timeouts,
            "rss_kb": self.rss_kb,
            "cpu_ms": self.cpu_ms,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkerStats:
        s = cls(
            Histogram.from_dict(d["connect"]),
            Histogram.from_dict(d["echo"]),
            Histogram.from_dict(d["fanout"]),
            Counter(d.get("failures", {})),
            Counter(d.get("transports", {})),
            Counter({int(k): v for k, v in d.get("broadcast_received", {}).items()}),
        )
        for name in COUNTERS:
            setattr(s, name, int(d.get(name, 0)))
        return s

    def merge(self, other: WorkerStats) -> None:
        self.connect.merge(other.connect)
        self.echo.merge(other.echo)
        self.fanout.merge(other.fanout)
        self.failures.update(other.failures)
        self.transports.update(other.transports)
        self.broadcast_received.update(other.broadcast_received)
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def merge_all(snapshots: list[dict[str, Any]]) -> WorkerStats:
    total = WorkerStats()
    for snap in snapshots:
        total.merge(WorkerStats.from_dict(snap))
    return total


def process_cpu_ms() -> int:
    t = os.times()
    return int((t.user + t.system) * 1000)


def process_rss_kb() -> int:
    """Resident set size of this process in KB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)
