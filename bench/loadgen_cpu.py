"""The load generator's own CPU cost per received broadcast message, measured from /proc.

    .venv/bin/python bench/loadgen_cpu.py --connections 10000 --broadcast-every 2 --hold 40

Starts the Node socket.io reference server (bench/node-server, the cheapest server to fan out),
runs ``siokit load`` against it twice: once idle (pings only) and once broadcasting to every
client, and reports the workers' CPU-seconds during the hold (user+system from /proc, robust to
other work on the host) divided by the broadcast messages received. ``net`` subtracts the idle
run's CPU rate (Engine.IO pings, timers), so it is the cost of receiving one message.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from compare import free_port, start_server  # noqa: E402


def hold_cpu(report: dict[str, Any]) -> tuple[float, float]:
    """(worker CPU-seconds, seconds) between the first and the last timeline sample of the hold."""
    hold = [s for s in report["timeline"] if s["phase"] == "hold"]
    if len(hold) < 2:
        raise SystemExit("the hold has fewer than two timeline samples: raise --hold")
    return (hold[-1]["client_cpu_ms"] - hold[0]["client_cpu_ms"]) / 1000, hold[-1]["t"] - hold[0]["t"]


def run_load(url: str, args: argparse.Namespace, broadcast: bool, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "siokit.load", "--url", url, "--connections", str(args.connections),
        "--bind", args.bind, "--concurrency", "400", "--hold", str(args.hold), "--no-progress",
        "--report", str(out), "--html", os.devnull,
    ]  # fmt: skip
    if broadcast:
        cmd += ["--broadcast-every", str(args.broadcast_every)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), SIOKIT_ADMIN_TOKEN=args.token)  # `ps` shows command lines
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=False)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--bind", default="127.0.0.2")
    ap.add_argument("--hold", type=float, default=40)
    ap.add_argument("--broadcast-every", type=float, default=2)
    ap.add_argument("--token", default=secrets.token_urlsafe(16), help=argparse.SUPPRESS)  # generated per run
    ap.add_argument("--keep", default=None, help="copy the two load reports into this directory")
    args = ap.parse_args(argv)
    port = free_port()
    server = start_server("node", port, args.token, args.connections)
    url = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            idle = run_load(url, args, False, Path(tmp) / "idle.json")
            time.sleep(2)
            busy = run_load(url, args, True, Path(tmp) / "busy.json")
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                for name in ("idle.json", "busy.json"):
                    shutil.copy(Path(tmp) / name, Path(args.keep) / name)
    finally:
        server.terminate()
        server.wait(timeout=15)
    idle_cpu, idle_s = hold_cpu(idle)
    busy_cpu, busy_s = hold_cpu(busy)
    received = busy["broadcast"]["received_total"]
    idle_rate = idle_cpu / idle_s
    result = {
        "connections": args.connections,
        "held": [idle["connections"]["held_at_end"], busy["connections"]["held_at_end"]],
        "idle_cpu_cores": round(idle_rate, 4),
        "busy_cpu_s": round(busy_cpu, 2),
        "busy_window_s": busy_s,
        "received": received,
        "drops": [idle["connections"]["drops"], busy["connections"]["drops"]],
        "failures": [idle["failures"], busy["failures"]],
        "us_per_message_gross": round(busy_cpu / received * 1e6, 1) if received else None,
        "us_per_message_net": round((busy_cpu - idle_rate * busy_s) / received * 1e6, 1) if received else None,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
