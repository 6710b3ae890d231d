"""Memory and CPU of each component of a running stack, read from /proc.

Works for the loopback stack and for the local cluster alike: processes inside containers are
visible in the host's /proc, and their cgroup names the container. Memory is PSS (proportional set
size), so pages shared between nginx workers or the uWSGI master and worker count once.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DOCKER_ID = re.compile(r"(?:docker[-/])([0-9a-f]{64})")


@dataclass(frozen=True)
class Proc:
    pid: int
    component: str  # nginx, uwsgi, redis, loadgen
    container: str  # container name, or "" on the host


@dataclass
class Sample:
    at: float
    pss: dict[str, int] = field(default_factory=dict)  # bytes per component
    cpu_ticks: dict[str, int] = field(default_factory=dict)  # utime + stime per component
    pid_ticks: dict[int, tuple[str, int]] = field(default_factory=dict)  # pid -> (name, ticks)
    processes: dict[str, int] = field(default_factory=dict)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def classify(cmdline: str) -> str | None:
    """Which component a command line belongs to, or None."""
    if cmdline.startswith("nginx:") or "/nginx " in cmdline or cmdline.startswith("nginx "):
        return "nginx"
    if "uwsgi" in cmdline.split(" ")[0] or cmdline.startswith("uWSGI"):
        return "uwsgi"
    if "redis-server" in cmdline:
        return "redis"
    if "siokit load" in cmdline or "siokit.load" in cmdline or "siokit-load" in cmdline:
        return "loadgen"
    return None


def container_names() -> dict[str, str]:
    """Docker container id -> name, from the daemon's state on disk (no API call needed)."""
    names: dict[str, str] = {}
    root = Path("/var/lib/docker/containers")
    if not root.is_dir():
        return names
    for d in root.iterdir():
        cfg = _read(str(d / "config.v2.json"))
        m = re.search(r'"Name":"/([^"]+)"', cfg)
        if m:
            names[d.name] = m.group(1)
    return names


def _ppid(pid: str) -> int:
    stat = _read(f"/proc/{pid}/stat")
    return int(stat.rpartition(")")[2].split()[1]) if stat else 0


def _root_of(pid: int, parents: dict[int, int], roots: dict[int, str | None]) -> int | None:
    """The first of `roots` on the way from pid up to init (pid itself included), if any."""
    for _ in range(64):
        if pid in roots:
            return pid
        if pid <= 1:
            return None
        pid = parents.get(pid, 0)
    return None


def find_processes(roots: dict[int, str | None] | None = None, containers: set[str] | None = None) -> list[Proc]:
    """Processes of the stack under test.

    roots: pid -> component for whole process trees (None: classify each process by its command
    line); containers: only processes in these containers. With neither, every match on the machine.
    """
    names = container_names()
    pids = [e for e in os.listdir("/proc") if e.isdigit()]
    parents = {int(p): _ppid(p) for p in pids} if roots else {}
    found = []
    for entry in pids:
        pid = int(entry)
        cmd = _read(f"/proc/{entry}/cmdline").replace("\0", " ").strip()
        comp = classify(cmd)
        if roots is not None:
            root = _root_of(pid, parents, roots)
            if root is None:
                continue
            comp = roots[root] or comp
        if comp is None:
            continue
        m = DOCKER_ID.search(_read(f"/proc/{entry}/cgroup"))
        container = names.get(m.group(1), m.group(1)[:12]) if m else ""
        if containers is not None and container not in containers:
            continue
        found.append(Proc(pid, comp, container))
    return found


def pss_bytes(pid: int) -> int:
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_split(pid: int) -> tuple[int, int]:
    """(utime, stime) in clock ticks; (0, 0) for a process that is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return 0, 0
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])


def cpu_ticks(pid: int) -> int:
    return sum(cpu_split(pid))


def sample(procs: list[Proc], key: str = "component") -> Sample:
    """One reading; key "component" sums per component, "container" per component@container."""
    s = Sample(at=time.monotonic())
    pss: dict[str, int] = defaultdict(int)
    ticks: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for p in procs:
        name = p.component if key == "component" else f"{p.component}@{p.container or 'host'}"
        pss[name] += pss_bytes(p.pid)
        t = cpu_ticks(p.pid)
        ticks[name] += t
        s.pid_ticks[p.pid] = (name, t)
        count[name] += 1
    s.pss, s.cpu_ticks, s.processes = dict(pss), dict(ticks), dict(count)
    return s


def cpu_cores(before: Sample, after: Sample) -> dict[str, float]:
    """Average cores used per component between two samples (processes present in both)."""
    span = max(after.at - before.at, 1e-9)
    used: dict[str, float] = defaultdict(float)
    for pid, (name, ticks) in after.pid_ticks.items():
        if pid in before.pid_ticks:
            used[name] += max(0, ticks - before.pid_ticks[pid][1]) / CLK_TCK / span
    return {k: round(v, 3) for k, v in used.items()}


def kernel_memory() -> dict[str, int]:
    """Slab and TCP socket buffer memory (bytes) of the whole kernel and of this netns."""
    meminfo = {}
    for line in _read("/proc/meminfo").splitlines():
        name, _, rest = line.partition(":")
        meminfo[name] = int(rest.split()[0]) * 1024
    tcp_mem = 0
    for line in _read("/proc/net/sockstat").splitlines():
        if line.startswith("TCP:"):
            parts = line.split()
            tcp_mem = int(parts[parts.index("mem") + 1]) * PAGE
    return {"slab": meminfo.get("Slab", 0), "tcp_buffers": tcp_mem, "mem_available": meminfo.get("MemAvailable", 0)}
