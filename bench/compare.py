"""Run ``siokit load`` against several servers at one scale; print server RSS per socket and connect rate.

    .venv/bin/python bench/compare.py --connections 5000 --targets node,pyserver,uwsgi \\
        --bind 127.0.0.2,127.0.0.3 --hold 10 [--out bench/results.json]
    .venv/bin/python bench/compare.py --connections 5000 --targets url --url http://127.0.0.1:8080 \\
        --server-pids 1234,1235   # an already running stack (nginx + uWSGI trees are summed)

Targets:
  node      bench/node-server/server.js (socket.io 4, `npm ci` in bench/node-server first)
  pyserver  bench/py_server.py (python-socketio, gevent pywsgi + gevent-websocket, no Flask)
  uwsgi     the app under plain `uwsgi --http :PORT --gevent G --http-websockets --master`
            (G = max(1000, connections + 100): uWSGI refuses sockets beyond its async cores)
  uwsgi-doc the documentation's `uwsgi --http :PORT --gevent 1000 --http-websockets --master`, as
            written (stock engineio driver, 1000 async cores)
  url       --url, measured through --server-pids if given (e.g. the loopback stack or a cluster)
A single server process is bound by the per-process open-file limit (20,000 here): 160k sockets
need the full stack (`--targets url`) and enough --bind addresses (28k ports per source IP).
Server RSS per socket = (peak RSS of the server's process tree during the run - RSS before) / peak
clients held. Ratios are against node, the reference implementation, when it ran.

Capacity at a latency SLO, siokit's loopback stack and Node side by side from one run:

    .venv/bin/python bench/compare.py --slo-p95-ms 500 --step 1000 --max 10000 --targets siokit,node \\
        [--out slo.json] [--html slo.html]

  siokit    the loopback stack (siokit.lab.local: nginx, 2 uWSGI instances, Redis) on its own port;
            --siokit-var NAME=VALUE (repeatable) sets one of its template variables, e.g.
            app_fanout_core_wait_ms=0 (the value is read as YAML: 0, off, "text")
Each target gets steps of --step clients (a fresh `siokit load` run per step, --slo-hold seconds,
a broadcast every --slo-broadcast-every s); the table shows every step and the capacity (the last
step whose pooled p95 fan-out met the SLO, siokit/lab/slo.py). Beside it, each step's server CPU per
delivered broadcast message: user+system CPU-seconds of the server processes (uWSGI instances only
for siokit, nginx shown apart; the node process) over the load generator's hold window, divided
by the messages received in that window (Engine.IO pings included, so an upper bound), and the
server's own socket count (/healthz, the last reading that returned before the hold ended) at the end
of each step against the load generator's; MISMATCH when they differ.

Each target's ramp is bounded by --ramp-timeout (default 120 s; 0 = wait for the full ramp): it is
passed to `siokit load --ramp-timeout`, which then holds what it reached for --hold seconds and
stops as usual. Such a target is recorded with "ramp_complete": false and "ramp_note" (the reason);
so is one whose ramp ended below the requested count (failed handshakes). The table shows the peak
held against the requested count; a timed-out ramp's connect rate is the clients held at its last
ramp sample over that sample's time (`siokit load`'s own figure also counts handshakes completed
during the hold).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
sys.path.insert(0, str(ROOT))
from siokit.lab import slo  # noqa: E402
from siokit.lab.bench import read_server_count  # noqa: E402
from siokit.load.report import write_slo_html  # noqa: E402


def tree_cpu_s(pids: list[int]) -> float:
    """User+system CPU-seconds of the given processes and their descendants (live ones)."""
    total = 0.0
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs = [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for q in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = q.cpu_times()
                total += t.user + t.system
    return total


def _hold_end(report: dict[str, Any]) -> float:
    """The wall-clock time the load's hold ended: its ``started_at`` plus the ramp and the hold."""
    return float(report["started_at"]) + float(report["duration"]["ramp_s"]) + float(report["duration"]["hold_s"])


def cpu_per_message(report: dict[str, Any], cpu: list[tuple[float, float]]) -> dict[str, Any]:
    """Server CPU-seconds over the load's hold window per broadcast message received in it.

    ``cpu`` holds (wall-clock time, cumulative CPU-seconds); the window is the first and last hold
    sample of the load's timeline, whose times are seconds since its ``started_at``."""
    hold = [s for s in report["timeline"] if s["phase"] == "hold" and "received" in s]
    if len(hold) < 2 or len(cpu) < 2:
        return {"server_cpu_s": None, "received": 0, "us_per_message": None}
    t0 = float(report["started_at"])

    def at(t: float) -> float:
        return min(cpu, key=lambda c: abs(c[0] - t))[1]

    used = at(t0 + hold[-1]["t"]) - at(t0 + hold[0]["t"])
    got = hold[-1]["received"] - hold[0]["received"]
    return {
        "server_cpu_s": round(used, 3),
        "received": got,
        "us_per_message": round(used / got * 1e6, 1) if got else None,
    }


