"""Parent side: start the worker processes, aggregate their stats, drive the phases, build the report."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import signal
import sys
import time
from typing import Any, TextIO

from siokit.facts import local_port_range

from .diagnose import ports_exhausted
from .options import Plan
from .stats import WorkerStats, merge_all
from .worker import run_worker, stop_grace_s


def _ms(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v * 1000, 3) if isinstance(v, float) else v) for k, v in summary.items()}


class Progress:
    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and stream.isatty()

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run(plan: Plan, stream: TextIO = sys.stderr) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    out: Any = ctx.Queue()
    hold = ctx.Event()
    stop = ctx.Event()
    procs = [ctx.Process(target=run_worker, args=(p, out, hold, stop), daemon=True) for p in plan.plans]
    latest: dict[int, dict[str, Any]] = {}
    finals: dict[int, dict[str, Any]] = {}
    ramped: set[int] = set()
    errors: dict[int, str] = {}
    timeline: list[dict[str, Any]] = []
    progress = Progress(stream, plan.progress)
    interrupted = False

    def on_sigint(*_: Any) -> None:
        nonlocal interrupted
        interrupted = True
        stop.set()

    old = signal.signal(signal.SIGINT, on_sigint)
    t_start = time.monotonic()
    wall_start = time.time()
    for p in procs:
        p.start()
    phase = "ramp"
    t_ramped: float | None = None
    t_stop: float | None = None
    next_sample = t_start + 1.0
    peak = 0
    peak_rss = 0
    grace = stop_grace_s(max((p.connections for p in plan.plans), default=0))
    closed: set[int] = set()
    try:
        while True:
            try:
                kind, wid, payload = out.get(timeout=0.2)
            except queue.Empty:
                kind = None
            if kind == "stats":
                latest[wid] = payload
            elif kind == "ramped":
                ramped.add(wid)
            elif kind == "final":
                finals[wid] = payload
                latest[wid] = payload
            elif kind == "closed":
                closed.add(wid)
            elif kind == "error":
                errors[wid] = payload
                ramped.add(wid)
                finals.setdefault(wid, latest.get(wid) or WorkerStats().to_dict())
            now = time.monotonic()
            for i, p in enumerate(procs):  # a worker that died without a word
                if not p.is_alive() and i not in finals and p.exitcode not in (None, 0):
                    errors.setdefault(i, f"worker exited with status {p.exitcode}")
                    ramped.add(i)
                    finals[i] = latest.get(i) or WorkerStats().to_dict()
            if phase == "ramp" and (
                len(ramped) == len(procs)
                or (plan.ramp_timeout is not None and now - t_start >= plan.ramp_timeout)
                or stop.is_set()
            ):
                phase = "hold"
                t_ramped = now
                hold.set()
            if phase == "hold" and (stop.is_set() or (t_ramped is not None and now - t_ramped >= plan.hold)):
                phase = "stop"
                t_stop = now
                stop.set()
                progress.line(f"[stop {now - t_start:6.1f}s] hold over, closing the clients")
            if now >= next_sample and phase != "stop":  # teardown is not part of the timeline
                next_sample += 1.0
                agg = merge_all(list(latest.values()))
                peak = max(peak, agg.connected)
                peak_rss = max(peak_rss, agg.rss_kb)
                timeline.append(
                    {
                        "t": round(now - t_start, 1),
                        "connected": agg.connected,
                        "attempts": agg.attempts,
                        "failures": sum(agg.failures.values()),
                        "reconnects": agg.reconnects,
                        "drops": agg.drops,
                        "client_rss_kb": agg.rss_kb,
                        "client_cpu_ms": agg.cpu_ms,
                        "received": agg.received_total(),
                        "phase": phase,
                    }
                )
                fails = ", ".join(f"{k}={v}" for k, v in agg.failures.most_common(3)) or "0"
                p50 = agg.connect.quantile(0.5)
                p50s = f"{p50 * 1000:.0f}ms" if p50 is not None else "-"
                progress.line(
                    f"[{phase} {now - t_start:6.1f}s] held {agg.connected}/{plan.total}  "
                    f"attempts {agg.attempts}  failed {fails}  connect p50 {p50s}  "
                    f"reconnects {agg.reconnects}  echo {agg.echo.count}  bcast rx {agg.received_total()}"
                    + (
                        f"  drops {agg.drops} ({', '.join(f'{k}={v}' for k, v in agg.drop_reasons.most_common(3))})"
                        if agg.drops
                        else ""
                    )
                )
            exited = {i for i, p in enumerate(procs) if not p.is_alive()}
            if len(finals) == len(procs) and len(closed | exited) == len(procs):
                break
            if phase == "stop" and t_stop is not None and now - t_stop > grace:
                if len(finals) < len(procs):
                    errors.setdefault(-1, f"workers did not finish within {grace:.0f} s of stop; terminated")
                break
    finally:
        stop.set()
        signal.signal(signal.SIGINT, old)
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)
        with contextlib.suppress(Exception):
            out.close()
        progress.done()
    t_end = time.monotonic()
    # Measurements end at the workers' final reports; teardown is reported beside them, not in them.
    teardown = {
        "s": round(t_end - t_stop, 1) if t_stop is not None else None,
        "workers_closed": len(closed),
        "workers_terminated_while_closing": sum(1 for i in finals if i not in closed),
    }
    for wid, snap in latest.items():
        finals.setdefault(wid, snap)
    total = merge_all(list(finals.values()))
    peak = max(peak, total.connected)
    peak_rss = max(peak_rss, total.rss_kb)
    ramp_s = (t_ramped or t_end) - t_start
    report = build_report(
        plan,
        total,
        timeline,
        errors,
        interrupted,
        wall_start,
        ramp_s,
        (t_stop or t_end) - (t_ramped or t_end),
        peak,
        peak_rss,
        grace,
        {wid: WorkerStats.from_dict(snap) for wid, snap in finals.items()},
    )
    report["teardown"] = teardown
    report["diagnosis"] = ports_exhausted(plan.plans, finals, local_port_range())
    return report


def _per_broadcast(total: WorkerStats) -> list[dict[str, Any]]:
    rows = []
    for seq in sorted(set(total.broadcast_received) | set(total.fanout_by_seq)):
        h = total.fanout_by_seq.get(seq)
        lat = _ms(h.summary()) if h is not None else {}
        rows.append({"seq": seq, "clients": total.broadcast_received.get(seq, 0),
                     "sent_at": total.broadcast_sent_at.get(seq),
                     **{q: lat.get(q) for q in ("p50", "p90", "p95", "p99", "max")}})  # fmt: skip
    return rows


def _loop_lag(
    total: WorkerStats, per_worker: dict[int, WorkerStats], timeline: list[dict[str, Any]], wall_start: float
) -> dict[str, Any]:
    """Each worker's event-loop lag (how late a 50 ms timer fired), and per broadcast (from its
    send to the next one's, or to the end) the longest stall of any worker and the drops in that
    window: a drop after a long stall of the client's own loop is the load generator's doing."""
    from .stats import STALL_S
    from .worker import LAG_TICK

    sent = sorted(total.broadcast_sent_at.items())
    rows = []
    for i, (seq, at) in enumerate(sent):
        until = sent[i + 1][1] if i + 1 < len(sent) else float("inf")
        by_worker: dict[str, float] = {}
        worst, who = 0.0, None
        for wid, st in sorted(per_worker.items()):
            # the window a stall began in: the admin client's loop stalls too, so no broadcast is
            # sent during a stall of worker 0 and a stall lies in one window
            mine = max((lag for lag, began in st.loop_stalls.values() if at <= began < until), default=0.0)
            if mine:
                by_worker[str(wid)] = round(mine * 1000, 1)
            if mine > worst:
                worst, who = mine, wid
        in_window = [s for s in timeline if at <= wall_start + float(s["t"]) < until]
        before = [s for s in timeline if wall_start + float(s["t"]) < at]
        drops = None
        if in_window:
            drops = int(in_window[-1].get("drops", 0)) - (int(before[-1].get("drops", 0)) if before else 0)
        rows.append({"seq": seq, "max_stall_ms": round(worst * 1000, 1), "worker": who,
                     "stall_ms_by_worker": by_worker, "drops": drops})  # fmt: skip
    summary = _ms(total.loop_lag.summary())
    return {
        "tick_ms": LAG_TICK * 1000,
        "samples": summary.get("count"),
        "p50_ms": summary.get("p50"),
        "p99_ms": summary.get("p99"),
        "max_ms": round(total.loop_lag_max_s * 1000, 1),
        "per_worker_max_ms": {str(w): round(st.loop_lag_max_s * 1000, 1) for w, st in sorted(per_worker.items())},
        "stalls_over_ms": STALL_S * 1000,
        "stalls_over": sum(len(st.loop_stalls) for st in per_worker.values()),  # worker-seconds with one
        "per_broadcast": rows,
    }


def _pings(total: WorkerStats, held: int) -> dict[str, Any]:
    """ "Held with pings running": of the clients held at the end, how many heard a ping during
    the hold, and the fewest / median pings per held client."""
    counts = sorted(total.pings_held.items())
    n = sum(c for _, c in counts)
    median = None
    seen = 0
    for pings, c in counts:
        seen += c
        if seen * 2 >= n:
            median = pings
            break
    return {
        "ping_interval_s": total.ping_interval_s or None,
        "ping_timeout_s": total.ping_timeout_s or None,
        "held_clients": n,
        "held_with_pings": sum(c for p, c in counts if p >= 1),
        "min_per_client": counts[0][0] if counts else None,
        "median_per_client": median,
        "dead_peer_drops": total.dead_peers,
    }


def _cpu_per_message(timeline: list[dict[str, Any]]) -> dict[str, Any]:
    """Workers' CPU-seconds over the hold (first to last hold sample) per broadcast message
    received in that window: pings and timers included, so an upper bound."""
    hold = [s for s in timeline if s.get("phase") == "hold" and "received" in s]
    if len(hold) < 2:
        return {"window_s": None, "cpu_s": None, "received": 0, "us_per_received_message": None}
    cpu = (hold[-1]["client_cpu_ms"] - hold[0]["client_cpu_ms"]) / 1000
    got = hold[-1]["received"] - hold[0]["received"]
    return {
        "window_s": round(hold[-1]["t"] - hold[0]["t"], 1),
        "cpu_s": round(cpu, 3),
        "received": got,
        "us_per_received_message": round(cpu / got * 1e6, 1) if got else None,
    }


def build_report(
    plan: Plan,
    total: WorkerStats,
    timeline: list[dict[str, Any]],
    errors: dict[int, str],
    interrupted: bool,
    wall_start: float,
    ramp_s: float,
    hold_s: float,
    peak: int,
    peak_rss_kb: int = 0,
    stop_grace_s: float | None = None,
    per_worker: dict[int, WorkerStats] | None = None,
) -> dict[str, Any]:
    fanout = total.fanout_pooled()
    return {
        "tool": "siokit load",
        "started_at": wall_start,
        "config": {
            "url": plan.url,
            "target_connections": plan.total,
            "binds": [b for b in plan.binds if b],
            "processes": len(plan.plans),
            "workers_per_bind": plan.workers_per_bind,
            "transport": plan.plans[0].transport if plan.plans else None,
            "namespace": plan.plans[0].namespace if plan.plans else None,
            "concurrency_per_process": plan.plans[0].concurrency if plan.plans else None,
            "hold_s": plan.hold,
            "echo_every": plan.plans[0].echo_every if plan.plans else None,
            "broadcast_every": plan.plans[0].broadcast_every if plan.plans else None,
            "nofile_hard": plan.nofile_hard,
            "stop_grace_s": stop_grace_s,
        },
        "duration": {"ramp_s": round(ramp_s, 3), "hold_s": round(hold_s, 3)},
        "connections": {
            "target": plan.total,
            "held_at_end": total.connected,
            "peak_held": peak,
            "attempts": total.attempts,
            "established": total.established,
            "connect_rate_per_s": round(total.established / ramp_s, 1) if ramp_s > 0 else None,
            "reconnects": total.reconnects,
            "reconnect_attempts": total.reconnect_attempts,
            "drops": total.drops,
            # why, per drop, as the client saw it (docs/loadgen.md lists the reasons); sums to drops
            "drop_reasons": dict(total.drop_reasons.most_common()),
            # what reconnecting clients met (also counted in "failures")
            "reconnect_failures": dict(total.reconnect_failures.most_common()),
            "transports": dict(total.transports),
        },
        "client": {
            # whole worker processes (interpreter baseline ~25-30 MB each included)
            "rss_kb_at_end": total.rss_kb,
            "rss_kb_peak": peak_rss_kb,
            "rss_kb_per_connection": round(total.rss_kb / total.connected, 2) if total.connected else None,
            # CPU seconds of all workers until the end of the hold; compare with wall time x cores
            "cpu_s": round(total.cpu_ms / 1000, 2),
            "hold": _cpu_per_message(timeline),
        },
        "pings": _pings(total, total.connected),
        "loop_lag": _loop_lag(total, per_worker or {}, timeline, wall_start),
        "failures": dict(total.failures),
        "latency_ms": {
            "connect": _ms(total.connect.summary()),
            "echo": _ms(total.echo.summary()),
            "broadcast_fanout": _ms(fanout.summary()),
        },
        "echo": {"sent": total.echo_sent, "answered": total.echo.count, "timeouts": total.echo_timeouts},
        "broadcast": {
            "sent": total.broadcasts_sent,
            "received_total": fanout.count,
            # fan-out latency (ms) of each broadcast, from its own histogram
            "per_broadcast": _per_broadcast(total),
        },
        "timeline": timeline,
        "histograms": {
            "connect": total.connect.to_dict(),
            "echo": total.echo.to_dict(),
            "broadcast_fanout": fanout.to_dict(),
        },
        "errors": {str(k): v for k, v in errors.items()},
        "interrupted": interrupted,
        "ok": (not errors and not interrupted and total.connected == plan.total and not total.failures),
    }
