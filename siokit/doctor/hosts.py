"""Host-side checks: what runs on the inventory's hosts, against the plan each host recorded.

Hosts are reached with testinfra (the library the infra suite already uses), so one code path serves
ssh, Ansible and Docker connections. Every command here only reads.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siokit import sysctls
from siokit.doctor import FAIL, INFO, PASS, Check

PLAN = "/etc/siokit/plan.json"
APP_ENV = "/etc/siokit/siokit.env"
APP_VENV = "/opt/siokit/venv"
CHANNEL = "flask-socketio"  # Flask-SocketIO's default, which app/upstream/room_index.py keeps
# Packages whose internals app/ patches or depends on: the host must run what constraints.txt pins.
PINNED = ("python-engineio", "python-socketio", "flask-socketio", "uwsgi", "gevent")
ENGINEIO_MIN = (4, 2, 1)  # older stalls near 1024 sockets under gevent_uwsgi (python-engineio#228)


@dataclass
class Fleet:
    """The inventory's hosts by group: testinfra Host objects."""

    groups: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)

    @classmethod
    def from_inventory(cls, inventory: str) -> Fleet:
        import testinfra
        from testinfra.utils.ansible_runner import AnsibleRunner

        if not Path(inventory).exists():
            raise RuntimeError(f"--inventory {inventory}: no such file")
        # testinfra calls ansible-inventory from PATH: the one installed beside this Python.
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        runner = AnsibleRunner(inventory)
        fleet = cls()
        for group in ("lb", "app", "redis", "loadgen"):
            try:
                names = sorted(runner.get_hosts(group))
            except RuntimeError:
                names = []
            fleet.groups[group] = [
                (n, testinfra.get_host(f"ansible://{n}", ansible_inventory=inventory)) for n in names
            ]
        return fleet

    def hosts(self, group: str) -> list[tuple[str, Any]]:
        found = self.groups.get(group, [])
        if not found:
            raise RuntimeError(f"no host in inventory group {group!r}")
        return found


def _out(host: Any, cmd: str) -> str:
    r = host.run(cmd)
    if r.rc != 0:
        raise RuntimeError(f"{cmd!r} exited {r.rc}: {r.stderr.strip()[:200]}")
    return str(r.stdout)


def _plan(host: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_out(host, f"cat {PLAN}"))
    return data


def instance_ports(host: Any) -> list[int]:
    wants = _out(host, "systemctl show -p Wants --value siokit.target")
    return sorted(int(p) for p in re.findall(r"siokit-uwsgi@(\d+)\.service", wants))


def instance_health(host: Any) -> dict[int, dict[str, Any] | None]:
    """/healthz of every planned instance on an app host (None: not answering)."""
    out: dict[int, dict[str, Any] | None] = {}
    for port in instance_ports(host):
        addr = host.run(f"ss -Hltn 'sport = :{port}' | awk '{{print $4}}' | head -n1").stdout.strip()
        r = host.run(f"curl -s --max-time 5 http://{addr or '127.0.0.1:' + str(port)}/healthz")
        try:
            out[port] = json.loads(r.stdout) if r.rc == 0 else None
        except ValueError:
            out[port] = None
    return out


def judge_spread(counts: Mapping[str, int]) -> Check:
    name = "upstream spread"
    total = sum(counts.values())
    if not counts:
        return Check(name, FAIL, "no instance answered /healthz", "start the instances: systemctl start siokit.target")
    mean = total / len(counts)
    biggest = max(counts, key=lambda k: counts[k])
    measured = f"{total} sockets over {len(counts)} instances, mean {mean:.1f}, largest {biggest} {counts[biggest]}"
    if total < 2 * len(counts):
        return Check(name, INFO, measured + " (too few sockets to judge the spread)")
    if counts[biggest] > 2 * mean:
        return Check(
            name,
            FAIL,
            measured + " (> 2x the mean)",
            "ip_hash keys on three octets: clients of one /24 land on one instance; use "
            "nginx_balance hash_remote_addr (Flask-SocketIO #468, #742)",
        )
    return Check(name, PASS, measured)