def counts_at_hold_end(report: dict[str, Any], counts: list[tuple[float, int | None]]) -> dict[str, Any]:
    """The servers' own socket count at the end of the hold beside the load generator's.

    ``counts`` holds (wall-clock time the last instance's reading returned, their sum or None if one
    did not answer). Only a reading that returned before the hold ended counts: one that began in the
    hold and returned during the load's closes can read short. Stamped when they began, against a
    guessed start-up offset, such readings were the suspected cause of counts such as 7,099 of 8,000;
    since this, every step has matched while the server answered (BENCHMARKS.md, 2026-12-06 late)."""
    hold_end = _hold_end(report)
    in_hold = [(t, c) for t, c in counts if t <= hold_end and c is not None]
    server = in_hold[-1][1] if in_hold else None
    client = int(report["connections"]["held_at_end"])
    return {
        "server_count_end": server,
        "server_count_end_before_hold_end_s": round(hold_end - in_hold[-1][0], 2) if in_hold else None,
        "client_count_end": client,
        "server_count_match": None if server is None else server == client,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_rss_kb(pids: list[int]) -> int:
    """RSS of the given processes and all their descendants, each counted once."""
    seen: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            for q in [p, *p.children(recursive=True)]:
                seen[q.pid] = q
        except psutil.NoSuchProcess:
            continue
    total = 0
    for q in seen.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            total += q.memory_info().rss
    return total // 1024


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_server(target: str, port: int, token: str, connections: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SIOKIT_ADMIN_SECRET=token, SIOKIT_ADMIN_TOKEN=token)
    if target == "node":
        node_dir = ROOT / "bench" / "node-server"
        if not (node_dir / "node_modules").is_dir():
            # npm's summary to stderr: these scripts print their JSON result on stdout
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=node_dir, check=True, stdout=sys.stderr)
        cmd = ["node", str(node_dir / "server.js"), "--port", str(port)]  # token: $SIOKIT_ADMIN_TOKEN
    elif target == "pyserver":
        cmd = [PY, str(ROOT / "bench" / "py_server.py"), "--port", str(port)]  # token: $SIOKIT_ADMIN_TOKEN
    elif target == "uwsgi":
        uwsgi = shutil.which("uwsgi", path=str(Path(PY).parent)) or shutil.which("uwsgi") or "uwsgi"
        cmd = [
            uwsgi, "--http", f"127.0.0.1:{port}", "--gevent", str(max(1000, connections + 100)),
            "--http-websockets", "--master", "--module", "app.wsgi:application", "--need-app",
            "--die-on-term", "--disable-logging", "--listen", "1024",
        ]  # fmt: skip
    elif target == "uwsgi-doc":
        # Flask-SocketIO's documented command as written, without the kit's tuning: 1000 async cores,
        # uWSGI's http router, and python-engineio's stock (3 s polling) websocket driver.
        uwsgi = shutil.which("uwsgi", path=str(Path(PY).parent)) or shutil.which("uwsgi") or "uwsgi"
        env["SIOKIT_WEBSOCKET_DRIVER"] = "stock"
        cmd = [
            uwsgi, "--http", f"127.0.0.1:{port}", "--gevent", "1000", "--http-websockets", "--master",
            "--module", "app.wsgi:application", "--die-on-term",
        ]  # fmt: skip
    else:
        raise ValueError(target)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_raise_nofile
    )
    wait_port(port)
    time.sleep(1.0)
    return proc


def run_load(url: str, args: argparse.Namespace, token: str, pids: list[int], report: Path) -> dict[str, Any]:
    cmd = [
        PY, "-m", "siokit.load", "--url", url, "--connections", str(args.connections),
        "--concurrency", str(args.concurrency), "--hold", str(args.hold), "--no-progress",
        "--echo-every", str(args.echo_every), "--broadcast-every", str(args.broadcast_every),
        "--report", str(report),
    ]  # fmt: skip
    if args.bind:
        cmd += ["--bind", args.bind]
    if args.ramp_timeout:
        cmd += ["--ramp-timeout", str(args.ramp_timeout)]
    base = tree_rss_kb(pids) if pids else 0
    peak = base
    errlog = report.with_suffix(".stderr")
    with open(errlog, "w") as err:
        proc = subprocess.Popen(
            # the token in the environment, not on the command line (`ps` shows those)
            cmd,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT), SIOKIT_ADMIN_TOKEN=token),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        while proc.poll() is None:
            if pids:
                peak = max(peak, tree_rss_kb(pids))
            time.sleep(0.5)
    if not report.exists():
        raise SystemExit(f"siokit load wrote no report (exit {proc.returncode}):\n{errlog.read_text()[-2000:]}")
    return summarize(json.loads(report.read_text()), base, peak, bool(pids), args.ramp_timeout or None)


