"""uWSGI CPU per broadcast delivery, per Engine.IO ping round trip, and memory per socket (loopback).

One uWSGI instance (the deployment's ini, rendered for loopback by siokit/lab/servers.py), N idle websocket clients
from `siokit load`, then:
- idle phase: the worker's CPU-seconds over IDLE seconds, all of it Engine.IO pings, divided by the
  pings it wrote (its write() calls: nothing else writes then; nominally N per interval);
- broadcast phase: K admin broadcasts to everyone, WAIT seconds apart; CPU above the idle rate / (K*N);
- memory: the worker's RSS with N sockets minus its RSS before the first client, / N.
CPU is process CPU (utime+stime from /proc), not wall-clock: robust to the other engineers' load.

Run: .venv/bin/python scripts/measure_fanout.py --clients 5000 [--driver stock|event] [--py-spy out.raw] [--tracemalloc]
Per delivery without pings in the way: --ping-interval 600 (then the idle rate is ~0).
Prints one JSON object. Measurement only: asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from siokit.lab.servers import get_json, run_redis, run_uwsgi

SECRET = secrets.token_urlsafe(24)  # the /admin token of this run only


def worker_pid(master: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                return int(entry.name)
    raise RuntimeError("no uWSGI worker")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU-seconds of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def write_calls(pid: int) -> int:
    """write()-type system calls the process has made (/proc/PID/io syscw). In the idle phase the
    worker writes nothing but Engine.IO pings, one os.write() each (app/upstream/frame_writer.py)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise RuntimeError("no syscw")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def record(pid: int, out: str, seconds: float) -> subprocess.Popen[bytes]:
    # py-spy samples the worker from outside; its own CPU is not the worker's.
    return subprocess.Popen(
        [
            str(Path(sys.prefix) / "bin" / "py-spy"),
            "record",
            "-p",
            str(pid),
            "-o",
            out,
            "-d",
            str(int(seconds)),
            "-r",
            "200",
            "--nonblocking",
            "-f",
            "raw",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--driver", choices=("event", "stock"), default="event")
    ap.add_argument("--ping-interval", type=int, default=5)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--broadcasts", type=int, default=5)
    ap.add_argument("--wait", type=float, default=4.0)
    ap.add_argument("--text-bytes", type=int, default=100)
    ap.add_argument("--py-spy", help="record the worker with py-spy into this file (raw collapsed stacks)")
    ap.add_argument("--py-spy-phase", choices=("idle", "broadcast"), default="broadcast")
    ap.add_argument("--env", action="append", default=[], help="extra NAME=VALUE for the app")
    ap.add_argument(
        "--admin-ui",
        action="store_true",
        help="turn on the Socket.IO Admin UI as the cluster does (its password generated here, never shown)",
    )
    ap.add_argument(
        "--redis",
        action="store_true",
        help="start a throwaway Redis and use it as the message queue, as the cluster does",
    )
    ap.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also report the worker's Python heap growth per socket by allocation site (slows the ramp)",
    )
    args = ap.parse_args()

    env = {
        "SIOKIT_ADMIN_SECRET": SECRET,
        "SIOKIT_PING_INTERVAL": str(args.ping_interval),
        "SIOKIT_PING_TIMEOUT": "20",
        "SIOKIT_WEBSOCKET_DRIVER": args.driver,
        **dict(e.split("=", 1) for e in args.env),
    }
    if args.admin_ui:
        env |= {"SIOKIT_ADMIN_UI": "on", "SIOKIT_ADMIN_UI_PASSWORD": secrets.token_urlsafe(16)}
    shown = {k: "*" if k in ("SIOKIT_ADMIN_SECRET", "SIOKIT_ADMIN_UI_PASSWORD") else v for k, v in env.items()}
    out: dict[str, Any] = {"clients": args.clients, "driver": args.driver, "env": shown}
    uwsgi_extra: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if args.redis:
            env["SIOKIT_MESSAGE_QUEUE"] = stack.enter_context(run_redis(Path(tmp))).url
            out["env"]["SIOKIT_MESSAGE_QUEUE"] = env["SIOKIT_MESSAGE_QUEUE"]
        if args.tracemalloc:
            env = env | {
                "PYTHONTRACEMALLOC": "12",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")) if p
                ),
                "SIOKIT_TRACEMALLOC_DIR": tmp,
            }
            uwsgi_extra = ["--import", "tracemalloc_hook"]
        measure(args, env, out, Path(tmp), uwsgi_extra)
    print(json.dumps(out))


def heap_snapshot(tmp: Path, tag: str) -> dict[str, Any] | None:
    """Ask scripts/tracemalloc_hook.py in the worker for a snapshot; its report for tags other than base."""
    (tmp / f"snap-{tag}").touch()
    deadline = time.monotonic() + 120
    while not (tmp / f"done-{tag}").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the worker's tracemalloc hook did not answer")
        time.sleep(0.2)
    report = tmp / f"{tag}.json"
    return json.loads(report.read_text()) if report.exists() else None


