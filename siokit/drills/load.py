"""The load a drill runs under: `siokit load` in the loadgen container (its CLI and JSON report as
a black box), plus a sampler of every instance's socket count from its /metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siokit.drills import cluster
from siokit.lab.deployment import role_path

LOADGEN_SIOKIT = role_path("loadgen_siokit_binary")
HELD_RE = re.compile(r"^\[(?:ramp|hold)\s+[\d.]+s\] held (\d+)/(\d+)", re.M)


def last_held(progress: str) -> int | None:
    """The sockets the load generator held at its last progress line (siokit/load/runner.py)."""
    found = HELD_RE.findall(progress)
    return int(found[-1][0]) if found else None


@dataclass
class ServerSamples:
    """(wall time, {"app1:8001": sockets or None}) every `every` seconds."""

    rows: list[tuple[float, dict[str, int | None]]] = field(default_factory=list)

    def total(self, row: dict[str, int | None]) -> int:
        return sum(v for v in row.values() if v)

    def host_total(self, row: dict[str, int | None], host: str) -> int:
        return sum(v or 0 for k, v in row.items() if k.startswith(host + ":"))


class Sampler:
    def __init__(self, ports: dict[str, list[int]], every: float = 2.0) -> None:
        self.ports, self.every = ports, every
        self.samples = ServerSamples()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> dict[str, int | None]:
        row: dict[str, int | None] = {}
        for host, ports in self.ports.items():
            for port, n in cluster.instance_sockets(host, ports).items():
                row[f"{host}:{port}"] = n
        return row

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            self.samples.rows.append((t, self.sample()))
            self._stop.wait(max(0.0, self.every - (time.time() - t)))

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> ServerSamples:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.samples


def loadgen_binds() -> list[str]:
    out = cluster.run("loadgen", "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1")
    return out.split()


class LoadRun:
    """One `siokit load` in the loadgen container; the admin token goes through the environment
    (`docker exec -e NAME` copies it from ours), never onto a command line."""

    def __init__(
        self,
        name: str,
        connections: int,
        hold: float,
        broadcast_every: float | None,
        admin_token: str,
        extra: list[str] | None = None,
    ) -> None:
        self.remote = f"/tmp/siokit-drill-{name}.json"
        self.args = [
            LOADGEN_SIOKIT,
            "load",
            "--url",
            "http://lb:80",
            "--bind",
            ",".join(loadgen_binds()),
            "--connections",
            str(connections),
            "--hold",
            str(hold),
            "--report",
            self.remote,
            # Its progress line every second (to the log): what the ramp check reads first.
            *(["--broadcast-every", str(broadcast_every)] if broadcast_every else []),
            *(extra or []),
        ]
        self.token = admin_token
        self.proc: subprocess.Popen[str] | None = None

    def held(self) -> int | None:
        """What the load generator says it holds now (its last progress line); None: no line yet."""
        try:
            return last_held(Path(self._log.name).read_text(errors="replace"))
        except (AttributeError, OSError):
            return None

    def start(self, log: Path) -> LoadRun:
        env = {
            **os.environ,
            "SIOKIT_ADMIN_TOKEN": self.token,
            "DOCKER_API_VERSION": os.environ.get("DOCKER_API_VERSION", "1.41"),
        }
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [cluster.docker(), "exec", "-e", "SIOKIT_ADMIN_TOKEN", "loadgen", *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        return self

    def wait(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self._log.close()
        if rc not in (0, 1):
            raise RuntimeError(f"siokit load exited {rc}; see {self._log.name}")
        text = cluster.run("loadgen", f"cat {self.remote}")
        return json.loads(text)


def wait_for_sockets(sampler: Sampler, want: int, timeout: float, load: LoadRun | None = None) -> int:
    """Wait until `want` sockets are held; the count reached. The load generator's own progress
    line is read first: at load average 30-50 the instances' /metrics did not answer within 4 s and
    the drill could not start although every socket was held (RELIABILITY.md, run 3, finding 3).
    The instances' count is the fallback."""
    deadline = time.time() + timeout
    total = 0
    while time.time() < deadline:
        held = load.held() if load else None
        if held is not None and held >= want:
            return held
        total = max(held or 0, sampler.samples.total(sampler.sample()))
        if total >= want:
            return total
        time.sleep(2)
    return total
