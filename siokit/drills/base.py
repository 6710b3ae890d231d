"""What every drill shares: the run's context, a fault's record, the drill's definition, and the
small waits and lookups the actions use."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siokit.drills.load import Sampler, ServerSamples
from siokit.drills.measure import Expect

LB_URL = "http://127.0.0.1:8080"  # the lb's port published on the host (molecule/cluster)
BROADCAST_EVERY = 5.0  # the load's admin broadcast, seconds


@dataclass
class Context:
    connections: int
    out: Path
    token: str
    ports: dict[str, list[int]]


@dataclass
class Fault:
    """What a drill's action did, on the wall clock, and what it measured on the side."""

    start: float
    end: float
    observe_end: float
    extra: dict[str, Any] = field(default_factory=dict)
    # When the drill expects its clients to be dropped on purpose after the fault (drill 3: the old
    # workers' bound); the runner measures that dip and the return from the load's timeline.
    drain_at: float | None = None


@dataclass(frozen=True)
class Drill:
    key: str
    number: int
    title: str
    expectations: tuple[Expect, ...]
    observe_s: float  # the load holds PRE_S + observe_s + margin
    action: Callable[[Context, Sampler], Fault]


def wait_until(pred: Callable[[], bool], timeout: float, every: float = 0.5) -> float | None:
    """The wall time at which `pred` first held, or None after `timeout` seconds."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return time.time()
        time.sleep(every)
    return None


def row_at(samples: ServerSamples, t: float) -> dict[str, int | None]:
    """The last per-instance socket sample taken at or before `t`."""
    before = [row for ts, row in samples.rows if ts <= t]
    return before[-1] if before else (samples.rows[0][1] if samples.rows else {})
