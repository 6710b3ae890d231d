"""Mergeable latency histograms and per-worker counters.

Workers never ship raw samples: a Histogram is sparse log-spaced buckets 1% wide plus exact
count/sum/min/max, so every quantile is within 1% of the true sample and a snapshot stays a few KB
whatever the number of clients. Broadcast fan-out keeps one histogram per broadcast (``seq``); the
pooled figure is their merge, so each received message is recorded once.

Why not the maintained ``hdrhistogram`` package (issue #9 suggests it): recording one sample cost
4.1 us of process CPU on this host (its pure-Python ``record_value`` behind our wrapper), a quarter
of the load generator's 15 us budget per received message; these buckets cost ~1 us
(tests/unit/load/test_load_stats.py checks the 1% bound against exact sample quantiles).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# bucket i covers [BASE * GROWTH**i, BASE * GROWTH**(i+1)) seconds; index 0 also takes anything smaller
BASE = 1e-5  # 10 microseconds
GROWTH = 1.01
_INV_BASE = 1 / BASE
_INV_LOG_GROWTH = 1 / math.log(GROWTH)
MAX_INDEX = 2200  # BASE * 1.01**2200 ~ 3e4 s; larger values land in the last bucket
_log = math.log


def bucket_index(value: float) -> int:
    if not value > BASE:  # also catches NaN
        return 0
    return min(int(_log(value * _INV_BASE) * _INV_LOG_GROWTH), MAX_INDEX)


def bucket_upper(index: int) -> float:
    return BASE * GROWTH ** (index + 1)


class Histogram:
    """Latencies in seconds: 1%-wide log buckets for quantiles, exact count/total/min/max."""

    __slots__ = ("buckets", "count", "max", "min", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        if value != value:  # NaN
            return
        if value > BASE:
            i = int(_log(value * _INV_BASE) * _INV_LOG_GROWTH)
            if i > MAX_INDEX:
                i = MAX_INDEX
        else:
            i = 0
            if value < 0.0:
                value = 0.0
        b = self.buckets
        b[i] = b.get(i, 0) + 1
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        b = self.buckets
        for i, n in other.buckets.items():
            b[i] = b.get(i, 0) + n
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """Upper edge of the bucket holding the q-quantile (nearest rank; at most 1% above the
        true sample), clamped to the exact min/max."""
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
            return {"count": 0, "p50": None, "p90": None, "p95": None, "p99": None, "max": None, "min": None,
                    "mean": None}  # fmt: skip
        return {
            "count": self.count,
            "min": self.min,
            "mean": self.total / self.count,
            "p50": self.quantile(0.50),
            "p90": self.quantile(0.90),
            "p95": self.quantile(0.95),
            "p99": self.quantile(0.99),
            "max": self.max,
        }

    def bars(self) -> list[tuple[float, int]]:
        """(upper edge in seconds, count) per non-empty bucket, for plots."""
        return [(bucket_upper(i), self.buckets[i]) for i in sorted(self.buckets)]

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
        h = cls()
        h.buckets = {int(k): int(v) for k, v in d.get("buckets", {}).items()}
        h.count = int(d.get("count", 0))
        h.total = float(d.get("total", 0.0))
        if h.count:
            h.min = float(d["min"])
            h.max = float(d["max"])
        return h


STALL_S = 0.1  # a loop lag this long is kept with its time (loop_stalls): long enough to matter

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
    "dead_peers",
    "rss_kb",
    "cpu_ms",
)


@dataclass
class WorkerStats:
    """Everything one worker process measures; cumulative, shipped to the parent as a dict."""

    connect: Histogram = field(default_factory=Histogram)
    echo: Histogram = field(default_factory=Histogram)
    fanout: Histogram = field(default_factory=Histogram)  # deliveries without a seq only
    failures: Counter[str] = field(default_factory=Counter)
    transports: Counter[str] = field(default_factory=Counter)
    broadcast_received: Counter[int] = field(default_factory=Counter)  # seq -> clients that got it
    broadcasts_sent: int = 0
    # seq -> wall-clock time the admin client sent it: lines a broadcast up with CPU readings (siokit bench)
    broadcast_sent_at: dict[int, float] = field(default_factory=dict)
    connected: int = 0  # gauge: clients connected to the namespace right now
    attempts: int = 0
    established: int = 0  # successful namespace connects, including reconnects
    reconnects: int = 0  # successful re-connections after a drop or a failed first attempt
    reconnect_attempts: int = 0
    drops: int = 0  # connections lost while they should have stayed up
    # why each drop happened, as the client saw it (transport.py, client.py): sums to ``drops``
    drop_reasons: Counter[str] = field(default_factory=Counter)
    # handshake failures of reconnects (also in ``failures``): what a dropped client met next
    reconnect_failures: Counter[str] = field(default_factory=Counter)
    # the worker's event-loop lag: how late a 50 ms timer fired (worker.py, _lag_monitor)
    loop_lag: Histogram = field(default_factory=Histogram)
    loop_lag_max_s: float = 0.0
    # wall-clock second a stall began in -> (its length s, the wall time it began), the longest
    # of that second, for stalls >= STALL_S only: at most one entry per second of the run
    loop_stalls: dict[int, tuple[float, float]] = field(default_factory=dict)
    echo_sent: int = 0
    echo_timeouts: int = 0
    dead_peers: int = 0  # connections dropped because no Engine.IO ping came in interval + timeout
    rss_kb: int = 0  # gauge: resident memory of the worker process(es)
    cpu_ms: int = 0  # user+system CPU time of the worker process(es)
    fanout_by_seq: dict[int, Histogram] = field(default_factory=dict)
    # pings heard during the hold -> clients connected at the end with that many (final snapshot)
    pings_held: Counter[int] = field(default_factory=Counter)
    ping_interval_s: float = 0.0  # from the handshake (max over workers)
    ping_timeout_s: float = 0.0

    def on_broadcast(self, seq: int | None, latency: float) -> None:
        """One broadcast message received ``latency`` seconds after the server sent it."""
        if seq is None:
            self.fanout.add(latency)
            return
        self.broadcast_received[seq] += 1
        h = self.fanout_by_seq.get(seq)
        if h is None:
            h = self.fanout_by_seq[seq] = Histogram()
        h.add(latency)

    def fanout_pooled(self) -> Histogram:
        """Every broadcast delivery: the per-broadcast histograms merged."""
        pooled = Histogram()
        pooled.merge(self.fanout)
        for h in self.fanout_by_seq.values():
            pooled.merge(h)
        return pooled

    def received_total(self) -> int:
        return self.fanout.count + sum(h.count for h in self.fanout_by_seq.values())

    def fail(self, reason: str) -> None:
        self.failures[reason] += 1

    def on_drop(self, reason: str) -> None:
        self.drops += 1
        self.drop_reasons[reason] += 1

    def on_loop_lag(self, lag: float, wall: float) -> None:
        """``lag`` s late, noticed at wall-clock time ``wall`` (the stall's end)."""
        self.loop_lag.add(lag)
        if lag > self.loop_lag_max_s:
            self.loop_lag_max_s = lag
        if lag >= STALL_S:
            began = wall - lag
            sec = int(began)
            if lag > self.loop_stalls.get(sec, (0.0, 0.0))[0]:
                self.loop_stalls[sec] = (lag, began)

    def to_dict(self) -> dict[str, Any]:
        return {
            "connect": self.connect.to_dict(),
            "echo": self.echo.to_dict(),
            "fanout": self.fanout.to_dict(),
            "failures": dict(self.failures),
            "transports": dict(self.transports),
            "broadcast_received": {str(k): v for k, v in self.broadcast_received.items()},
            "broadcasts_sent": self.broadcasts_sent,
            "broadcast_sent_at": {str(k): v for k, v in self.broadcast_sent_at.items()},
            "connected": self.connected,
            "attempts": self.attempts,
            "established": self.established,
            "reconnects": self.reconnects,
            "reconnect_attempts": self.reconnect_attempts,
            "drops": self.drops,
            "drop_reasons": dict(self.drop_reasons),
            "reconnect_failures": dict(self.reconnect_failures),
            "loop_lag": self.loop_lag.to_dict(),
            "loop_lag_max_s": self.loop_lag_max_s,
            "loop_stalls": {str(k): list(v) for k, v in self.loop_stalls.items()},
            "echo_sent": self.echo_sent,
            "echo_timeouts": self.echo_timeouts,
            "rss_kb": self.rss_kb,
            "cpu_ms": self.cpu_ms,
            "fanout_by_seq": {str(k): h.to_dict() for k, h in self.fanout_by_seq.items()},
            "pings_held": {str(k): v for k, v in self.pings_held.items()},
            "ping_interval_s": self.ping_interval_s,
            "ping_timeout_s": self.ping_timeout_s,
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
        s.fanout_by_seq = {int(k): Histogram.from_dict(v) for k, v in d.get("fanout_by_seq", {}).items()}
        s.broadcast_sent_at = {int(k): float(v) for k, v in d.get("broadcast_sent_at", {}).items()}
        s.pings_held = Counter({int(k): int(v) for k, v in d.get("pings_held", {}).items()})
        s.ping_interval_s = float(d.get("ping_interval_s", 0.0))
        s.ping_timeout_s = float(d.get("ping_timeout_s", 0.0))
        s.drop_reasons = Counter(d.get("drop_reasons", {}))
        s.reconnect_failures = Counter(d.get("reconnect_failures", {}))
        if "loop_lag" in d:
            s.loop_lag = Histogram.from_dict(d["loop_lag"])
        s.loop_lag_max_s = float(d.get("loop_lag_max_s", 0.0))
        s.loop_stalls = {int(k): (float(v[0]), float(v[1])) for k, v in d.get("loop_stalls", {}).items()}
        return s

    def merge(self, other: WorkerStats) -> None:
        self.connect.merge(other.connect)
        self.echo.merge(other.echo)
        self.fanout.merge(other.fanout)
        self.failures.update(other.failures)
        self.transports.update(other.transports)
        self.broadcast_received.update(other.broadcast_received)
        for seq, at in other.broadcast_sent_at.items():
            self.broadcast_sent_at[seq] = min(at, self.broadcast_sent_at.get(seq, at))
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for seq, h in other.fanout_by_seq.items():
            mine = self.fanout_by_seq.get(seq)
            if mine is None:
                mine = self.fanout_by_seq[seq] = Histogram()
            mine.merge(h)
        self.pings_held.update(other.pings_held)
        self.ping_interval_s = max(self.ping_interval_s, other.ping_interval_s)
        self.ping_timeout_s = max(self.ping_timeout_s, other.ping_timeout_s)
        self.drop_reasons.update(other.drop_reasons)
        self.reconnect_failures.update(other.reconnect_failures)
        self.loop_lag.merge(other.loop_lag)
        self.loop_lag_max_s = max(self.loop_lag_max_s, other.loop_lag_max_s)
        for sec, stall in other.loop_stalls.items():
            self.loop_stalls[sec] = max(stall, self.loop_stalls.get(sec, (0.0, 0.0)))


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