def ramp_outcome(r: dict[str, Any], ramp_timeout: float | None) -> tuple[bool, str | None, float | None]:
    """(ramp complete, reason if not, connect rate per s) from a `siokit load` report.

    The generator ends the ramp when every client had its first outcome, or at --ramp-timeout
    (then ``ramp_s`` >= the timeout), or on SIGINT (``interrupted``). After a timeout the workers
    keep connecting during the hold, so ``established / ramp_s`` would overstate the rate: use the
    clients held at the last timeline sample of the ramp instead.
    """
    conns = r["connections"]
    target, peak = conns["target"], conns["peak_held"] or 0
    ramp_s = r["duration"]["ramp_s"]
    rate = conns["connect_rate_per_s"]
    failed = handshake_failures(r["failures"])
    if r.get("interrupted"):
        return False, f"interrupted after {ramp_s:g} s of ramp: {peak}/{target} held", rate
    if ramp_timeout is not None and ramp_s >= ramp_timeout:
        ramp_samples = [s for s in r["timeline"] if s["phase"] == "ramp" and s["t"] > 0]
        last = ramp_samples[-1] if ramp_samples else None
        rate = round(last["connected"] / last["t"], 1) if last else None
        at_end = last["connected"] if last else 0
        return (
            False,
            f"ramp timeout after {ramp_timeout:g} s: {at_end}/{target} held at the end of the ramp, "
            f"peak {peak}/{target}, {failed} failed handshakes",
            rate,
        )
    if peak < target:
        why = ", ".join(f"{k}={v}" for k, v in sorted(r["failures"].items())) or "no failure recorded"
        if r.get("errors"):
            why += f"; worker errors: {len(r['errors'])}"
        return False, f"ramp ended at {peak}/{target} held ({why})", rate
    return True, None, rate


def handshake_failures(failures: dict[str, int]) -> int:
    """Failed connect attempts (first connects and reconnects); not failures on an open socket."""
    return sum(n for reason, n in failures.items() if reason != "protocol_after_connect")


def summarize(
    r: dict[str, Any], base_kb: int, peak_kb: int, measured: bool, ramp_timeout: float | None
) -> dict[str, Any]:
    """One target's result from its `siokit load` report and the server RSS samples."""
    held = r["connections"]["peak_held"] or 0
    lat = r["latency_ms"]
    complete, note, rate = ramp_outcome(r, ramp_timeout)
    return {
        "held": held,
        "target": r["connections"]["target"],
        "ramp_complete": complete,
        "ramp_note": note,
        "failures": r["failures"],
        "handshake_failures": handshake_failures(r["failures"]),
        "server_rss_base_kb": base_kb,
        "server_rss_peak_kb": peak_kb,
        # divided by the peak actually held, not by the requested count
        "server_kb_per_socket": round((peak_kb - base_kb) / held, 1) if measured and held else None,
        "connect_rate_per_s": rate,
        "ramp_s": r["duration"]["ramp_s"],
        "connect_p50_ms": lat["connect"]["p50"],
        "connect_p99_ms": lat["connect"]["p99"],
        "echo_p50_ms": lat["echo"]["p50"],
        "echo_p99_ms": lat["echo"]["p99"],
        "fanout_p50_ms": lat["broadcast_fanout"]["p50"],
        "fanout_p99_ms": lat["broadcast_fanout"]["p99"],
        "client_kb_per_conn": r["client"]["rss_kb_per_connection"],
    }


TABLE_COLS = [
    "server_kb_per_socket", "connect_rate_per_s", "connect_p50_ms", "connect_p99_ms",
    "echo_p50_ms", "fanout_p50_ms", "fanout_p99_ms", "client_kb_per_conn",
]  # fmt: skip


def table_row(res: dict[str, Any]) -> dict[str, str]:
    """The printed columns of one result: peak held against requested, how the ramp ended."""
    ramp = f"{res['ramp_s']:g}s" + ("" if res["ramp_complete"] else " PARTIAL")
    row = {"held/requested": f"{res['held']}/{res['target']}", "ramp": ramp}
    for c in TABLE_COLS:
        row[c] = str(res.get(c))
    return row


