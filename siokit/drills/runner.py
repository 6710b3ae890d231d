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
import os
import sys
import time
from pathlib import Path
from typing import Any

from siokit.drills import cluster
from siokit.drills.abuse import abuse
from siokit.drills.base import BROADCAST_EVERY, LB_URL, Context, Drill, Fault, row_at, wait_until
from siokit.drills.fallback import websocket_blocked
from siokit.drills.load import LoadRun, Sampler, ServerSamples, wait_for_sockets
from siokit.drills.measure import (
    Expect,
    Measures,
    Window,
    back_after,
    dip_and_back,
    evaluate,
    longest_below,
    measure,
)
from siokit.drills.ports import CLIENTS, ports_exhausted
from siokit.drills.probe import ProbeLog, RoomProbe
from siokit.drills.reload import nginx_reload
from siokit.drills.rolling import rolling_upgrade
from siokit.drills.slow import slow_consumer
from siokit.drills.storm import reconnect_storm

ROOT = Path(__file__).resolve().parents[2]
PRE_S = 10.0  # steady state before the fault


def _main_pid(host: str, port: int) -> int:
    return int(cluster.run(host, f"systemctl show -p MainPID --value siokit-uwsgi@{port}.service").strip())


def _others_dropped(samples: ServerSamples, victim: str, start: float, end: float) -> int:
    """Sockets the instances other than `victim` lost between `start` and `end` (lowest vs before)."""
    ref = row_at(samples, start)
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
    back = wait_until(lambda: _main_pid("app1", port) not in (0, pid), 30)
    time.sleep(20)
    end = time.time()
    # The restarted instance must take new clients again: a second, small load while it holds none
    # of the first (least_conn should send it most of them).
    fresh = LoadRun("kill9-new", 300, 10, None, ctx.token)
    fresh.start(ctx.out / "kill9-new.log")
    time.sleep(8)
    on_victim = cluster.instance_sockets("app1", [port])[port]
    fresh_report = fresh.wait(120)
    return Fault(
        start,
        start,
        end,
        {
            "victim": victim,
            "restarted_after_s": round(back - start, 1) if back else None,
            "others_dropped": _others_dropped(sampler.samples, victim, start, end),
            "new_clients_on_restarted_instance": on_victim,
            "new_connects_failed": sum(fresh_report.get("failures", {}).values()),
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
    up = wait_until(lambda: all(v is not None for v in cluster.instance_sockets("app2", ports).values()), 90, 1)
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
            "app2_share_before": ServerSamples().host_total(row_at(sampler.samples, start), "app2"),
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
                Expect("new_clients_on_restarted_instance", ">", 0, "it takes new clients again"),
                Expect("new_connects_failed", "==", 0),
            ),
            25,
            kill9,
        ),
        Drill(
            "rolling",
            4,
            "A rolling upgrade through site.yml under load (a new app_release, then the previous one back)",
            (
                Expect("instances_on_new_release", "==", "instances", "site.yml upgraded every instance"),
                Expect("instances_restarted_by_upgrade", "==", "instances"),
                Expect("instances_back_on_previous", "==", "instances", "and rolled every one back"),
                Expect("min_instances_serving", ">=", 1, "at no moment zero instances serving"),
                Expect("handshake_failures", "==", 0),
                Expect("longest_below_before_s", "<=", 30, "no stretch of more than 30 s without every client"),
                Expect("back_after_fault_end_s", "<=", 30, "all clients back within 30 s of the last restart"),
                Expect("sockets_after", ">=", "sockets_before"),
            ),
            600,
            rolling_upgrade,
        ),
        Drill(
            "redis",
            2,
            "Redis stopped 10 s, then started",
            (
                Expect("sockets_lowest", ">=", "sockets_before", "no client drops"),
                Expect("handshake_failures", "==", 0),
                Expect("room_after_ratio", ">=", 0.99, "cross-instance delivery resumes by itself"),
                Expect("room_full_again_after_s", "<=", 20, "within 20 s of Redis being back"),
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
                Expect("judged_before_drain", "==", True, "the no-drop window ends before the old workers' bound"),
                Expect("old_workers_left", "==", 0, "old workers drain within a bounded worker_shutdown_timeout"),
                Expect("old_workers_drained_after_s", "<=", "drain_bound_s"),
                Expect("back_after_drain_s", "<=", 30, "the drained clients come back on the new workers"),
            ),
            90,
            nginx_reload,
        ),
        Drill(
            "storm",
            6,
            "A reconnect storm: nginx restarted on the lb, every client drops at once",
            (
                Expect("recover_s", "<=", 60, "every client back within 60 s, with jittered backoff"),
                Expect("sockets_after", ">=", "sockets_before"),
                Expect(
                    "max_instance_sockets",
                    "<=",
                    "planned_sockets_per_instance",
                    "no instance past its planned share",
                ),
                Expect("max_instance_vs_even_share", "<=", 1.5, "the storm does not pile onto a few instances"),
            ),
            100,
            reconnect_storm,
        ),
        Drill(
            "slow",
            7,
            "A slow consumer: a websocket that stops reading while its room's messages continue",
            (
                Expect("slow_consumer_closes", ">=", 1, "its instance cuts it off"),
                Expect("cut_off_after_s", "<=", 60),
                Expect("client_saw_close", "==", True),
                Expect("rss_growth_mib", "<=", 16, "the instance's memory stays bounded (1 MiB backlog)"),
                Expect("other_receivers_ratio", ">=", 0.99, "the other clients in the room get everything"),
                Expect("sockets_lowest", ">=", "sockets_before", "the load's sockets are unaffected"),
                Expect("handshake_failures", "==", 0),
            ),
            110,
            slow_consumer,
        ),
        Drill(
            "abuse",
            8,
            "Abuse: one client sending chat in a tight loop",
            (
                Expect("chats_relayed", "<=", "chats_allowed", "held to its rate and burst per session"),
                Expect("flood_cut_off", ">=", 1, "cut off past the drop limit"),
                Expect("echo_p95_during_ms", "<=", "echo_p95_bound_ms", "others' echo latency in its normal range"),
                Expect("echo_timeouts_during", "==", 0),
                Expect("sockets_lowest", ">=", "sockets_before", "no other client drops"),
            ),
            50,
            abuse,
        ),
        Drill(
            "fallback",
            10,
            "Websockets blocked on the way (a listener that strips Upgrade): long-polling fallback",
            (
                Expect("clients_on_polling", "==", "fallback_clients", "every client falls back to polling"),
                Expect("acks_failed", "==", 0, "acks work over polling"),
                Expect("fallback_room_ratio", ">=", 0.99, "room messages reach every member"),
                Expect("fallback_broadcasts_received", ">=", "fallback_broadcasts_expected", "broadcasts arrive"),
                Expect("polling_echo_timeouts", "==", 0),
                Expect("lb_config_restored", "==", True),
                Expect("sockets_lowest", ">=", "sockets_before", "the websocket clients are unaffected"),
            ),
            200,
            websocket_blocked,
        ),
        Drill(
            "ports",
            9,
            "Ephemeral ports exhausted on one loadgen source IP",
            (
                Expect("one_ip_addr_unavailable", ">=", 1, "the shortage shows as EADDRNOTAVAIL"),
                Expect("diagnosis_names_the_ip", "==", True, "the tool says which source IP ran out"),
                Expect("spread_failures", "==", 0, "the planned source IPs carry the same load"),
                Expect("spread_connected", ">=", CLIENTS),
                Expect(
                    "plan_clients_per_source_ip",
                    "<=",
                    "plan_usable_ports_per_source_ip",
                    "the plan keeps each source IP under its ports",
                ),
                Expect("holders_left", "==", 0, "the port holders are gone"),
            ),
            120,
            ports_exhausted,
        ),
    )
}
NOT_DONE: dict[int, str] = {}


