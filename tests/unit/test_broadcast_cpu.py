"""siokit/lab/broadcast_cpu.py: a broadcast's CPU above the quiet rate, on a synthetic timeline."""

from __future__ import annotations

import threading
import time
from typing import Any

from siokit.lab import broadcast_cpu
from siokit.lab.broadcast_cpu import Reading
from siokit.lab.procstats import CLK_TCK
from siokit.load.stats import WorkerStats


def _timeline(burst: tuple[float, float], extra_user_s: float, extra_softirq_s: float) -> list[Reading]:
    """100 s at 1 s steps: uWSGI uses 0.5 core of user time throughout, nginx 0.1 of sys; inside
    burst the uWSGI worker gets extra_user_s more and the machine extra_softirq_s of softirq, spread
    evenly."""
    readings = []
    ut = st = soft = system = 0.0
    length = burst[1] - burst[0]
    for t in range(101):
        if t > 0:
            ut += 0.5
            st += 0.1
            system += 0.1
            if burst[0] < 1000.0 + t <= burst[1]:
                ut += extra_user_s / length
                soft += extra_softirq_s / length
        machine = {k: 0 for k in broadcast_cpu.STAT_FIELDS}
        machine.update(user=round(ut * CLK_TCK), system=round(system * CLK_TCK), softirq=round(soft * CLK_TCK))
        procs = {1: ("uwsgi", round(ut * CLK_TCK), 0), 2: ("nginx", 0, round(st * CLK_TCK))}
        readings.append(Reading(1000.0 + t, procs, machine))
    return readings


def test_a_broadcast_is_charged_what_it_used_above_the_quiet_rate() -> None:
    readings = _timeline((1040.0, 1050.0), extra_user_s=3.0, extra_softirq_s=1.0)
    got = broadcast_cpu.per_broadcast(
        readings,
        [{"seq": 1, "clients": 1000, "sent_at": 1040.0, "max": 10_000.0}],
        hold=(1000.0, 1100.0),
    )
    assert got["quiet_cores"]["uwsgi user"] == 0.5
    assert got["quiet_cores"]["nginx sys"] == 0.1
    (row,) = got["broadcasts"]
    assert row["window_s"] == 10.0
    assert abs(row["cpu_s"]["uwsgi user"] - 3.0) < 0.05
    assert abs(row["cpu_s"]["nginx sys"]) < 0.05  # nginx did nothing extra
    assert abs(row["cpu_s"]["softirq"] - 1.0) < 0.05
    assert abs(row["us_per_delivery"]["uwsgi user"] - 3000.0) < 50
    # nginx's system time is its own, not the kernel's unattributed share
    assert abs(row["cpu_s"]["kernel, unattributed"]) < 0.05


def test_broadcasts_without_a_send_time_are_left_out() -> None:
    readings = _timeline((1040.0, 1050.0), 3.0, 0.0)
    got = broadcast_cpu.per_broadcast(
        readings, [{"seq": 1, "clients": 10, "sent_at": None, "max": 5.0}], (1000.0, 1100.0)
    )
    assert got["broadcasts"] == []


def test_send_times_merge_to_the_earliest() -> None:
    a, b = WorkerStats(), WorkerStats()
    a.broadcast_sent_at = {1: 10.0, 2: 20.0}
    b.broadcast_sent_at = {1: 9.5}
    a.merge(WorkerStats.from_dict(b.to_dict()))
    assert a.broadcast_sent_at == {1: 9.5, 2: 20.0}


def test_the_ramp_is_charged_per_connect_above_the_idle_rate_before_it() -> None:
    # uWSGI's 0.5 core of user time runs from t=0; the ramp (t=1020-1070) adds 2.5 s of it in all
    readings = _timeline((1020.0, 1070.0), extra_user_s=2.5, extra_softirq_s=0.5)
    got = broadcast_cpu.per_connect(readings, (1020.0, 1070.0), connects=5000)
    assert got["measured"] and got["idle_subtracted"]
    assert got["window_s"] == 50.0 and got["connects_per_s"] == 100.0
    assert abs(got["cpu_s"]["uwsgi user"] - 2.5) < 0.05
    assert abs(got["cpu_s"]["nginx sys"]) < 0.05
    assert abs(got["us_per_connect"]["uwsgi user"] - 500.0) < 10
    assert abs(got["us_per_connect"]["softirq"] - 100.0) < 10


def test_a_ramp_outside_the_readings_is_not_measured() -> None:
    readings = _timeline((1020.0, 1070.0), 1.0, 0.0)
    got = broadcast_cpu.per_connect(readings, (1090.0, 1200.0), connects=10)
    assert got == {"measured": False, "reason": "no CPU readings span the ramp"}


def test_a_process_started_in_the_ramp_counts_from_zero() -> None:
    readings = _timeline((1020.0, 1070.0), 0.0, 0.0)
    # the load generator's worker appears at t=1030 and has used 4 s of user time by the ramp's end
    for r in readings:
        if r.wall >= 1030.0:
            r.procs[3] = ("loadgen", round((r.wall - 1030.0) / 40.0 * 4.0 * CLK_TCK), 0)
    got = broadcast_cpu.per_connect(readings, (1020.0, 1070.0), connects=1000)
    assert abs(got["cpu_s"]["loadgen user"] - 4.0) < 0.05
    assert abs(got["us_per_connect"]["loadgen user"] - 4000.0) < 50
    # a broadcast window keeps leaving out a process found late
    assert "loadgen user" not in broadcast_cpu.used(readings[25], readings[60])


def test_bench_sampler_looks_for_processes_at_every_reading_once_the_load_starts(monkeypatch: Any) -> None:
    """The load generator's workers start in its first seconds, and a loopback ramp can be over in
    8 s: after rescan is set the sampler must look at every reading, not at its 10 s refresh."""
    from siokit.lab import bench

    monkeypatch.setattr(bench, "CPU_EVERY", 0.01)
    found: list[int] = []
    stop, rescan = threading.Event(), threading.Event()
    readings: list[Reading] = []

    def find() -> list[Any]:
        found.append(len(readings))
        return []

    sampler = threading.Thread(target=bench._cpu_sampler, args=(stop, readings, find, rescan))
    sampler.start()
    time.sleep(0.2)
    before = len(found)
    rescan.set()
    time.sleep(0.2)
    stop.set()
    sampler.join()
    assert before == 1, found  # once at the start; the 10 s refresh has not come
    assert len(found) - before >= 5, found  # about one per reading after the rescan
    assert len(readings) > 10
