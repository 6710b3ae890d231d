"""The adaptive pace (app/fanout_pace.py): the plan's rate, lowered while waits for a core are long."""

from __future__ import annotations

import time

import pytest
from test_app_fanout import parse_frames
from test_app_paced_fanout import _paced, _settle

from app import fanout_pace
from app.fanout_pace import AdaptivePace, read_schedstat
from app.upstream import paced_fanout


class FakeKernel:
    """A schedstat whose waits per switch-in the test sets, and a clock it moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.delay_ns = 0
        self.switches = 0
        self.readable = True

    def read(self) -> tuple[int, int] | None:
        return (self.delay_ns, self.switches) if self.readable else None

    def window(self, wait_s: float, switches: int = 50) -> None:
        self.now += fanout_pace.WINDOW_S
        self.switches += switches
        self.delay_ns += int(wait_s * 1e9 * switches)


def _pace(kernel: FakeKernel, ceiling: float = 1000.0) -> AdaptivePace:
    pace = AdaptivePace(ceiling, read=kernel.read, clock=lambda: kernel.now)
    assert pace.observe() == ceiling  # the first call only takes a baseline
    return pace


def test_long_waits_lower_the_rate_to_the_floor_and_short_ones_bring_it_back_to_the_plans() -> None:
    k = FakeKernel()
    pace = _pace(k)
    k.window(0.005)  # 5 ms per switch-in: both cores busy (the cluster's broadcasts read 1.2-19 ms)
    assert pace.observe() == pytest.approx(700.0)
    for _ in range(20):
        k.window(0.005)
        pace.observe()
    assert pace.rate == pytest.approx(1000.0 * fanout_pace.FLOOR)
    for _ in range(10):
        k.window(0.0002)  # the quiet hold's 0.2 ms
        pace.observe()
    assert pace.rate == pytest.approx(250.0 + 10 * 50.0)
    for _ in range(50):
        k.window(0.0002)
        pace.observe()
    assert pace.rate == 1000.0  # never past the plan's


def test_the_rate_changes_once_per_window_and_not_across_a_pause() -> None:
    k = FakeKernel()
    pace = _pace(k)
    k.now += fanout_pace.WINDOW_S / 2
    k.delay_ns += 10**9
    k.switches += 10
    assert pace.observe() == 1000.0  # within the window: unchanged
    k.now += 30.0  # the next fan-out, 30 s later: the waits in between were not this fan-out's
    k.delay_ns += 10**9
    k.switches += 10
    assert pace.observe() == 1000.0
    k.window(0.0)
    k.switches -= 50  # no switch-in in a window: nothing to judge by
    assert pace.observe() == 1000.0


def test_the_operators_core_wait_is_the_threshold_and_0_keeps_the_plans_rate() -> None:
    k = FakeKernel()
    lenient = AdaptivePace(1000.0, core_wait_s=0.010, read=k.read, clock=lambda: k.now)
    lenient.observe()
    k.window(0.005)
    assert lenient.observe() == 1000.0  # 5 ms is below the operator's 10 ms
    k.window(0.020)
    assert lenient.observe() == pytest.approx(700.0)
    fixed = AdaptivePace(1000.0, core_wait_s=0.0, read=k.read, clock=lambda: k.now)
    assert fixed.adaptive is False
    for _ in range(5):
        k.window(0.020)
        assert fixed.observe() == 1000.0


def test_without_schedstat_the_rate_stays_the_plans() -> None:
    k = FakeKernel()
    k.readable = False
    pace = AdaptivePace(1000.0, read=k.read, clock=lambda: k.now)
    assert pace.adaptive is False
    k.readable = True
    k.window(0.01)
    assert pace.observe() == 1000.0


def test_read_schedstat_reads_this_threads_delay_and_switch_ins() -> None:
    sample = read_schedstat()
    assert sample is not None  # Linux with sched_info, as every host the kit supports
    delay, switches = sample
    assert delay >= 0 and switches >= 1
    assert read_schedstat("/nonexistent/schedstat") is None


def test_a_fanout_slows_to_the_lowered_rate_while_waits_are_long(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fan-out on real sockets with a schedstat that reports saturated cores: the rate falls to
    the floor, the fan-out takes ~4x the plan's time, and every client still gets its frame."""
    monkeypatch.setattr(paced_fanout, "SLICE", 10)
    monkeypatch.setattr(fanout_pace, "WINDOW_S", 0.01)  # several windows within a short fan-out
    clock = time.monotonic
    state = {"delay": 0, "switches": 0}

    def congested() -> tuple[int, int]:
        state["switches"] += 10
        state["delay"] += 10 * 5_000_000  # 5 ms per switch-in, whatever the window
        return state["delay"], state["switches"]

    n = 400
    c = _paced(n, rate=None)
    pace = AdaptivePace(2000.0, read=congested, clock=clock)  # the plan: 400 sockets in 0.2 s
    c.manager.pace(2000.0, pace=pace)
    try:
        began = time.monotonic()
        c.manager.emit("m", "everyone", "/")
        _settle(c, n)
        took = time.monotonic() - began
        assert pace.rate == pytest.approx(2000.0 * fanout_pace.FLOOR)
        # At the plan's 2,000/s it takes 0.2 s; at the floor's 500/s, 0.8 s; the rate is there after
        # four windows (0.7 ** 4 < 0.25).
        assert took > 0.5
        assert all(parse_frames(c.received[i])[0] for i in range(n))
    finally:
        c.close()
