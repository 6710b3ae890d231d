"""CPU-seconds each component spends on one broadcast, above what it spends anyway, and on one connect.

Issue #9 asks where a broadcast's time goes: uWSGI, nginx, the load generator, and the kernel. A
1 s timeline of CPU ticks per process (utime and stime apart) and of the machine's /proc/stat is
read during the hold. For each broadcast, the window runs from its send time to its last delivery;
what every component used in that window, minus its quiet rate (the hold outside every broadcast
window: idle pings, echoes) times the window's length, is what the broadcast cost it.

The kernel's share outside the sampled processes is the machine's softirq time (packets through
loopback, veth and the bridge) plus system time no sampled process was charged with. On a machine
shared with other work (VMs, other tests) that last part includes their system time: read it as an
upper bound.

The ramp is charged the same way (`per_connect`): what every component used from the ramp's start to
its end, minus its idle rate before the ramp (when readings before it exist), over the connects the
load generator made. Processes started in the ramp (the load generator's workers, and its start-up)
count from zero. Gross of the held sockets' own pings and timers during the ramp, which at the
planner's ping interval are a small part (the quiet hold's rate over the ramp's average count bounds
them).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

from siokit.lab import procstats

# /proc/stat "cpu" columns, in order
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
MARGIN_S = 2.0  # kept out of the quiet rate on each side of a broadcast window


@dataclass(frozen=True)
class Reading:
    wall: float  # epoch seconds: the load generator's broadcast send times are epoch seconds too
    procs: dict[int, tuple[str, int, int]]  # pid -> (component, utime ticks, stime ticks)
    machine: dict[str, int]  # /proc/stat "cpu" line, ticks


def machine_ticks(text: str | None = None) -> dict[str, int]:
    line = (text if text is not None else procstats._read("/proc/stat")).splitlines()[0]
    values = [int(v) for v in line.split()[1:]]
    return dict(zip(STAT_FIELDS, values, strict=False))


def read(procs: list[procstats.Proc]) -> Reading:
    split = {}
    for p in procs:
        ut, st = procstats.cpu_split(p.pid)
        split[p.pid] = (p.component, ut, st)
    return Reading(time.time(), split, machine_ticks())


def used(a: Reading, b: Reading, born_between: bool = False) -> dict[str, float]:
    """CPU-seconds between two readings: "<component> user" / "<component> sys" for processes present
    in both, "softirq", and "kernel, unattributed" (system time no sampled process was charged with).
    born_between: a process only in b was started after a, so all its CPU counts (the load
    generator's workers in the ramp); otherwise it is left out, as it may just have been found late."""
    out: dict[str, float] = {}
    proc_sys = 0.0
    for pid, (name, ut, st) in b.procs.items():
        before = a.procs.get(pid)
        if before is None:
            if not born_between:
                continue
            before = (name, 0, 0)
        du = max(0, ut - before[1]) / procstats.CLK_TCK
        ds = max(0, st - before[2]) / procstats.CLK_TCK
        out[f"{name} user"] = out.get(f"{name} user", 0.0) + du
        out[f"{name} sys"] = out.get(f"{name} sys", 0.0) + ds
        proc_sys += ds
    d = {k: (b.machine.get(k, 0) - a.machine.get(k, 0)) / procstats.CLK_TCK for k in STAT_FIELDS}
    out["softirq"] = d["softirq"] + d["irq"]
    out["kernel, unattributed"] = max(0.0, d["system"] - proc_sys)
    out["machine busy"] = sum(d[k] for k in ("user", "nice", "system", "irq", "softirq"))
    return out


def _between(readings: list[Reading], start: float, end: float) -> tuple[Reading, Reading] | None:
    """The last reading at or before start and the first at or after end."""
    before = [r for r in readings if r.wall <= start]
    after = [r for r in readings if r.wall >= end]
    if not before or not after:
        return None
    return before[-1], after[0]


def quiet_rate(readings: list[Reading], busy: list[tuple[float, float]], hold: tuple[float, float]) -> dict[str, float]:
    """Cores each key uses in the hold outside every (start, end) in busy, widened by MARGIN_S."""
    total: dict[str, float] = {}
    span = 0.0
    for a, b in itertools.pairwise(readings):
        if a.wall < hold[0] or b.wall > hold[1]:
            continue
        if any(a.wall < e + MARGIN_S and b.wall > s - MARGIN_S for s, e in busy):
            continue
        for k, v in used(a, b).items():
            total[k] = total.get(k, 0.0) + v
        span += b.wall - a.wall
    return {k: v / span for k, v in total.items()} if span > 0 else {}


def per_broadcast(
    readings: list[Reading], broadcasts: list[dict[str, Any]], hold: tuple[float, float]
) -> dict[str, Any]:
    """Each broadcast's CPU-seconds per key above the quiet rate, and microseconds per delivery."""
    windows = []
    for b in broadcasts:
        if b.get("sent_at") is None or b.get("max") is None:
            continue
        windows.append((b, float(b["sent_at"]), float(b["sent_at"]) + float(b["max"]) / 1000))
    rate = quiet_rate(readings, [(s, e) for _, s, e in windows], hold)
    rows = []
    for b, start, end in windows:
        pair = _between(readings, start, end)
        if pair is None or not rate:
            continue
        span = pair[1].wall - pair[0].wall
        extra = {k: round(v - rate.get(k, 0.0) * span, 3) for k, v in used(*pair).items()}
        clients = int(b.get("clients") or 0)
        per = {k: round(v / clients * 1e6, 1) for k, v in extra.items()} if clients else {}
        rows.append({"seq": b["seq"], "clients": clients, "window_s": round(span, 1), "cpu_s": extra,
                     "us_per_delivery": per})  # fmt: skip
    return {"quiet_cores": {k: round(v, 3) for k, v in rate.items()}, "broadcasts": rows}


def per_connect(readings: list[Reading], ramp: tuple[float, float], connects: int) -> dict[str, Any]:
    """CPU-seconds per key over the ramp above the idle rate before it, and microseconds per connect."""
    before = [r for r in readings if r.wall <= ramp[0]]
    pair = _between(readings, *ramp)
    if pair is None or not connects:
        return {"measured": False, "reason": "no CPU readings span the ramp" if connects else "no connects"}
    idle: dict[str, float] = {}
    if len(before) >= 2 and before[-1].wall - before[0].wall >= 1.0:
        span = before[-1].wall - before[0].wall
        idle = {k: v / span for k, v in used(before[0], before[-1]).items()}
    window = pair[1].wall - pair[0].wall
    cpu = {k: round(v - idle.get(k, 0.0) * window, 3) for k, v in used(*pair, born_between=True).items()}
    return {
        "measured": True,
        "window_s": round(window, 1),
        "connects": connects,
        "connects_per_s": round(connects / window, 1) if window > 0 else None,
        "idle_subtracted": bool(idle),
        "cpu_s": cpu,
        "us_per_connect": {k: round(v / connects * 1e6, 1) for k, v in cpu.items()},
    }