def _ratio_after(sent: int, expected: int, got: int) -> float | None:
    return round(got / expected, 4) if expected else None


def _during_fault(report: dict[str, Any], log: ProbeLog | None, fault: Fault) -> dict[str, Any]:
    """Broadcasts and room messages sent between the fault's start and end, and what they reached
    (pub/sub keeps nothing for a subscriber that is away: this is the loss, counted), and when a
    room message first reached every receiver again after the fault ended."""
    out: dict[str, Any] = {}
    try:
        during = measure(report, Window(fault.start, fault.start, fault.end))
    except ValueError:
        during = None
    if during:
        out["fault_broadcasts_sent"] = during.broadcasts_sent
        out["fault_broadcast_deliveries"] = during.broadcast_deliveries
        out["fault_broadcast_deliveries_lost"] = during.broadcast_deliveries_expected - during.broadcast_deliveries
    if log:
        sent, expected, got = log.in_window(fault.start, fault.end)
        out["fault_room_sent"], out["fault_room_deliveries"], out["fault_room_deliveries_lost"] = (
            sent,
            got,
            expected - got,
        )
        back = log.first_full_after(fault.end)
        out["room_full_again_after_s"] = round(back - fault.end, 1) if back else None
    return out


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
        reached = wait_for_sockets(sampler, ctx.connections, 180, load)
        if reached < ctx.connections:
            raise RuntimeError(f"the load ramped to {reached} of {ctx.connections} sockets within 180 s")
        probe = RoomProbe(LB_URL)
        try:
            probe.start()
        except RuntimeError:
            probe = None
            raise
        time.sleep(PRE_S)
        fault = drill.action(ctx, sampler)
    finally:
        log = probe.stop() if probe else None
        report = load.wait(hold + 300)
        samples = sampler.stop()
    window = Window(fault.start, fault.end, fault.observe_end)
    m: Measures = measure(report, window)
    m.extra.update(fault.extra)
    if fault.drain_at is not None:
        m.extra["dropped_at_drain"], m.extra["back_after_drain_s"] = dip_and_back(
            report, fault.drain_at, m.sockets_before
        )
    if log:
        m.room_sent, m.room_expected, m.room_received = log.in_window(fault.start, fault.observe_end)
        after = (fault.end + 5, fault.observe_end)
        m.extra["room_after_ratio"] = _ratio_after(*log.in_window(*after))
        m.extra["room_probe_reconnects"] = log.connects - log.receivers - 1
        m.extra["room_probe_join_failures"] = log.join_failures
    after_m = (
        measure(report, Window(fault.end + 5, fault.end + 5, fault.observe_end))
        if fault.observe_end > fault.end + 10
        else None
    )
    if after_m:
        m.extra["broadcast_after_ratio"] = _ratio_after(
            after_m.broadcasts_sent, after_m.broadcast_deliveries_expected, after_m.broadcast_deliveries
        )
    if fault.end > fault.start:  # a fault that lasted: what was sent while it lasted, and what arrived
        m.extra.update(_during_fault(report, log, fault))
        m.extra["back_after_fault_end_s"] = back_after(report, fault.end, m.sockets_before)
        m.extra["longest_below_before_s"] = longest_below(report, window, m.sockets_before)
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
    # What each drill measured beyond the common columns (its own expectations read these).
    details = [
        f"- drill {r['drill']} ({r['key']}): "
        + ", ".join(f"{k} {json.dumps(v)}" for k, v in r["measured"]["extra"].items())
        for r in sorted(results, key=lambda r: r["drill"])
        if r.get("measured", {}).get("extra")
    ]
    return head + "\n".join(rows) + "\n" + ("\n" + "\n".join(details) + "\n" if details else "")


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
    # SIOKIT_STATE_DIR: the checkout that deployed the cluster, as for scripts/cluster.sh.
    state = Path(os.environ.get("SIOKIT_STATE_DIR") or ROOT / ".siokit")
    token_file = state / "credentials" / "admin_secret"
    if not token_file.exists():
        print(
            f"make drills: no admin secret at {token_file}: deploy with `make up` from this checkout first "
            "(or point SIOKIT_STATE_DIR at the .siokit of the checkout that did)",
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
