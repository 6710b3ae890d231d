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
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


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
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=node_dir, check=True)
        cmd = ["node", str(node_dir / "server.js"), "--port", str(port), "--token", token]
    elif target == "pyserver":
        cmd = [PY, str(ROOT / "bench" / "py_server.py"), "--port", str(port), "--token", token]
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
            cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), SIOKIT_ADMIN_TOKEN=token),
            stdout=subprocess.DEVNULL, stderr=err,
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
    ap.add_argument("--token", default="bench-s3cret")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
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