def judge_subscribers(numsub: int, running: int) -> Check:
    measured = f"PUBSUB NUMSUB {CHANNEL} = {numsub}, running instances = {running}"
    if running == 0 or numsub != running:
        return Check(
            "message queue subscribers",
            FAIL,
            measured,
            "every instance must subscribe: check SIOKIT_MESSAGE_QUEUE, Redis reachability and "
            "the instances' logs; a non-subscribed instance never hears other instances' emits",
        )
    return Check("message queue subscribers", PASS, measured)


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def judge_versions(
    installed: Mapping[str, str], pinned: Mapping[str, str], health: Mapping[str, Any], uwsgi_ssl: bool
) -> Check:
    problems = []
    eio = installed.get("python-engineio")
    if eio is None or _version(eio) < ENGINEIO_MIN:
        problems.append(f"python-engineio {eio} < 4.2.1 (stalls near 1024 sockets under gevent_uwsgi)")
    problems += [
        f"{p} {installed.get(p)} is not the pinned {pinned[p]}"
        for p in PINNED
        if p in pinned and installed.get(p) != pinned[p]
    ]
    if not uwsgi_ssl:
        problems.append("uWSGI is not linked with OpenSSL: no websocket handshake (unbit/uwsgi#744)")
    if health.get("async_mode") != "gevent_uwsgi":
        problems.append(f"async_mode {health.get('async_mode')!r}, not gevent_uwsgi (Flask-SocketIO #1487)")
    if not health.get("websocket_driver"):
        problems.append("no websocket driver under uWSGI")
    if health.get("monkey_patched") is False:
        problems.append("gevent's monkey patching is not active (Flask-SocketIO #531)")
    measured = ", ".join(f"{p} {installed.get(p)}" for p in PINNED) + f"; async_mode {health.get('async_mode')}"
    if problems:
        return Check(
            "versions and async mode",
            FAIL,
            "; ".join(problems),
            "redeploy with the kit (site.yml installs the pinned versions from constraints.txt)",
        )
    return Check("versions and async mode", PASS, measured)


def pinned_versions(constraints: Path) -> dict[str, str]:
    pins = {}
    for line in constraints.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def installed_versions(host: Any) -> dict[str, str]:
    code = f"import importlib.metadata as m, json; print(json.dumps({{p: m.version(p) for p in {list(PINNED)!r}}}))"
    return dict(json.loads(_out(host, f"{APP_VENV}/bin/python -c {shlex.quote(code)}")))


def nofile(host: Any, pids: Sequence[int]) -> list[int]:
    soft = []
    for pid in pids:
        m = re.search(r"^Max open files\s+(\d+)", _out(host, f"cat /proc/{pid}/limits"), re.M)
        soft.append(int(m.group(1)) if m else 0)
    return soft


def judge_sysctls(
    name: str, planned: Mapping[str, str], live: Mapping[str, str | None], writable: Mapping[str, bool]
) -> list[Check]:
    wrong: list[str] = []
    cannot: list[str] = []
    for key, want in planned.items():
        got = live.get(key)
        if got is None:
            cannot.append(f"{key} (absent)")
            continue
        if not sysctls.satisfied(key, got, want):
            (wrong if writable.get(key, True) else cannot).append(f"{key} {got} (plan {want})")
    out = []
    if wrong:
        out.append(Check(f"sysctls on {name}", FAIL, "; ".join(wrong), "re-run site.yml (tuning role)"))
    else:
        out.append(Check(f"sysctls on {name}", PASS, f"{len(planned) - len(cannot)} planned sysctls in force"))
    if cannot:
        out.append(Check(f"sysctls on {name} (not settable)", INFO, "a container cannot set: " + "; ".join(cannot)))
    return out


def live_sysctls(host: Any, keys: Sequence[str]) -> tuple[dict[str, str | None], dict[str, bool]]:
    live: dict[str, str | None] = {}
    writable = {}
    for key in keys:
        path = "/proc/sys/" + key.replace(".", "/")
        r = host.run(f"cat {path}")
        live[key] = " ".join(r.stdout.split()) if r.rc == 0 else None
        # /proc/sys is mounted read-only in a container: such a value is the host kernel's to set.
        writable[key] = host.run(f"test -w {path} && ! grep -qs ' /proc/sys .*\\bro\\b' /proc/mounts").rc == 0
    return live, writable


def nginx_timeouts(conf: str, ping_interval: float, ping_timeout: float, max_message: int) -> Check:
    loc = re.search(r"location\s+/socket\.io\s*\{(.*?)\n\s*\}", conf, re.S)
    body = loc.group(1) if loc else ""
    rt = re.search(r"proxy_read_timeout\s+(\d+)s?;", body)
    read_timeout = int(rt.group(1)) if rt else 60  # nginx's default
    mb = re.findall(r"client_max_body_size\s+(\d+)([kKmM]?);", conf)
    units = {"": 1, "k": 1024, "m": 1024**2}
    body_max = min((int(n) * units[u.lower()] for n, u in mb), default=1024**2)  # nginx's default 1m
    needed = ping_interval + ping_timeout
    measured = (
        f"proxy_read_timeout {read_timeout} s vs ping interval + timeout {needed:g} s; "
        f"client_max_body_size {body_max} B vs max message {max_message} B"
    )
    problems = []
    if read_timeout <= needed:
        problems.append("nginx closes idle websockets before Engine.IO's heartbeat does")
    if body_max < max_message:
        problems.append("payloads above client_max_body_size get 413 (Flask-SocketIO #469)")
    if problems:
        return Check(
            "nginx timeouts and sizes",
            FAIL,
            measured + ": " + "; ".join(problems),
            "re-run site.yml: the nginx role derives both from the app's settings",
        )
    return Check("nginx timeouts and sizes", PASS, measured)
