"""Mass disconnect on one uWSGI worker: time and worker CPU from the first close until none is left.

    .venv/bin/python bench/teardown.py 10000 [label]

Connects N clients (siokit load, 2 source IPs, 3 s hold) to one uWSGI worker serving app.wsgi, then
polls /healthz from the moment the connected count falls below its peak until it reaches 0. This is
the measurement behind app/upstream/room_index.py (python-socketio's disconnect scans every room).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from siokit.lab.servers import run_uwsgi

# Long pings: nothing but the disconnects should cost CPU in the window.
ENV = {"SIOKIT_PING_INTERVAL": "120", "SIOKIT_PING_TIMEOUT": "120"}


def connected(url: str) -> int:
    with urllib.request.urlopen(url + "/healthz", timeout=120) as resp:
        return int(json.load(resp)["connected"])


def main(n: int, label: str) -> str:
    with tempfile.TemporaryDirectory() as tmp, run_uwsgi(Path(tmp), env=ENV, gevent_cores=n + 200) as proc:
        worker = next(iter(psutil.Process(proc.popen.pid).children()))
        report = Path(tmp) / "load.json"
        cmd = [
            str(Path(sys.prefix) / "bin" / "siokit"), "load", "--url", proc.url, "--connections", str(n),
            "--hold", "3", "--bind", "127.0.0.2,127.0.0.3", "--report", str(report),
        ]  # fmt: skip
        load = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak, start, cpu_start = 0, 0.0, 0.0
        while True:
            count = connected(proc.url)
            if not start and count < peak:
                start, cpu_start = time.monotonic(), sum(worker.cpu_times()[:2])
            peak = max(peak, count)
            if start and count == 0:
                break
            time.sleep(0.05)
        seconds, cpu = time.monotonic() - start, sum(worker.cpu_times()[:2]) - cpu_start
        load.wait()
        held = json.loads(report.read_text())["connections"]["peak_held"]
    return (
        f"{label}: {held} held; released in {seconds:.1f} s, worker CPU {cpu:.1f} s "
        f"({cpu / held * 1000:.2f} ms per socket)"
    )


if __name__ == "__main__":
    print(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "siokit"))
