"""The local cluster as the drills see it: `docker exec` into its containers, and one check that
it is there at all (a missing cluster is one line naming `make up`, never a traceback)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from typing import Any

from siokit.lab.deployment import layout

HOSTS = ("lb", "app1", "app2", "redis", "loadgen")
APP_HOSTS = ("app1", "app2")
UNIT_RE = re.compile(r"^(siokit-uwsgi@(\d+)\.service)\s", re.M)


class ClusterMissing(RuntimeError):
    """The local cluster is not up: the message says what to run."""


def docker() -> str:
    return os.environ.get("DOCKER", "/usr/bin/docker")


def _env() -> dict[str, str]:
    # Debian's docker.io 20.10 daemon: a newer client on PATH would speak a newer API.
    return {**os.environ, "DOCKER_API_VERSION": os.environ.get("DOCKER_API_VERSION", "1.41")}


def run(host: str, cmd: str, timeout: float = 60, check: bool = True) -> str:
    """`sh -c cmd` inside container `host`; stdout."""
    proc = subprocess.run(
        [docker(), "exec", host, "sh", "-c", cmd], capture_output=True, text=True, timeout=timeout, env=_env()
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{host}: `{cmd}` exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def docker_cmd(args: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([docker(), *args], capture_output=True, text=True, timeout=timeout, env=_env())


def missing_hosts() -> list[str] | None:
    """Containers of the cluster that are not running; None when the Docker daemon does not answer."""
    try:
        proc = docker_cmd(["ps", "--format", "{{.Names}}"], timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    running = set(proc.stdout.split())
    return [h for h in HOSTS if h not in running]


def require_cluster(what: str) -> None:
    """Raise ClusterMissing with one line when the cluster cannot serve `what`."""
    missing = missing_hosts()
    if missing is None:
        raise ClusterMissing(f"{what}: no Docker daemon answers, so no local cluster: run `make up` first")
    if missing:
        raise ClusterMissing(
            f"{what}: the local cluster is not running ({', '.join(missing)} missing): run `make up` first"
        )


def instance_ports(host: str) -> list[int]:
    out = run(host, "systemctl list-units --all --plain --no-legend 'siokit-uwsgi@*.service'")
    return sorted(int(m.group(2)) for m in UNIT_RE.finditer(out))


METRIC_RE = re.compile(r"^((?:siokit|process)_[A-Za-z0-9_]*(?:\{[^}]*\})?)\s+(\S+)$", re.M)
SOCKETS = 'siokit_connected_sockets{namespace="/"}'


def instance_metrics(host: str, ports: Sequence[int]) -> dict[int, dict[str, float] | None]:
    """Every instance's siokit_* and process_* series from its /metrics; None: it did not answer."""
    # The host's own private address: the instances may bind it rather than 0.0.0.0 (issue #10).
    # All instances at once, each with 4 s: one after the other, a host at load average 30+ made
    # the sampler miss whole rounds (RELIABILITY.md, run 2).
    # A directory per call: the sampler and a drill's own reads may run at the same time.
    d = "$d"
    script = (
        "a=$(hostname -I | cut -d' ' -f1); d=$(mktemp -d /tmp/siokit-drill-m.XXXXXX); "
        + " ".join(
            f"curl -s -m 4 -o {d}/{p} -w '%{{http_code}}' http://$a:{p}/metrics > {d}/{p}.code 2>/dev/null &"
            for p in ports
        )
        + " wait; "
        + "; ".join(f"echo \"#port {p} $(cat {d}/{p}.code)\"; grep -E '^(siokit|process)_' {d}/{p}" for p in ports)
        + f"; rm -rf {d}"
    )
    try:
        out = run(host, script, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        out = ""
    return parse_instance_metrics(out, ports)


def parse_instance_metrics(out: str, ports: Sequence[int]) -> dict[int, dict[str, float] | None]:
    result: dict[int, dict[str, float] | None] = {p: None for p in ports}
    for chunk in out.split("#port ")[1:]:
        head, _, body = chunk.partition("\n")
        port_text, _, status = head.partition(" ")
        if status.strip() != "200":
            continue
        result[int(port_text)] = {m.group(1): float(m.group(2)) for m in METRIC_RE.finditer(body)}
    return result


def instance_sockets(host: str, ports: Sequence[int]) -> dict[int, int | None]:
    """Sockets on "/" per instance, from each instance's /metrics; None: the instance did not answer."""
    return sockets_of(instance_metrics(host, ports))


def sockets_of(metrics: dict[int, dict[str, float] | None]) -> dict[int, int | None]:
    return {p: None if m is None else int(m.get(SOCKETS, 0)) for p, m in metrics.items()}


def parse_instance_sockets(out: str, ports: Sequence[int]) -> dict[int, int | None]:
    return sockets_of(parse_instance_metrics(out, ports))


def deployed_plan(host: str = "app1") -> dict[str, Any]:
    """The plan document the roles installed on `host` (the instances' planned share is in it)."""
    return dict(json.loads(run(host, f"cat {layout().plan_file}")))


def app_settings(names: Sequence[str], host: str = "app1") -> dict[str, str]:
    """Some SIOKIT_* settings of the instances' environment file: only the names asked for (the file
    also holds secrets, which must not leave the host)."""
    pattern = "|".join(re.escape(n) for n in names)
    out = run(host, f"grep -E '^({pattern})=' {layout().app_env_file}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def container_ip(name: str) -> str:
    """The container's address on the cluster network (reachable from this machine)."""
    proc = docker_cmd(["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name], 20)
    if proc.returncode != 0 or not proc.stdout.split():
        raise RuntimeError(f"no address for container {name}: {proc.stderr.strip()}")
    return proc.stdout.split()[0]


def instance_health(host: str, ports: Sequence[int]) -> dict[int, dict[str, Any] | None]:
    """Every instance's /healthz (its release among others) and systemd's MainPID of its unit;
    None: the instance did not answer."""
    script = "a=$(hostname -I | cut -d' ' -f1); " + "; ".join(
        f'echo "#port {p} $(systemctl show -p MainPID --value siokit-uwsgi@{p}.service)"; '
        f"curl -s -m 4 http://$a:{p}/healthz; echo"
        for p in ports
    )
    try:
        out = run(host, script, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        out = ""
    return parse_instance_health(out, ports)


def parse_instance_health(out: str, ports: Sequence[int]) -> dict[int, dict[str, Any] | None]:
    result: dict[int, dict[str, Any] | None] = {p: None for p in ports}
    for chunk in out.split("#port ")[1:]:
        head, _, body = chunk.partition("\n")
        port_text, _, pid = head.partition(" ")
        try:
            health = json.loads(body.strip())
        except ValueError:
            continue
        if isinstance(health, dict):
            health["main_pid"] = int(pid) if pid.strip().isdigit() else 0
            result[int(port_text)] = health
    return result