def measure(
    args: argparse.Namespace, env: dict[str, str], out: dict[str, Any], tmp: Path, uwsgi_extra: list[str]
) -> None:
    import socketio

    with run_uwsgi(tmp, env=env, gevent_cores=args.clients + 200, extra=uwsgi_extra) as proc:
        wpid = worker_pid(proc.popen.pid)
        if args.tracemalloc:
            heap_snapshot(tmp, "base")
        rss0 = rss_kb(wpid)
        load_log = (Path(tmp) / "load.log").open("wb")
        load = subprocess.Popen(
            [
                str(Path(sys.prefix) / "bin" / "siokit"),
                "load",
                "--url",
                proc.url,
                "--transport",
                "websocket",
                "--connections",
                str(args.clients),
                "--hold",
                "100000",
                "--concurrency",
                "200",
                "--no-progress",
                "--report",
                str(Path(tmp) / "load.json"),
            ],
            stdout=load_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while (connected := get_json(proc.url + "/healthz", timeout=60)["connected"]) < args.clients:
                if time.monotonic() > deadline or load.poll() is not None:
                    print(f"connected {connected}, load exit {load.poll()}", file=sys.stderr)
                    raise RuntimeError("ramp stalled:\n" + (Path(tmp) / "load.log").read_text()[-3000:])
                time.sleep(1)
            time.sleep(min(args.ping_interval, 10) + 2)  # every socket in its ping cycle
            out["rss_per_socket_kb"] = round((rss_kb(wpid) - rss0) / args.clients, 2)
            if args.tracemalloc:
                heap = heap_snapshot(tmp, "held")
                assert heap is not None
                out["python_heap_per_socket_kb"] = round(heap["bytes"] / args.clients / 1024, 2)
                out["python_heap_sites"] = [
                    {
                        "kb_per_socket": round(site["bytes"] / args.clients / 1024, 3),
                        "per_socket": round(site["count"] / args.clients, 2),
                        "frames": site["frames"],
                    }
                    for site in heap["sites"]
                ]
            spy = None
            if args.py_spy and args.py_spy_phase == "idle":
                spy = record(wpid, args.py_spy, args.idle)
            (u0, s0), t0, w0 = cpu_split(wpid), time.monotonic(), write_calls(wpid)
            c0 = u0 + s0
            time.sleep(args.idle)
            if spy is not None:
                spy.wait(timeout=120)
            idle_s = time.monotonic() - t0
            u1, s1 = cpu_split(wpid)
            writes = write_calls(wpid) - w0
            idle_rate = (u1 + s1 - c0) / idle_s
            # Round trips per second: the pings the worker wrote, not the nominal N per interval,
            # since a ping may leave up to a tick late (app/upstream/ping_timer.py).
            pings = writes / idle_s
            out["idle_cpu_per_s"] = round(idle_rate, 4)
            out["pings_per_s_written"] = round(pings, 1)
            out["pings_per_s_nominal"] = round(args.clients / args.ping_interval, 1)
            out["us_per_ping_round_trip"] = round(idle_rate / pings * 1e6, 1)
            # The system part: on loopback a write() also runs the receiving side's TCP path.
            out["us_per_ping_round_trip_system"] = round((s1 - s0) / idle_s / pings * 1e6, 1)

            admin = socketio.Client(reconnection=False)
            admin.connect(proc.url, namespaces=["/admin"], transports=["websocket"], auth={"token": SECRET})
            spy = None
            if args.py_spy and args.py_spy_phase == "broadcast":
                spy = record(wpid, args.py_spy, args.broadcasts * args.wait)
            c0, t0, s0 = cpu_seconds(wpid), time.monotonic(), cpu_split(wpid)[1]
            for i in range(args.broadcasts):
                admin.call("broadcast", {"seq": i, "text": "x" * args.text_bytes}, namespace="/admin", timeout=60)
                time.sleep(args.wait)
            elapsed = time.monotonic() - t0
            extra = cpu_seconds(wpid) - c0 - idle_rate * elapsed
            admin.disconnect()
            if spy is not None:
                spy.wait(timeout=120)
            deliveries = args.broadcasts * args.clients
            out["cpu_s_per_broadcast"] = round(extra / args.broadcasts, 4)
            out["us_per_delivery"] = round(extra / deliveries * 1e6, 2)
            # Without subtracting the idle rate (use with a long --ping-interval: idle is ~0 then).
            out["us_per_delivery_gross"] = round((extra + idle_rate * elapsed) / deliveries * 1e6, 2)
            out["system_s_in_broadcast_phase"] = round(cpu_split(wpid)[1] - s0, 3)
            out["broadcast_phase_s"] = round(elapsed, 1)
            out["connected_after"] = get_json(proc.url + "/healthz", timeout=60)["connected"]
        finally:
            os.killpg(load.pid, 15)
            load.wait(timeout=60)


if __name__ == "__main__":
    main()
