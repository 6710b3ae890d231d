"""`make drills`: fault drills against the local cluster while `siokit load` holds sockets.

Each drill states its expectations before it runs, injects one fault under load, and reports the
sockets before / lowest during / after, the time to recover, handshake failures, broadcasts and
room messages sent vs received during the fault, and pass or fail (every expectation is a check
on a measured number, see siokit/drills/measure.py). Results: JSON, and a Markdown table for
RELIABILITY.md.

    python -m siokit.drills [--only host-loss,kill9] [--connections 3000] [--out reports/drills]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siokit.drills import cluster
from siokit.drills.load import LoadRun, Sampler, ServerSamples, wait_for_sockets
from siokit.drills.measure import Expect, Measures, Window, evaluate, measure
from siokit.drills.probe import RoomProbe

ROOT = Path(__file__).resolve().parents[2]
BROADCAST_EVERY = 5.0
PRE_S = 10.0  # steady state before the fault
LB_URL = "http://127.0.0.1:8080"  # the lb's port published on the host (molecule/cluster)


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


@dataclass(frozen=True)
class Drill:
    key: str
    number: int
    title: str
    expectations: tuple[Expect, ...]
    observe_s: float  # the load holds PRE_S + observe_s + margin
    action: Callable[[Context, Sampler], Fault]


def _main_pid(host: str, port: int) -> int:
    return int(cluster.run(host, f"systemctl show -p MainPID --value siokit-uwsgi@{port}.service").strip())


def _wait_until(pred: Callable[[], bool], timeout: float, every: float = 0.5) -> float | None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return time.time()
        time.sleep(every)
    return None


def _row_at(samples: ServerSamples, t: float) -> dict[str, int | None]:
    before = [row for ts, row in samples.rows if ts <= t]
    return before[-1] if before else (samples.rows[0][1] if samples.rows else {})


def _others_dropped(samples: ServerSamples, victim: str, start: float, end: float) -> int:
    """Sockets the instances other than `victim` lost between `start` and `end` (lowest vs before)."""
    ref = _row_at(samples, start)
    lost = 0
    for key, before in ref.items():
        if key == victim or not before:
            continue
        # An instance too busy to answer /metrics within 2 s (None) has not lost its sockets.
        during = [v for ts, row in samples.rows if start < ts <= end if (v := row.get(key)) is not None]
        lowest = min(during) if during else before
        lost += max(0, before - lowest)
    return lost


def kill9(ctx: Context, sampler: Sampler) -> Fault:
    port = ctx.ports["app1"][0]
    victim = f"app1:{port}"
    pid = _main_pid("app1", port)
    start = time.time()
    cluster.run("app1", f"kill -9 {pid}")
    back = _wait_until(lambda: _main_pid("app1", port) not in (0, pid), 30)
    time.sleep(20)
    end = time.time()
    return Fault(
        start,
        start,
        end,
        {
            "victim": victim,
            "restarted_after_s": round(back - start, 1) if back else None,
            "others_dropped": _others_dropped(sampler.samples, victim, start, end),
        },
    )


def redis_outage(ctx: Context, sampler: Sampler) -> Fault:
    start = time.time()
    cluster.run("redis", "systemctl stop redis-server")
    time.sleep(10)
    cluster.run("redis", "systemctl start redis-server")
    end = time.time()
    time.sleep(25)  # resubscribe, then enough messages after it to judge the resumption
    return Fault(start, end, time.time())


def nginx_reload(ctx: Context, sampler: Sampler) -> Fault:
    def workers() -> set[str]:
        out = cluster.run("lb", "pgrep -f 'nginx: worker process' || true")
        return set(out.split())

    old = workers()
    cluster.run("lb", "cp -p /etc/nginx/siokit.conf /tmp/siokit.conf.drill")
    start = time.time()
    # A changed config: a comment with the time, so the file differs from the running one.
    cluster.run(
        "lb", f"echo '# drill reload {int(start)}' >> /etc/nginx/siokit.conf && nginx -t -q && systemctl reload nginx"
    )
    # New connects while the old workers still hold their websockets: a second, small load.
    probe = LoadRun("reload-new", 200, 5, None, ctx.token)
    probe.start(ctx.out / "reload-new.log")
    new_report = probe.wait(120)
    time.sleep(5)
    end = time.time()
    left = old & workers()
    # Put the deployed file back (the infra tests compare it with the rendered one).
    cluster.run("lb", "cp -p /tmp/siokit.conf.drill /etc/nginx/siokit.conf && systemctl reload nginx")
    return Fault(
        start,
        start,
        end,
        {
            "new_connects_failed": sum(new_report.get("failures", {}).values()),
            "new_connects_held": new_report["connections"]["peak_held"],
            "old_workers_left": len(left),
        },
    )


def host_loss(ctx: Context, sampler: Sampler) -> Fault:
    start = time.time()
    stopped = cluster.docker_cmd(["stop", "app2"], timeout=120)
    if stopped.returncode != 0:
        raise RuntimeError(f"docker stop app2: {stopped.stderr.strip()}")
    stop_s = time.time() - start
    time.sleep(max(0.0, 40 - stop_s))
    end = time.time()
    started = cluster.docker_cmd(["start", "app2"], timeout=120)
    if started.returncode != 0:
        raise RuntimeError(f"docker start app2: {started.stderr.strip()}")
    ports = ctx.ports["app2"]
    up = _wait_until(lambda: all(v is not None for v in cluster.instance_sockets("app2", ports).values()), 90, 1)
    # The host is back: does nginx send it new clients again (after fail_timeout)? A second load.
    time.sleep(12)
    probe = LoadRun("host-back", 300, 10, None, ctx.token)
    probe.start(ctx.out / "host-back.log")
    time.sleep(8)
    on_app2 = sum(v or 0 for v in cluster.instance_sockets("app2", ports).values())
    back_report = probe.wait(120)
    return Fault(
        start,
        start,
        end,
        {
            "docker_stop_s": round(stop_s, 1),
            "app2_serving_after_start_s": round(up - end, 1) if up else None,
            "new_clients_on_returned_host": on_app2,
            "new_connects_failed_after_return": sum(back_report.get("failures", {}).values()),
            "app2_share_before": ServerSamples().host_total(_row_at(sampler.samples, start), "app2"),
        },
    )


DRILLS: dict[str, Drill] = {
    d.key: d
    for d in (
        Drill(
            "host-loss",
            5,
            "An app host stopped entirely (docker stop app2), then started again",
            (
                Expect("recover_s", "<=", 30, "every client back on the surviving host within 30 s"),
                Expect("handshake_failures", "==", 0, "no new handshake fails"),
                Expect("sockets_after", ">=", "sockets_before"),
                Expect("new_clients_on_returned_host", ">", 0, "the host returns and takes new clients"),
                Expect("new_connects_failed_after_return", "==", 0),
            ),
            40,
            host_loss,
        ),
        Drill(
            "kill9",
            1,
            "kill -9 of one uWSGI instance (systemd restarts it)",
            (
                Expect("recover_s", "<=", 10, "its clients are back within 10 s"),
                Expect("others_dropped", "==", 0, "the other instances lose nothing"),
                Expect("handshake_failures", "==", 0),
                Expect("restarted_after_s", "<=", 10, "systemd restarts it"),
            ),
            25,
            kill9,
        ),
        Drill(
            "redis",
            2,
            "Redis stopped 10 s, then started",
            (
                Expect("sockets_lowest", ">=", "sockets_before", "no client drops"),
                Expect("handshake_failures", "==", 0),
                Expect("room_after_ratio", ">=", 0.99, "cross-instance delivery resumes by itself"),
                Expect("broadcast_after_ratio", ">=", 0.99),
            ),
            40,
            redis_outage,
        ),
        Drill(
            "reload",
            3,
            "nginx reload with a changed config, under load",
            (
                Expect("sockets_lowest", ">=", "sockets_before", "no existing websocket drops"),
                Expect("handshake_failures", "==", 0),
                Expect("new_connects_failed", "==", 0, "new connects succeed"),
                Expect("new_connects_held", ">=", 200),
            ),
            25,
            nginx_reload,
        ),
    )
}
NOT_DONE = {
    4: "A rolling upgrade through site.yml under load",
    6: "A reconnect storm (lb restarted)",
    7: "A slow consumer",
    8: "Abuse: one client sending chat in a tight loop (the rate limit is tested on loopback instead)",
    9: "Ephemeral ports exhausted on one loadgen source IP",
    10: "Websockets blocked on the way (polling fallback)",
}


def _ratio_after(sent: int, expected: int, got: int) -> float | None:
    return round(got / expected, 4) if expected else None


def run_drill(drill: Drill, ctx: Context) -> dict[str, Any]:
    print(f"drill {drill.number} {drill.key}: {drill.title}", file=sys.stderr, flush=True)
    for e in drill.expectations:
        print(f"  expect {e.text()}" + (f"  ({e.why})" if e.why else ""), file=sys.stderr, flush=True)
    sampler = Sampler(ctx.ports).start()
    hold = PRE_S + drill.observe_s + 60
    load = LoadRun(drill.key, ctx.connections, hold, BROADCAST_EVERY, ctx.token).start(
        ctx.out / f"{drill.key}-load.log"
    )
    probe: RoomProbe | None = None
    try:
        reached = wait_for_sockets(sampler, ctx.connections, 180)
        if reached < ctx.connections:
            raise RuntimeError(f"the load ramped to {reached} of {ctx.connections} sockets within 180 s")
        probe = RoomProbe(LB_URL)
        probe.start()
        time.sleep(PRE_S)
        fault = drill.action(ctx, sampler)
    finally:
        log = probe.stop() if probe else None
        report = load.wait(hold + 300)
        samples = sampler.stop()
    window = Window(fault.start, fault.end, fault.observe_end)
    m: Measures = measure(report, window)
    m.extra.update(fault.extra)
    if log:
        m.room_sent, m.room_expected, m.room_received = log.in_window(fault.start, fault.observe_end)
        after = (fault.end + 5, fault.observe_end)
        m.extra["room_after_ratio"] = _ratio_after(*log.in_window(*after))
    after_m = (
        measure(report, Window(fault.end + 5, fault.end + 5, fault.observe_end))
        if fault.observe_end > fault.end + 10
        else None
    )
    if after_m:
        m.extra["broadcast_after_ratio"] = _ratio_after(
            after_m.broadcasts_sent, after_m.broadcast_deliveries_expected, after_m.broadcast_deliveries
        )
    checks = evaluate(m, drill.expectations)
    result = {
        "drill": drill.number,
        "key": drill.key,
        "title": drill.title,
        "expectations": [{"expect": e.text(), "why": e.why} for e in drill.expectations],
        "measured": m.as_dict(),
        "checks": [{"expect": c.expect, "actual": c.actual, "passed": c.passed} for c in checks],
        "passed": all(c.passed for c in checks),
        "window": {"fault_start": fault.start, "fault_end": fault.end, "observe_end": fault.observe_end},
        "server_samples": [{"t": round(t, 1), **row} for t, row in samples.rows],
        "load_report_counters": {k: report.get(k) for k in ("connections", "failures", "broadcast")},
    }
    print(
        f"  {'PASS' if result['passed'] else 'FAIL'}: "
        + "; ".join(f"{c.expect} -> {c.actual}{'' if c.passed else ' (FAILED)'}" for c in checks),
        file=sys.stderr,
        flush=True,
    )
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    head = (
        "| # | drill | sockets before / lowest / after | recover | handshake failures | broadcasts: sent, "
        "deliveries / expected | room msgs: sent, deliveries / expected | result |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in sorted(results, key=lambda r: r["drill"]):
        if "measured" not in r:
            rows.append(f"| {r['drill']} | {r['title']} | | | | | | NOT MEASURED: {r.get('error', '')} |")
            continue
        m = r["measured"]
        rec = "never" if m["recover_s"] is None else f"{m['recover_s']:g} s"
        failed = [c["expect"] + f" (got {c['actual']})" for c in r["checks"] if not c["passed"]]
        verdict = "pass" if r["passed"] else "FAIL: " + "; ".join(failed)
        rows.append(
            f"| {r['drill']} | {r['title']} | {m['sockets_before']:,} / {m['sockets_lowest']:,} / "
            f"{m['sockets_after']:,} | {rec} | {m['handshake_failures']} | {m['broadcasts_sent']}, "
            f"{m['broadcast_deliveries']:,} / {m['broadcast_deliveries_expected']:,} | {m['room_sent']}, "
            f"{m['room_received']} / {m['room_expected']} | {verdict} |"
        )
    for n, title in sorted(NOT_DONE.items()):
        if n not in {r["drill"] for r in results}:
            rows.append(f"| {n} | {title} | | | | | | not done |")
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="siokit drills", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", default=",".join(DRILLS), help=f"comma-separated drills (default: {','.join(DRILLS)})")
    ap.add_argument("--connections", type=int, default=3000)
    ap.add_argument("--out", default=f"reports/drills-{time.strftime('%Y%m%d-%H%M%S')}")
    args = ap.parse_args(argv)
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in DRILLS]
    if unknown:
        print(f"siokit drills: unknown drill(s) {', '.join(unknown)}; known: {', '.join(DRILLS)}", file=sys.stderr)
        return 2
    try:
        cluster.require_cluster("make drills")
    except cluster.ClusterMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    token_file = ROOT / ".siokit" / "credentials" / "admin_secret"
    if not token_file.exists():
        print(
            f"make drills: no admin secret at {token_file.relative_to(ROOT)}: deploy with `make up` from this "
            "checkout first",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        args.connections, out, token_file.read_text().strip(), {h: cluster.instance_ports(h) for h in cluster.APP_HOSTS}
    )
    results = []
    for key in keys:
        try:
            results.append(run_drill(DRILLS[key], ctx))
        except (RuntimeError, ValueError) as exc:
            print(f"  drill {key} could not be measured: {exc}", file=sys.stderr, flush=True)
            results.append(
                {
                    "drill": DRILLS[key].number,
                    "key": key,
                    "title": DRILLS[key].title,
                    "error": str(exc),
                    "passed": False,
                }
            )
        (out / "drills.json").write_text(json.dumps(results, indent=2))
    (out / "drills.md").write_text(markdown(results))
    print(
        f"drills: {sum(r['passed'] for r in results)}/{len(results)} passed; {out}/drills.json, {out}/drills.md",
        file=sys.stderr,
    )
    return 0 if all(r["passed"] for r in results) else 1
