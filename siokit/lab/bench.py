"""`siokit bench`: run the load generator against a stack and measure every component.

While `siokit load` ramps, holds and broadcasts, this samples the PSS and CPU of nginx, each uWSGI
instance, Redis and the load generator from /proc (containers included), plus kernel slab memory,
and writes one JSON result: the load report and the per-socket cost of each component.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siokit import planner, sysctls
from siokit.lab import broadcast_cpu, procstats, server_series, slo
from siokit.lab.deployment import role_path
from siokit.load.report import write_html
from siokit.render import ROOT

KB = 1024
SAMPLE_EVERY = 5.0
CPU_EVERY = 1.0  # a broadcast's window is seconds long; PSS (slow to read) stays at SAMPLE_EVERY
RESCAN_S = 30.0
IDLE_BEFORE_S = 5.0  # CPU readings before the load starts: the idle rate the ramp's connect CPU is net of
GUARD_GRACE_S = 5.0
CLUSTER_HOSTS = ("lb", "app1", "app2", "redis", "loadgen")


@dataclass
class Target:
    name: str
    url: str  # as seen from the load generator
    binds: list[str]
    admin_token: str
    load_cmd_prefix: list[str]  # how to run `siokit load` (locally, or docker exec)
    report_path: str  # where `siokit load` writes, as seen by it
    fetch_report: Any = None  # callable(local_path) copying the report out, when remote
    roots: dict[int, str | None] | None = None  # loopback: the stack's process trees
    interrupt: Any = None  # callable(load Popen): stop the load generator gracefully (SIGINT)
    containers: set[str] | None = None  # cluster: the stack's containers
    instance_urls: list[str] = field(default_factory=list)  # each server instance's own /healthz base
    prometheus_url: str | None = None  # the monitor host's Prometheus, as this machine reaches it
    no_prometheus: str = "no monitor host"  # why there is none: the report says it


def read_server_count(base: str, namespace: str = "/", timeout: float = 3.0) -> int | None:
    """Sockets the instance itself holds on ``namespace`` (its /healthz), None if it did not answer."""
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=timeout) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    sockets = body.get("sockets")
    if isinstance(sockets, dict):
        n = sockets.get(namespace)
        return int(n) if isinstance(n, int) else 0
    n = body.get("connected")
    return int(n) if isinstance(n, int) else None


_DISCONNECTS = re.compile(r"^siokit_disconnects_total\{([^}]*)\}\s+([0-9.eE+-]+)\s*$", re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_SLOW = re.compile(r"^siokit_slow_consumer_closes_total(?:\{\})?\s+([0-9.eE+-]+)\s*$", re.M)
# Not a python-engineio reason: the fan-out writer's closes of sockets past their backlog bound
# (app/upstream/frame_writer.py), all namespaces, counted again inside "transport close".
SLOW_CONSUMER = "slow consumer close (also in transport close)"
# Only the series parse_disconnects reads. A full scrape, once a second per instance, ran the
# process collector's fd listing: 16-17 ms of a worker's hub at 16,000 sockets on kernels before 6.2.
_DISCONNECT_SERIES = "name[]=siokit_disconnects_total&name[]=siokit_slow_consumer_closes_total"


def parse_disconnects(metrics_text: str, namespace: str = "/") -> dict[str, int]:
    """``siokit_disconnects_total`` of one instance's /metrics, by python-engineio's reason, for
    ``namespace`` (the load's clients; the admin client's namespace apart), and its slow-consumer
    closes under ``SLOW_CONSUMER``."""
    out: dict[str, int] = {}
    for labels, value in _DISCONNECTS.findall(metrics_text):
        kv = dict(_LABEL.findall(labels))
        if kv.get("namespace") == namespace and "reason" in kv:
            out[kv["reason"]] = out.get(kv["reason"], 0) + int(float(value))
    slow = _SLOW.search(metrics_text)
    if slow:
        out[SLOW_CONSUMER] = int(float(slow.group(1)))
    return out


def read_server_disconnects(base: str, namespace: str = "/", timeout: float = 3.0) -> dict[str, int] | None:
    """The instance's own disconnect counters by reason (its /metrics), None if it did not answer."""
    try:
        with urllib.request.urlopen(f"{base}/metrics?{_DISCONNECT_SERIES}", timeout=timeout) as resp:
            return parse_disconnects(resp.read().decode("utf-8", "replace"), namespace)
    except (OSError, ValueError):
        return None


