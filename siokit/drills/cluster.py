"""The local cluster as the drills see it: `docker exec` into its containers, and one check that
it is there at all (a missing cluster is one line naming `make up`, never a traceback)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence

HOSTS = ("lb", "app1", "app2", "redis", "loadgen")
APP_HOSTS = ("app1", "app2")
UNIT_RE = re.compile(r"^(siokit-uwsgi@(\d+)\.service)\s", re.M)
GAUGE_RE = re.compile(r'^siokit_connected_sockets\{namespace="/"\}\s+([0-9.e+]+)', re.M)


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


def instance_sockets(host: str, ports: Sequence[int]) -> dict[int, int | None]:
    """Sockets on "/" per instance, from each instance's /metrics; None: the instance did not answer."""
    # The host's own private address: the instances may bind it rather than 0.0.0.0 (issue #10).
    script = "a=$(hostname -I | cut -d' ' -f1); " + "; ".join(
        f"echo \"#port {p} $(curl -s -m 2 -o /tmp/siokit-drill-m -w '%{{http_code}}' http://$a:{p}/metrics)\"; "
        "grep '^siokit_connected_sockets' /tmp/siokit-drill-m; rm -f /tmp/siokit-drill-m"
        for p in ports
    )
    try:
        out = run(host, script, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        out = ""
    return parse_instance_sockets(out, ports)


def parse_instance_sockets(out: str, ports: Sequence[int]) -> dict[int, int | None]:
    result: dict[int, int | None] = {p: None for p in ports}
    for chunk in out.split("#port ")[1:]:
        head, _, body = chunk.partition("\n")
        port_text, _, status = head.partition(" ")
        if status.strip() != "200":
            continue
        m = GAUGE_RE.search(body)
        result[int(port_text)] = int(float(m.group(1))) if m else 0
    return result