def run_slo_step(
    url: str,
    clients: int,
    args: argparse.Namespace,
    token: str,
    groups: dict[str, list[int]],
    health: list[str],
    report: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One SLO step: a load run while sampling the server groups' CPU; (load report, extras)."""
    cmd = [
        PY, "-m", "siokit.load", "--url", url, "--connections", str(clients),
        "--concurrency", str(args.concurrency), "--hold", str(args.slo_hold), "--no-progress",
        "--broadcast-every", str(args.slo_broadcast_every),
        "--report", str(report), "--html", os.devnull,
    ]  # fmt: skip
    if args.bind:
        cmd += ["--bind", args.bind]
    if args.ramp_timeout:
        cmd += ["--ramp-timeout", str(args.ramp_timeout)]
    series: dict[str, list[tuple[float, float]]] = {g: [] for g in groups}
    counts: list[tuple[float, int | None]] = []
    # the token in the environment, not on the command line (`ps` shows those)
    env = dict(os.environ, PYTHONPATH=str(ROOT), SIOKIT_ADMIN_TOKEN=token)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # wall-clock stamps, the load report's clock (its started_at): the same host, so no start-up guess
    while proc.poll() is None:
        for g, pids in groups.items():
            series[g].append((time.time(), tree_cpu_s(pids)))
        if health:
            vals = [read_server_count(u, timeout=2) for u in health]
            counts.append((time.time(), None if None in vals else sum(v for v in vals if v is not None)))
        time.sleep(0.5)
    r = json.loads(report.read_text())
    extras: dict[str, Any] = {g: cpu_per_message(r, series[g]) for g in groups}
    extras.update(counts_at_hold_end(r, counts))
    return r, extras


def _search(
    spec: slo.SloSpec,
    args: argparse.Namespace,
    target: str,
    server: tuple[str, str, dict[str, list[int]], list[str]],
    tmp: Path,
    extras_by_step: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    url, token, groups, health = server

    def run_step(n: int) -> dict[str, Any]:
        r, extras = run_slo_step(url, n, args, token, groups, health, tmp / f"{target}-{n}.json")
        extras_by_step[n] = extras
        time.sleep(2)  # let the server settle the previous step's closes
        return r

    return slo.search(spec, run_step, log=lambda m: print(f"{target}: {m}", file=sys.stderr))


def slo_compare(args: argparse.Namespace, targets: list[str]) -> dict[str, Any]:
    spec = slo.SloSpec(args.slo_p95_ms, args.step, args.max)
    out: dict[str, Any] = {}
    for target in targets:
        extras_by_step: dict[int, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            if target == "siokit":
                from siokit.lab import local

                state = Path(tmp) / "stack"
                ls = local.LocalStack(state_dir=state, port=free_port(), instances=2, balance="hash_remote_addr",
                                      sockets=args.max, overrides=args.siokit_var)  # fmt: skip
                stack.callback(local.down, state)  # also what a failed start left running
                local.up(ls)
                url, token = ls.url, ls.admin_secret
                groups = {"uwsgi": [v for k, v in ls.pids.items() if k.startswith("uwsgi")],
                          "nginx": [ls.pids["nginx"]]}  # fmt: skip
                health = [f"http://127.0.0.1:{p}" for p in ls.app_ports]
            elif target == "node":
                port = free_port()
                proc = start_server("node", port, args.token, args.max)
                stack.callback(lambda p=proc: (p.terminate(), p.wait(timeout=15)))
                url, token = f"http://127.0.0.1:{port}", args.token
                groups, health = {"node": [proc.pid]}, [url]
            else:
                raise SystemExit(f"--slo-p95-ms supports targets siokit and node, not {target!r}")

            result = _search(spec, args, target, (url, token, groups, health), Path(tmp), extras_by_step)
        for row in result["steps"]:
            row.update(extras_by_step.get(row["clients"], {}))
        if target == "siokit" and args.siokit_var:
            result["template_vars"] = args.siokit_var
        out[target] = result
    return out


def print_slo(results: dict[str, Any]) -> None:
    for target, result in results.items():
        print(f"== {target}")
        print(slo.format_table(result))
        for row in result["steps"]:
            cpu = {g: v["us_per_message"] for g, v in row.items() if isinstance(v, dict) and "us_per_message" in v}
            match = {True: "", False: " MISMATCH", None: " (not read)"}[row.get("server_count_match")]
            print(
                f"  {row['clients']:>7} clients: server CPU us per delivered message {cpu}; "
                f"server count at end {row.get('server_count_end')} vs load generator "
                f"{row.get('client_count_end')}{match}"
            )
    if {"siokit", "node"} <= set(results):
        s, n = results["siokit"]["capacity"], results["node"]["capacity"]
        print(f"capacity at the SLO: siokit {s}, node {n}" + (f" ({s / n:.2f}x node)" if n else ""))


def _template_vars(items: list[str]) -> dict[str, Any]:
    """NAME=VALUE pairs; each VALUE read as a YAML scalar, as it would be in an inventory."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--siokit-var takes NAME=VALUE, got {item!r}")
        out[name.strip()] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--targets", default="node,pyserver,uwsgi")
    ap.add_argument("--url", default=None)
    ap.add_argument(
        "--server-pids", default="", help="PID,PID,... of the server processes behind --url (trees are summed)"
    )
    ap.add_argument("--bind", default="127.0.0.2,127.0.0.3")
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--hold", type=float, default=10)
    ap.add_argument(
        "--ramp-timeout",
        type=float,
        default=120,
        help="end each target's ramp after this many seconds and record what it reached (0 = wait for all)",
    )
    ap.add_argument("--echo-every", type=float, default=10)
    ap.add_argument("--broadcast-every", type=float, default=2)
    ap.add_argument(
        "--token",
        default=os.environ.get("SIOKIT_ADMIN_TOKEN") or secrets.token_urlsafe(16),
        help=argparse.SUPPRESS,  # generated per run; $SIOKIT_ADMIN_TOKEN for an already running --url stack
    )
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--html", default=None, help="--slo-p95-ms: also write the capacity-at-SLO chart (HTML) here")
    ap.add_argument("--slo-p95-ms", type=float, default=None, help="capacity-at-SLO mode (targets siokit,node)")
    ap.add_argument("--step", type=int, default=5000)
    ap.add_argument("--max", type=int, default=20000)
    ap.add_argument("--slo-hold", type=float, default=20)
    ap.add_argument("--slo-broadcast-every", type=float, default=2)
    ap.add_argument("--siokit-var", action="append", default=[], metavar="NAME=VALUE",
                    help="--slo-p95-ms: a template variable of the siokit stack (repeatable)")  # fmt: skip
    args = ap.parse_args(argv)
    try:
        args.siokit_var = _template_vars(args.siokit_var)
    except ValueError as exc:
        ap.error(str(exc))
    if args.slo_p95_ms is not None:
        try:
            slo.SloSpec(args.slo_p95_ms, args.step, args.max)
        except ValueError as exc:
            ap.error(str(exc))
        results = slo_compare(args, [t.strip() for t in args.targets.split(",") if t.strip()])
        print_slo(results)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        if args.html:
            write_slo_html(results, args.html)
        return 0
    if args.html:
        ap.error("--html goes with --slo-p95-ms (the load runs write their own HTML reports)")
    if args.siokit_var:
        ap.error("--siokit-var goes with --slo-p95-ms (only that mode starts the siokit stack)")
    if args.ramp_timeout < 0:
        ap.error("--ramp-timeout must be >= 0")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
            report = Path(tmp) / f"{target}.json"
            if target == "url":
                if not args.url:
                    ap.error("target url needs --url")
                pids = [int(x) for x in args.server_pids.split(",") if x.strip()]
                results[target] = run_load(args.url, args, args.token, pids, report)
                continue
            port = free_port()
            proc = start_server(target, port, args.token, args.connections)
            try:
                results[target] = run_load(f"http://127.0.0.1:{port}", args, args.token, [proc.pid], report)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            time.sleep(2)
    ref = results.get("node")
    rows = {name: table_row(res) for name, res in results.items()}
    heads = ["held/requested", "ramp", *TABLE_COLS]
    print("target".ljust(10) + "".join(h.rjust(22) for h in heads))
    for name, res in results.items():
        print(name.ljust(10) + "".join(rows[name][h].rjust(22) for h in heads))
        if not res["ramp_complete"]:
            print(f"  ramp incomplete: {res['ramp_note']}")
        if ref and name != "node" and res["server_kb_per_socket"] and ref["server_kb_per_socket"]:
            res["rss_per_socket_vs_node"] = round(res["server_kb_per_socket"] / ref["server_kb_per_socket"], 2)
            if res["connect_rate_per_s"] and ref["connect_rate_per_s"]:
                res["connect_rate_vs_node"] = round(res["connect_rate_per_s"] / ref["connect_rate_per_s"], 2)
            print(
                f"  vs node: {res['rss_per_socket_vs_node']}x memory per socket, "
                f"{res.get('connect_rate_vs_node')}x connect rate"
            )
        if res["failures"]:
            print(f"  failures: {res['failures']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