def _count_sampler(stop: threading.Event, urls: list[str], samples: list[dict[str, Any]], t0: float) -> None:
    while not stop.is_set():
        counts = {u: read_server_count(u) for u in urls}
        # the servers' reasons for every disconnect, beside the load generator's drop reasons
        disconnects = {u: read_server_disconnects(u) for u in urls}
        samples.append({"t": round(time.monotonic() - t0, 2), "counts": counts, "disconnects": disconnects})
        stop.wait(1.0)


def compare_disconnects(report: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The servers' disconnects by reason from the first reading to the last one inside the hold
    (the teardown's closes left out), beside the load generator's drops by reason in the same run.

    The two sides name the same event differently: a server's ``transport close`` is the client's
    close or reset, or anything in between (nginx) closing it; a server's ``ping timeout`` is a
    pong that did not arrive in time; ``server disconnect`` reaches the client as an Engine.IO
    close packet. An instance that restarted (its counters went down) or did not answer is named."""
    client = {
        "drops": int(report["connections"].get("drops", 0)),
        "drop_reasons": dict(report["connections"].get("drop_reasons", {})),
    }
    hold_end = float(report["duration"]["ramp_s"]) + float(report["duration"]["hold_s"])
    read = [s for s in samples if "disconnects" in s and s["t"] <= hold_end]
    if not read:
        return {"read": False, "client": client, "note": "no server instance's /metrics read during the run"}
    urls = sorted(read[0]["disconnects"])
    server: dict[str, int] = {}
    notes = []
    for u in urls:
        got = [s["disconnects"].get(u) for s in read if s["disconnects"].get(u) is not None]
        if len(got) < 2:
            notes.append(f"{u}: /metrics not read twice in the run")
            continue
        first, last = got[0], got[-1]
        for reason in set(first) | set(last):
            delta = last.get(reason, 0) - first.get(reason, 0)
            if delta < 0:  # restarted: its counters began again; what it counted since is a lower bound
                notes.append(f"{u}: counters reset (restarted) during the run")
                delta = last.get(reason, 0)
            if delta:
                server[reason] = server.get(reason, 0) + delta
    slow = server.pop(SLOW_CONSUMER, 0)
    return {
        "read": True,
        "window_s": [read[0]["t"], read[-1]["t"]],
        "server_by_reason": dict(sorted(server.items())),
        "server_total": sum(server.values()),
        "server_slow_consumer_closes": slow,
        "client": client,
        "note": "; ".join(sorted(set(notes))) or None,
    }


def compare_counts(report: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The servers' own socket counts at the peak and at the end of the hold, beside the load
    generator's. ``match`` is False (with a note) when they differ or could not be read."""
    if not samples:
        return {"read": False, "match": None, "note": "no server instance to read (see the target)"}
    hold_end = float(report["duration"]["ramp_s"]) + float(report["duration"]["hold_s"])

    def total(sample: dict[str, Any]) -> int | None:
        vals = list(sample["counts"].values())
        return None if any(v is None for v in vals) else sum(vals)

    complete: list[tuple[float, int, Any]] = [(s["t"], t, s["counts"]) for s in samples if (t := total(s)) is not None]
    # the load generator starts a moment after the bench's clock: samples up to ramp + hold lie in the hold
    in_run = [c for c in complete if c[0] <= hold_end]
    client_peak = int(report["connections"]["peak_held"])
    client_end = int(report["connections"]["held_at_end"])
    out: dict[str, Any] = {
        "read": bool(in_run),
        "instances": len(samples[0]["counts"]),
        "unanswered_samples": len(samples) - len(complete),
        "client": {"peak": client_peak, "end": client_end},
    }
    if not in_run:
        out.update(match=False, note="no complete reading of every instance during the run")
        return out
    peak = max(in_run, key=lambda c: c[1])
    end = in_run[-1]
    out["server"] = {"peak": peak[1], "end": end[1], "end_at_s": end[0], "end_per_instance": end[2]}
    notes = []
    if peak[1] != client_peak:
        notes.append(f"peak: servers held {peak[1]}, the load generator {client_peak}")
    if end[1] != client_end:
        notes.append(f"end: servers held {end[1]}, the load generator {client_end}")
    out["match"] = not notes
    out["note"] = "; ".join(notes) or None
    return out


def tune_host(wanted: dict[str, str], proc_sys: Path = Path("/proc/sys")) -> dict[str, str]:
    """Apply the planner's sysctls on this host under the tuning role's rule (siokit/sysctls.py: never
    lower a limit the host has higher, skip what is read-only or missing); return what was skipped and why."""
    paths = {name: proc_sys / name.replace(".", "/") for name in wanted}
    seen: dict[str, tuple[str, str]] = {}
    for name, path in paths.items():
        if not path.exists():
            continue  # "missing": the module is not loaded (nf_conntrack)
        state = "rw" if os.access(path, os.W_OK) else "ro"
        seen[name] = (state, sysctls.norm(path.read_text()))
    decided = sysctls.actions(wanted, seen)
    skipped = {s["name"]: s["reason"] for s in decided["skipped"]}
    for name, value in decided["apply"].items():
        try:
            paths[name].write_text(value)
        except OSError as exc:
            skipped[name] = exc.strerror or str(exc)
    return skipped


def _sampler(
    stop: threading.Event, samples: list[dict[str, Any]], key: str, find: Any, on_low_memory: Any, floor_bytes: int
) -> None:
    procs = find()
    refreshed = refreshed_at_start = time.monotonic()
    tripped = False
    while not stop.is_set():
        if time.monotonic() - refreshed > 10:  # load workers spawned, instances restarted
            procs, refreshed = find(), time.monotonic()
        s = procstats.sample(procs, key=key)
        kernel = procstats.kernel_memory()
        samples.append({"sample": s, "kernel": kernel})
        started = time.monotonic() - refreshed_at_start > GUARD_GRACE_S  # load's SIGINT handler is in place
        if started and not tripped and kernel["mem_available"] < floor_bytes:
            # Stop before the OOM killer picks a victim (it may pick dockerd or the stack itself).
            tripped = True
            on_low_memory(kernel["mem_available"])
        stop.wait(SAMPLE_EVERY)


def _cpu_sampler(
    stop: threading.Event, readings: list[broadcast_cpu.Reading], find: Any, rescan: threading.Event
) -> None:
    """rescan: the load generator has started; look for processes at every reading for RESCAN_S (its
    workers start over its first seconds, and a loopback ramp can be over in 8 s), then every 10 s."""
    procs, refreshed, eager_until = find(), time.monotonic(), 0.0
    while not stop.is_set():
        now = time.monotonic()
        if rescan.is_set():
            rescan.clear()
            eager_until = now + RESCAN_S
        if now < eager_until or now - refreshed > 10:
            procs, refreshed = find(), now
        readings.append(broadcast_cpu.read(procs))
        stop.wait(CPU_EVERY)


def broadcast_costs(readings: list[broadcast_cpu.Reading], report: dict[str, Any]) -> dict[str, Any]:
    """Each broadcast's CPU-seconds per component above the hold's quiet rate (siokit/lab/broadcast_cpu.py)."""
    start = float(report["started_at"]) + float(report["duration"]["ramp_s"])
    hold = (start, start + float(report["duration"]["hold_s"]))
    return broadcast_cpu.per_broadcast(readings, report["broadcast"]["per_broadcast"], hold)


def connect_costs(readings: list[broadcast_cpu.Reading], report: dict[str, Any]) -> dict[str, Any]:
    """The ramp's CPU-seconds per component above the idle rate before it, per connect."""
    start = float(report["started_at"])
    ramp = (start, start + float(report["duration"]["ramp_s"]))
    return broadcast_cpu.per_connect(readings, ramp, int(report["connections"]["established"]))


def _per_socket_kb(delta_bytes: float, sockets: int) -> float | None:
    return round(delta_bytes / sockets / KB, 2) if sockets else None


def summarize(
    baseline: dict[str, Any], samples: list[dict[str, Any]], report: dict[str, Any], t0: float
) -> dict[str, Any]:
    held = int(report["connections"]["peak_held"])
    ramp_s = float(report["duration"]["ramp_s"])
    hold_s = float(report["duration"]["hold_s"])
    peak = max(samples, key=lambda x: sum(x["sample"].pss.values()))
    base_s: procstats.Sample = baseline["sample"]
    components = {}
    for name, pss in sorted(peak["sample"].pss.items()):
        base = base_s.pss.get(name, 0)
        components[name] = {
            "processes": peak["sample"].processes.get(name, 0),
            "pss_mib_before": round(base / KB / KB, 1),
            "pss_mib_peak": round(pss / KB / KB, 1),
            "kb_per_socket": _per_socket_kb(pss - base, held),
        }
    # CPU over the hold window only (idle sockets with Engine.IO pings, plus broadcasts).
    in_hold = [x for x in samples if t0 + ramp_s + 2 <= x["sample"].at <= t0 + ramp_s + hold_s - 2]
    cpu = procstats.cpu_cores(in_hold[0]["sample"], in_hold[-1]["sample"]) if len(in_hold) >= 2 else {}
    slab = peak["kernel"]["slab"] - baseline["kernel"]["slab"]
    tcp = peak["kernel"]["tcp_buffers"] - baseline["kernel"]["tcp_buffers"]
    return {
        "held_sockets": held,
        "components": components,
        "cpu_cores_during_hold": cpu,
        "kernel": {
            "slab_mib_delta": round(slab / KB / KB, 1),
            "kb_per_client": _per_socket_kb(slab + tcp, held),
            "mem_available_gib_at_peak": round(peak["kernel"]["mem_available"] / KB**3, 2),
        },
        "total_kb_per_client": _per_socket_kb(
            sum(peak["sample"].pss.values()) - sum(base_s.pss.values()) + slab + tcp, held
        ),
    }


def server_side(target: Target, start: float, end: float) -> dict[str, Any]:
    """Sockets, CPU and memory per uWSGI instance over [start, end] from the monitor host's Prometheus.
    A Prometheus that fails is reported in the result (and on stderr), not raised: the run stands."""
    if not target.prometheus_url:
        return server_series.not_collected(target.no_prometheus)
    get = server_series.http_getter(target.prometheus_url)
    try:
        return server_series.collect(get, start, end, source=target.prometheus_url)
    except (server_series.PrometheusError, KeyError, ValueError) as exc:
        print(f"bench: no server-side series: {exc}", file=sys.stderr, flush=True)
        return server_series.not_collected(f"Prometheus at {target.prometheus_url} failed: {exc}")


def run(target: Target, load_args: list[str], out: Path, key: str, floor_gib: float = 1.5) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    roots = dict(target.roots or {})

    def find() -> list[procstats.Proc]:
        return procstats.find_processes(roots if target.roots is not None else None, target.containers)

    baseline = {"sample": procstats.sample(find(), key=key), "kernel": procstats.kernel_memory()}
    # The admin token travels in the environment ($SIOKIT_ADMIN_TOKEN; `docker exec -e NAME` copies it from
    # ours), never on a command line, which `ps` shows to every user of the host.
    cmd = [
        *target.load_cmd_prefix,
        "--url",
        target.url,
        "--report",
        target.report_path,
        "--no-progress",
        *(["--bind", ",".join(target.binds)] if target.binds else []),
        *load_args,
    ]
    env = {**os.environ, **({"SIOKIT_ADMIN_TOKEN": target.admin_token} if target.admin_token else {})}
    printable = " ".join(shlex.quote(c) for c in cmd)
    print(f"bench: {printable}", file=sys.stderr, flush=True)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    readings: list[broadcast_cpu.Reading] = []
    rescan = threading.Event()
    cpu_thread = threading.Thread(target=_cpu_sampler, daemon=True, args=(stop, readings, find, rescan))
    cpu_thread.start()
    time.sleep(IDLE_BEFORE_S)
    t0 = time.monotonic()
    wall_start = time.time()  # Prometheus' window (the containers share this machine's clock)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, env=env)
    if target.roots is not None:
        roots[proc.pid] = "loadgen"
    rescan.set()
    guard: dict[str, Any] = {}

    def on_low_memory(available: int) -> None:
        guard["stopped_at_mem_available_gib"] = round(available / KB**3, 2)
        guard["stopped_after_s"] = round(time.monotonic() - t0, 1)
        print(
            f"bench: MemAvailable {available / KB**3:.2f} GiB < floor {floor_gib} GiB: stopping the load",
            file=sys.stderr,
            flush=True,
        )
        (target.interrupt or (lambda p: p.send_signal(signal.SIGINT)))(proc)

    thread = threading.Thread(
        target=_sampler, daemon=True, args=(stop, samples, key, find, on_low_memory, int(floor_gib * KB**3))
    )
    thread.start()
    count_samples: list[dict[str, Any]] = []
    counter = threading.Thread(target=_count_sampler, daemon=True, args=(stop, target.instance_urls, count_samples, t0))
    if target.instance_urls:
        counter.start()
    try:
        proc.communicate()
    finally:
        stop.set()
        thread.join()
        cpu_thread.join()
        if target.instance_urls:
            counter.join()
    wall_end = time.time()
    local_report = out / "load-report.json"
    if target.fetch_report:
        target.fetch_report(local_report)
    if proc.returncode not in (0, 1) or not local_report.exists():
        raise RuntimeError(f"siokit load failed (exit {proc.returncode}); see stderr above")
    report = json.loads(local_report.read_text())
    summary = summarize(baseline, samples, report, t0)
    summary["server_series"] = server_side(target, wall_start, wall_end)
    # Drawn here from the JSON, whichever host ran the load (the cluster's loadgen has no plotly).
    write_html(report, str(out / "load-report.html"), server=summary["server_series"])
    if guard:
        summary["memory_guard"] = guard
    summary["server_counts"] = compare_counts(report, count_samples)
    summary["disconnects"] = compare_disconnects(report, count_samples)
    d = summary["disconnects"]
    if d["read"]:
        print(
            f"bench: drops, load generator: {d['client']['drops']} {d['client']['drop_reasons']}; "
            f"servers' disconnects in the same window: {d['server_total']} {d['server_by_reason']}, "
            f"of which slow-consumer closes: {d['server_slow_consumer_closes']}",
            file=sys.stderr,
            flush=True,
        )
    summary["connect_cpu"] = connect_costs(readings, report)
    if report.get("broadcast", {}).get("per_broadcast"):
        summary["broadcast_cpu"] = broadcast_costs(readings, report)
    if summary["server_counts"]["match"] is False:
        print(f"bench: SERVER COUNT MISMATCH: {summary['server_counts']['note']}", file=sys.stderr, flush=True)
    bench = {"target": target.name, "command": printable, "load": report, "measured": summary}
    (out / "bench.json").write_text(json.dumps(bench, indent=2))
    return bench


def loopback_target(args: argparse.Namespace, out: Path, plan: planner.Plan) -> Target:
    """plan: planned once (main()); the stack renders it, the load generator reads it (--plan), the
    sysctls are its."""
    from siokit.lab import local

    skipped = tune_host(plan.sysctls)
    for key, why in skipped.items():
        print(f"bench: sysctl {key} not set: {why}", file=sys.stderr)
    state = Path(args.state_dir).resolve()
    local.down(state)
    stack = local.LocalStack(state_dir=state, port=args.port, balance="hash_remote_addr", plan=plan)
    local.up(stack)
    binds = [f"127.0.0.{i}" for i in range(2, 2 + plan.loadgen.source_ips)]
    return Target(
        name=f"loopback ({plan.uwsgi.instances_per_host} uWSGI instances, nginx {plan.nginx.worker_processes} "
        f"workers, hash_remote_addr)",
        url=stack.url,
        binds=binds,
        admin_token=stack.admin_secret,
        load_cmd_prefix=[sys.executable, "-m", "siokit.load", "--plan", str(stack.plan_file)],
        report_path=str(out / "load-report.json"),
        roots={pid: None for pid in stack.pids.values()},
        instance_urls=[f"http://127.0.0.1:{p}" for p in stack.app_ports],
        no_prometheus="the loopback stack has no monitor host (no Prometheus scrapes it)",
    )


def cluster_instance_urls() -> list[str]:
    """Each uWSGI instance's own base URL on the cluster, as the host reaches it over the bridge:
    the container's address and the instances systemd runs there (as the drills find them)."""
    from siokit.drills import cluster

    urls = []
    for host in cluster.APP_HOSTS:
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        inspected = cluster.docker_cmd(["inspect", "-f", fmt, host])
        inspected.check_returncode()
        ip = inspected.stdout.split()[0]
        urls += [f"http://{ip}:{port}" for port in cluster.instance_ports(host)]
    return urls


def cluster_prometheus(override: str | None) -> tuple[str | None, str]:
    """(URL, why none): the cluster's Prometheus when its inventory has a monitor host (the `monitor`
    container runs), at the port Molecule publishes on 127.0.0.1 (SIOKIT_PROMETHEUS_PORT, as `make up`
    prints it); `override` (--prometheus) wins, "none" turns it off."""
    from siokit.drills import cluster

    if override:
        return (None, "--prometheus none") if override == "none" else (override, "")
    running = cluster.docker_cmd(["inspect", "-f", "{{.State.Running}}", "monitor"])
    if running.returncode != 0 or running.stdout.strip() != "true":
        return None, "the cluster has no monitor host (no running `monitor` container)"
    return f"http://127.0.0.1:{os.environ.get('SIOKIT_PROMETHEUS_PORT', '9090')}", ""


def cluster_target(args: argparse.Namespace, out: Path) -> Target:
    docker = os.environ.get("DOCKER", "/usr/bin/docker")
    plan_file = role_path("siokit_plan_file")
    deployed = planner.Plan.from_dict(
        json.loads(
            subprocess.run(
                [docker, "exec", "loadgen", "cat", plan_file], capture_output=True, text=True, check=True
            ).stdout
        )
    )
    # Bridged container traffic is tracked by the host's one conntrack table (bridge-nf-call-iptables):
    # the containers' flows all land there, so the host takes the deployed plan's conntrack size.
    conntrack = "net.netfilter.nf_conntrack_max"
    for key, why in tune_host({conntrack: deployed.sysctls[conntrack]}).items():
        print(f"bench: sysctl {key} not set on the host: {why}", file=sys.stderr)
    token_file = ROOT / ".siokit" / "credentials" / "admin_secret"
    token = token_file.read_text().strip() if token_file.exists() else ""
    ips = subprocess.run(
        [docker, "exec", "loadgen", "sh", "-c", "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    remote = "/tmp/siokit-load-report.json"

    def fetch(local_path: Path) -> None:
        subprocess.run([docker, "cp", f"loadgen:{remote}", str(local_path)], check=True)

    def interrupt(_: subprocess.Popen[str]) -> None:
        # `docker exec` does not forward signals: signal the oldest `siokit load` (the parent).
        subprocess.run([docker, "exec", "loadgen", "pkill", "-INT", "-o", "-f", "bin/siokit load"], check=False)

    prometheus, no_prometheus = cluster_prometheus(args.prometheus)
    return Target(
        name="local cluster (lb, app1, app2, redis, loadgen containers, deployed by site.yml)",
        prometheus_url=prometheus,
        no_prometheus=no_prometheus,
        instance_urls=cluster_instance_urls(),
        url=args.url or "http://lb:80",
        binds=ips,
        admin_token=token,
        load_cmd_prefix=[
            docker,
            "exec",
            "-e",
            "SIOKIT_ADMIN_TOKEN",
            "loadgen",
            role_path("loadgen_siokit_binary"),
            "load",
            "--plan",  # sized by the deployed plan, as siokit-load.service is
            plan_file,
        ],
        report_path=remote,
        fetch_report=fetch,
        containers=set(CLUSTER_HOSTS),
        interrupt=interrupt,
    )


SUMMARY_MAX_BYTES = 400_000


def summary_of(bench: dict[str, Any], name: str) -> dict[str, Any]:
    """What goes to bench/results/<name>.json: the whole result (the load report carries no
    per-client data), with the one-second timeline thinned if it would pass ~400 KB."""
    out = {"name": name, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **bench}
    load = out.get("load")
    while load and len(json.dumps(out)) > SUMMARY_MAX_BYTES and len(load.get("timeline", [])) > 50:
        load["timeline"] = load["timeline"][::2]
        load["timeline_thinned"] = load.get("timeline_thinned", 1) * 2
    return out


def write_summary(bench: dict[str, Any], name: str, results_dir: Path) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"--name must be a plain file name, got {name!r}")
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(summary_of(bench, name), indent=1) + "\n")
    return path


def _slo_run(target: Target, args: argparse.Namespace, load_args: list[str], out: Path, key: str) -> dict[str, Any]:
    spec = slo.SloSpec(args.slo_p95_ms, args.step, args.max or args.connections)
    steps: dict[int, dict[str, Any]] = {}

    def run_step(clients: int) -> dict[str, Any]:
        bench = run(
            target,
            [
                "--connections",
                str(clients),
                "--hold",
                str(args.slo_hold),
                "--broadcast-every",
                str(args.slo_broadcast_every),
                *load_args,
            ],
            out / f"step-{clients}",
            key=key,
            floor_gib=args.min_available_gib,
        )
        steps[clients] = bench
        return bench["load"]

    result = slo.search(spec, run_step, log=lambda m: print(m, file=sys.stderr, flush=True))
    for row in result["steps"]:
        m = steps[row["clients"]]["measured"]
        row["server_counts_match"] = m["server_counts"].get("match")
        row["cpu_cores_during_hold"] = m.get("cpu_cores_during_hold")
    return {"target": target.name, "slo": result}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="siokit bench", description=__doc__)
    ap.add_argument("--target", choices=["loopback", "cluster"], default="cluster")
    ap.add_argument("--connections", type=int, default=160_000)
    ap.add_argument("--url", help="override the target URL (cluster: http://lb:80)")
    ap.add_argument("--port", type=int, default=8080, help="loopback: nginx port")
    ap.add_argument("--state-dir", default=".siokit/bench-loopback")
    ap.add_argument(
        "--source-ips",
        type=int,
        metavar="N",
        help="loopback: the load generator's source addresses (default: the fewest its ports allow; more "
        "make each connect()'s port search shorter, BENCHMARKS.md)",
    )
    ap.add_argument("--out", default=f"reports/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    ap.add_argument(
        "--name",
        default=None,
        help="also write the run's summary to RESULTS_DIR/NAME.json (commit it next to its figures)",
    )
    ap.add_argument("--results-dir", default=str(ROOT / "bench" / "results"))
    ap.add_argument(
        "--prometheus",
        metavar="URL",
        help="cluster: the Prometheus to read sockets, CPU and memory per instance from (default: the "
        "monitor host's, when the cluster has one; 'none': skip)",
    )
    ap.add_argument("--by-container", action="store_true", help="memory per component@container")
    ap.add_argument(
        "--min-available-gib",
        type=float,
        default=1.5,
        help="stop the load (SIGINT, clean ramp-down) when MemAvailable falls below this",
    )
    slo_g = ap.add_argument_group("capacity at a latency SLO")
    slo_g.add_argument(
        "--slo-p95-ms",
        type=float,
        default=None,
        help="find the most clients held with p95 broadcast fan-out <= this (steps of --step)",
    )
    slo_g.add_argument("--step", type=int, default=5000, help="clients added per step (default 5000)")
    slo_g.add_argument("--max", type=int, default=None, help="last step (default --connections)")
    slo_g.add_argument("--slo-hold", type=float, default=20.0, help="hold per step, seconds (default 20)")
    slo_g.add_argument(
        "--slo-broadcast-every", type=float, default=2.0, help="broadcast interval during a step's hold (default 2 s)"
    )
    args, load_args = ap.parse_known_args(argv)
    if args.slo_p95_ms is not None:
        try:
            slo.SloSpec(args.slo_p95_ms, args.step, args.max or args.connections)
        except ValueError as exc:
            ap.error(str(exc))
        args.connections = args.max or args.connections  # size the stack for the last step
    if args.prometheus and args.target != "cluster":
        ap.error("--prometheus: the loopback stack has no monitor host")
    if args.source_ips is not None and args.target != "loopback":
        ap.error("--source-ips: the cluster's source addresses come from its inventory")
    plan = None
    if args.target == "loopback":
        from siokit.lab import local

        try:
            plan = local.plan_loopback(args.connections, source_ips=args.source_ips)
        except planner.PlanError as exc:
            if args.source_ips is None:
                raise
            ap.error(f"--source-ips: {exc}")
    out = Path(args.out)
    if args.target == "cluster":
        from siokit.drills.cluster import ClusterMissing, require_cluster

        try:
            require_cluster("make bench")
        except ClusterMissing as exc:
            print(exc, file=sys.stderr)
            return 2
    target = loopback_target(args, out, plan) if plan is not None else cluster_target(args, out)
    key = "container" if args.by_container else "component"
    try:
        if args.slo_p95_ms is not None:
            bench = _slo_run(target, args, load_args, out, key)
            (out / "slo.json").write_text(json.dumps(bench, indent=2))
        else:
            bench = run(
                target,
                ["--connections", str(args.connections), *load_args],
                out,
                key=key,
                floor_gib=args.min_available_gib,
            )
    finally:
        if args.target == "loopback":
            from siokit.lab import local

            with contextlib.suppress(Exception):
                local.down(Path(args.state_dir).resolve())
    if args.slo_p95_ms is not None:
        print(slo.format_table(bench["slo"]))
    else:
        # The server-side series are in bench.json and the HTML; their per-instance summary prints.
        server = {k: v for k, v in bench["measured"]["server_series"].items() if k != "series"}
        print(json.dumps({**bench["measured"], "server_series": server}, indent=2))
    if args.name:
        path = write_summary(bench, args.name, Path(args.results_dir))
        print(f"bench: summary in {path}", file=sys.stderr)
    print(f"bench: results in {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
