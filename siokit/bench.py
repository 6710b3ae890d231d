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
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siokit import planner, procstats
from siokit.facts import local_facts
from siokit.render import ROOT

KB = 1024
SAMPLE_EVERY = 5.0
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


def tune_host(sysctls: dict[str, str]) -> dict[str, str]:
    """Apply the planner's sysctls on this host where allowed; return what could not be set and why."""
    skipped = {}
    for key, value in sysctls.items():
        path = Path("/proc/sys") / key.replace(".", "/")
        if not path.exists():
            skipped[key] = "no such sysctl here (module not loaded)"
            continue
        try:
            current = " ".join(path.read_text().split())
            if current != " ".join(value.split()):
                path.write_text(value)
        except OSError as exc:
            skipped[key] = exc.strerror or str(exc)
    return skipped


def _sampler(stop: threading.Event, samples: list[dict[str, Any]], key: str, find: Any,
             on_low_memory: Any, floor_bytes: int) -> None:
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


def _per_socket_kb(delta_bytes: float, sockets: int) -> float | None:
    return round(delta_bytes / sockets / KB, 2) if sockets else None


def summarize(baseline: dict[str, Any], samples: list[dict[str, Any]], report: dict[str, Any],
              t0: float) -> dict[str, Any]:
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


def run(target: Target, load_args: list[str], out: Path, key: str, floor_gib: float = 1.5) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    roots = dict(target.roots or {})

    def find() -> list[procstats.Proc]:
        return procstats.find_processes(roots if target.roots is not None else None, target.containers)

    baseline = {"sample": procstats.sample(find(), key=key), "kernel": procstats.kernel_memory()}
    cmd = [*target.load_cmd_prefix, "--url", target.url, "--report", target.report_path, "--no-progress",
           *(["--bind", ",".join(target.binds)] if target.binds else []),
           # --opt=VALUE: a generated token may start with "-", which argparse would read as an option.
           *([f"--admin-token={target.admin_token}"] if target.admin_token else []), *load_args]
    printable = " ".join(shlex.quote("--admin-token=***" if c.startswith("--admin-token=") else c) for c in cmd)
    print(f"bench: {printable}", file=sys.stderr, flush=True)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    if target.roots is not None:
        roots[proc.pid] = "loadgen"
    guard: dict[str, Any] = {}

    def on_low_memory(available: int) -> None:
        guard["stopped_at_mem_available_gib"] = round(available / KB**3, 2)
        guard["stopped_after_s"] = round(time.monotonic() - t0, 1)
        print(f"bench: MemAvailable {available / KB**3:.2f} GiB < floor {floor_gib} GiB: stopping the load",
              file=sys.stderr, flush=True)
        (target.interrupt or (lambda p: p.send_signal(signal.SIGINT)))(proc)

    thread = threading.Thread(target=_sampler, daemon=True,
                              args=(stop, samples, key, find, on_low_memory, int(floor_gib * KB**3)))
    thread.start()
    try:
        proc.communicate()
    finally:
        stop.set()
        thread.join()
    local_report = out / "load-report.json"
    if target.fetch_report:
        target.fetch_report(local_report)
    if proc.returncode not in (0, 1) or not local_report.exists():
        raise RuntimeError(f"siokit load failed (exit {proc.returncode}); see stderr above")
    report = json.loads(local_report.read_text())
    summary = summarize(baseline, samples, report, t0)
    if guard:
        summary["memory_guard"] = guard
    bench = {"target": target.name, "command": printable, "load": report, "measured": summary}
    (out / "bench.json").write_text(json.dumps(bench, indent=2))
    return bench


