"""What a drill measured, from the load generator's report and the drill's own samples.

Pure functions over numbers, so that the evaluation is unit-tested on synthetic runs. The load
report is read as a black box: only its top-level ``started_at``, ``duration.ramp_s``,
``config.broadcast_every``, ``config.target_connections``, ``timeline[]`` (``t``, ``connected``,
``failures``) and ``broadcast.per_broadcast[]`` (``seq``, ``clients``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Window:
    """Wall-clock times (time.time()) of one drill: the fault and the end of the observation."""

    fault_start: float
    fault_end: float  # when the drill undid the fault (== fault_start for an instant fault)
    observe_end: float


@dataclass(frozen=True)
class Sample:
    t: float  # wall clock
    connected: int
    failures: int  # cumulative handshake failures


@dataclass
class Measures:
    sockets_before: int
    sockets_lowest: int
    sockets_after: int
    target: int
    recover_s: float | None  # fault start -> first sample back at sockets_before; None: never
    handshake_failures: int  # during [fault_start, observe_end]
    broadcasts_sent: int  # during the window (by the load generator's schedule)
    broadcast_deliveries_expected: int  # sent x sockets_before
    broadcast_deliveries: int
    room_sent: int = 0
    room_expected: int = 0
    room_received: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def timeline_samples(report: dict[str, Any]) -> list[Sample]:
    """The load report's per-second timeline on the wall clock."""
    start = float(report["started_at"])
    return [
        Sample(start + float(row["t"]), int(row["connected"]), int(row["failures"]))
        for row in report.get("timeline", [])
    ]


def broadcast_times(report: dict[str, Any]) -> dict[int, float]:
    """Wall time of each broadcast seq: the admin client sends seq 1 as the hold starts and one
    every ``broadcast_every`` s after (the report carries receiver counts, not send times)."""
    every = report.get("config", {}).get("broadcast_every")
    if not every:
        return {}
    hold_start = float(report["started_at"]) + float(report["duration"]["ramp_s"])
    seqs = [int(b["seq"]) for b in report.get("broadcast", {}).get("per_broadcast", [])]
    return {seq: hold_start + (seq - 1) * float(every) for seq in seqs}


def measure(report: dict[str, Any], window: Window) -> Measures:
    samples = timeline_samples(report)
    if not samples:
        raise ValueError("the load report has no timeline: the load generator did not run")
    before = [s for s in samples if s.t <= window.fault_start]
    during = [s for s in samples if window.fault_start < s.t <= window.observe_end]
    if not before or not during:
        raise ValueError(
            f"the load report's timeline ({samples[0].t:.0f}..{samples[-1].t:.0f}) does not cover the "
            f"fault window ({window.fault_start:.0f}..{window.observe_end:.0f})"
        )
    ref = before[-1]
    recover_s = None
    dipped = False
    for s in during:
        dipped = dipped or s.connected < ref.connected
        if dipped and s.connected >= ref.connected:
            recover_s = round(s.t - window.fault_start, 1)
            break
    if not dipped:
        recover_s = 0.0
    per_seq = {int(b["seq"]): int(b["clients"]) for b in report.get("broadcast", {}).get("per_broadcast", [])}
    in_window = [seq for seq, t in broadcast_times(report).items() if window.fault_start <= t <= window.observe_end]
    return Measures(
        sockets_before=ref.connected,
        sockets_lowest=min(s.connected for s in during),
        sockets_after=during[-1].connected,
        target=int(report.get("config", {}).get("target_connections") or ref.connected),
        recover_s=recover_s,
        handshake_failures=during[-1].failures - ref.failures,
        broadcasts_sent=len(in_window),
        broadcast_deliveries_expected=len(in_window) * ref.connected,
        broadcast_deliveries=sum(per_seq.get(seq, 0) for seq in in_window),
    )


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}


@dataclass(frozen=True)
class Expect:
    """One stated expectation: ``metric op value``; ``value`` may name another metric."""

    metric: str
    op: str
    value: float | str
    why: str = ""

    def text(self) -> str:
        return f"{self.metric} {self.op} {self.value}"


@dataclass(frozen=True)
class Check:
    expect: str
    actual: Any
    passed: bool


def _lookup(m: Measures, name: str) -> Any:
    if hasattr(m, name) and name != "extra":
        return getattr(m, name)
    if name in m.extra:
        return m.extra[name]
    raise KeyError(f"no measured value named {name!r}")


def evaluate(m: Measures, expectations: Sequence[Expect]) -> list[Check]:
    """Each expectation against the measured numbers; a missing number (None) fails."""
    checks = []
    for e in expectations:
        actual = _lookup(m, e.metric)
        bound = _lookup(m, e.value) if isinstance(e.value, str) else e.value
        passed = actual is not None and bound is not None and OPS[e.op](actual, bound)
        checks.append(Check(e.text() + (f" (= {bound})" if isinstance(e.value, str) else ""), actual, passed))
    return checks


def back_after(report: dict[str, Any], t: float, before: int) -> float | None:
    """Seconds from `t` to the first timeline sample at or after it holding `before` sockets again;
    None: never within the report."""
    for s in timeline_samples(report):
        if s.t >= t and s.connected >= before:
            return round(max(0.0, s.t - t), 1)
    return None


def dip_and_back(report: dict[str, Any], t: float, before: int, within: float = 20.0) -> tuple[int, float | None]:
    """Sockets lost in the first dip below `before` that starts within `within` seconds of `t`, and
    seconds from that dip's first sample to the first sample back at `before` (None: never back).
    No dip: (0, 0.0). Measured from the dip, not from `t`: a sample at `t` may precede the drop."""
    samples = timeline_samples(report)
    dip = next((s for s in samples if t <= s.t <= t + within and s.connected < before), None)
    if dip is None:
        return 0, 0.0
    back = back_after(report, dip.t, before)
    until = math.inf if back is None else dip.t + back
    return before - min(s.connected for s in samples if dip.t <= s.t <= until), back


def longest_below(report: dict[str, Any], window: Window, before: int) -> float:
    """The longest run of consecutive timeline samples in the window holding fewer than `before`
    sockets, in seconds from its first sample to the sample that was back (or the window's last)."""
    longest, since = 0.0, None
    for s in timeline_samples(report):
        if not window.fault_start < s.t <= window.observe_end:
            continue
        if s.connected < before:
            since = s.t if since is None else since
        elif since is not None:
            longest, since = max(longest, s.t - since), None
    samples = [s for s in timeline_samples(report) if window.fault_start < s.t <= window.observe_end]
    if since is not None and samples:
        longest = max(longest, samples[-1].t - since)
    return round(longest, 1)