def loopback_target(args: argparse.Namespace, out: Path) -> Target:
    from siokit import local

    facts = local_facts()
    sources = planner.source_ips_needed(args.connections)
    plan = planner.plan(
        planner.Target(sockets=args.connections, source_ips=sources, colocated=True),
        planner.HostFacts(facts["cores"], facts["memory_gib"], facts["nofile_hard"], facts["somaxconn"]),
    )
    skipped = tune_host({k: v for k, v in plan.sysctls.items() if not k.startswith("fs.")})
    for key, why in skipped.items():
        print(f"bench: sysctl {key} not set: {why}", file=sys.stderr)
    state = Path(args.state_dir).resolve()
    local.down(state)
    stack = local.LocalStack(state_dir=state, port=args.port, instances=plan.uwsgi.instances_per_host,
                             balance="hash_remote_addr", sockets=args.connections)
    local.up(stack)
    binds = [f"127.0.0.{i}" for i in range(2, 2 + sources)]
    return Target(
        name=f"loopback ({plan.uwsgi.instances_per_host} uWSGI instances, nginx {plan.nginx.worker_processes} "
             f"workers, hash_remote_addr)",
        url=stack.url, binds=binds, admin_token=stack.admin_secret,
        load_cmd_prefix=[sys.executable, "-m", "siokit.load"], report_path=str(out / "load-report.json"),
        roots={pid: None for pid in stack.pids.values()},
    )


def cluster_target(args: argparse.Namespace, out: Path) -> Target:
    docker = os.environ.get("DOCKER", "/usr/bin/docker")
    # Bridged container traffic is tracked by the host's one conntrack table (bridge-nf-call-iptables):
    # every client is two flows (loadgen -> lb, lb -> app), more than the default 262,144 at 160k.
    flows = str(max(1_048_576, 4 * args.connections))
    for key, why in tune_host({"net.netfilter.nf_conntrack_max": flows}).items():
        print(f"bench: sysctl {key} not set on the host: {why}", file=sys.stderr)
    token_file = ROOT / ".siokit" / "credentials" / "admin_secret"
    token = token_file.read_text().strip() if token_file.exists() else ""
    ips = subprocess.run(
        [docker, "exec", "loadgen", "sh", "-c", "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    remote = "/tmp/siokit-load-report.json"

    def fetch(local_path: Path) -> None:
        subprocess.run([docker, "cp", f"loadgen:{remote}", str(local_path)], check=True)

    def interrupt(_: subprocess.Popen[str]) -> None:
        # `docker exec` does not forward signals: signal the oldest `siokit load` (the parent).
        subprocess.run([docker, "exec", "loadgen", "pkill", "-INT", "-o", "-f", "bin/siokit load"], check=False)

    return Target(
        name="local cluster (lb, app1, app2, redis, loadgen containers, deployed by site.yml)",
        url=args.url or "http://lb:80", binds=ips, admin_token=token,
        load_cmd_prefix=[docker, "exec", "loadgen", "/opt/siokit/venv/bin/siokit", "load"],
        report_path=remote, fetch_report=fetch, containers=set(CLUSTER_HOSTS), interrupt=interrupt,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="siokit bench", description=__doc__)
    ap.add_argument("--target", choices=["loopback", "cluster"], default="cluster")
    ap.add_argument("--connections", type=int, default=160_000)
    ap.add_argument("--url", help="override the target URL (cluster: http://lb:80)")
    ap.add_argument("--port", type=int, default=8080, help="loopback: nginx port")
    ap.add_argument("--state-dir", default=".siokit/bench-loopback")
    ap.add_argument("--out", default=f"reports/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    ap.add_argument("--by-container", action="store_true", help="memory per component@container")
    ap.add_argument("--min-available-gib", type=float, default=1.5,
                    help="stop the load (SIGINT, clean ramp-down) when MemAvailable falls below this")
    args, load_args = ap.parse_known_args(argv)
    out = Path(args.out)
    if args.target == "cluster":
        from siokit.drills.cluster import ClusterMissing, require_cluster

        try:
            require_cluster("make bench")
        except ClusterMissing as exc:
            print(exc, file=sys.stderr)
            return 2
    target = loopback_target(args, out) if args.target == "loopback" else cluster_target(args, out)
    try:
        bench = run(target, ["--connections", str(args.connections), *load_args], out,
                    key="container" if args.by_container else "component", floor_gib=args.min_available_gib)
    finally:
        if args.target == "loopback":
            from siokit import local

            with contextlib.suppress(Exception):
                local.down(Path(args.state_dir).resolve())
    m = bench["measured"]
    print(json.dumps(m, indent=2))
    print(f"bench: results in {out}/bench.json and {out}/load-report.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
