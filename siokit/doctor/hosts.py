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
from siokit.lab.deployment import layout

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
    data: dict[str, Any] = json.loads(_out(host, f"cat {layout().plan_file}"))
    return data


def instance_ports(host: Any) -> list[int]:
    return layout().uwsgi_ports(_out(host, f"systemctl show -p Wants --value {layout().app_target}"))


def instance_health(host: Any) -> dict[int, dict[str, Any] | None]:
    """/healthz of every planned instance on an app host (None: not answering)."""
    ports = instance_ports(host)
    # One command for all of them (over ssh, a round trip per command is the cost): each answer
    # after a "@@PORT " marker, at the address the instance listens on.
    loop = (
        f"for p in {' '.join(map(str, ports))}; do "
        """a=$(ss -Hltn "sport = :$p" | awk '{print $4}' | head -n1); printf '\\n@@%s ' "$p"; """
        """curl -s --max-time 5 "http://${a:-127.0.0.1:$p}/healthz" || printf DOWN; done"""
    )
    answers = dict(part.partition(" ")[::2] for part in str(host.run(loop).stdout).split("\n@@")[1:])
    out: dict[int, dict[str, Any] | None] = {}
    for port in ports:
        try:
            out[port] = json.loads(answers.get(str(port), ""))
        except ValueError:
            out[port] = None
    return out


def judge_spread(counts: Mapping[str, int]) -> Check:
    name = "upstream spread"
    total = sum(counts.values())
    if not counts:
        fix = f"start the instances: systemctl start {layout().app_target}"
        return Check(name, FAIL, "no instance answered /healthz", fix)
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


def judge_subscribers(numsub: int | None, running: int, error: str = "") -> Check:
    """numsub None: the queue did not answer (`error` says how), which no instance survives either."""
    if numsub is None:
        return Check(
            "message queue subscribers",
            FAIL,
            f"PUBSUB NUMSUB {CHANNEL} failed: {error or 'no answer'}; running instances = {running}",
            f"start Redis (systemctl status {layout().redis_service} on the redis host) and check that the app hosts "
            "reach it with SIOKIT_MESSAGE_QUEUE; until then no emit crosses instances",
        )
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
    return dict(json.loads(_out(host, f"{layout().app_virtualenv}/bin/python -c {shlex.quote(code)}")))


def nofile(host: Any, pids: Sequence[int]) -> list[int]:
    """Soft open-file limits of the processes still running (one command for all of them)."""
    files = " ".join(f"/proc/{pid}/limits" for pid in pids)
    text = str(host.run(f"grep -H '^Max open files' {files}").stdout)
    return [int(n) for n in re.findall(r"^/proc/\d+/limits:Max open files\s+(\d+)", text, re.M)]


def judge_sysctls(
    name: str, planned: Mapping[str, str], live: Mapping[str, str | None], writable: Mapping[str, bool]
) -> list[Check]:
    wrong: list[str] = []
    at_creation: list[str] = []  # read-only here, but the container was created with the planned value
    cannot: list[str] = []
    for key, want in planned.items():
        got = live.get(key)
        if got is None:
            cannot.append(f"{key} (absent)")
            continue
        if sysctls.satisfied(key, got, want):
            continue
        if writable.get(key, True):
            wrong.append(f"{key} {got} (plan {want})")
        elif key in sysctls.CONTAINER_SETTABLE:
            at_creation.append(f"{key} {got} (plan {want})")
        else:
            cannot.append(f"{key} {got} (plan {want})")
    out = []
    if wrong or at_creation:
        fixes = []
        if wrong:
            fixes.append("re-run site.yml (tuning role)")
        if at_creation:
            fixes.append(
                "a container gets its network namespace's sysctls only at creation: recreate it with "
                "`siokit plan --container-sysctls` (docker run --sysctl, molecule's platform sysctls)"
            )
        out.append(Check(f"sysctls on {name}", FAIL, "; ".join(wrong + at_creation), "; ".join(fixes)))
    else:
        out.append(Check(f"sysctls on {name}", PASS, f"{len(planned) - len(cannot)} planned sysctls in force"))
    if cannot:
        out.append(Check(f"sysctls on {name} (not settable)", INFO, "a container cannot set: " + "; ".join(cannot)))
    return out


def live_sysctls(host: Any, keys: Sequence[str]) -> tuple[dict[str, str | None], dict[str, bool]]:
    """Live values (None: absent) and whether each can be written here, read in one command."""
    # /proc/sys is mounted read-only in a container: such a value is the host kernel's to set.
    code = (
        "import json, os, sys\n"
        "ro = any(f[1] == '/proc/sys' and 'ro' in f[3].split(',') for f in map(str.split, open('/proc/mounts')))\n"
        "out = {}\n"
        "for key in sys.argv[1:]:\n"
        "    path = '/proc/sys/' + key.replace('.', '/')\n"
        "    try:\n"
        "        out[key] = [' '.join(open(path).read().split()), not ro and os.access(path, os.W_OK)]\n"
        "    except OSError:\n"
        "        out[key] = [None, False]\n"
        "print(json.dumps(out))\n"
    )
    got = json.loads(_out(host, f"python3 -c {shlex.quote(code)} {' '.join(map(shlex.quote, keys))}"))
    return {k: v[0] for k, v in got.items()}, {k: bool(v[1]) for k, v in got.items()}


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
    problems, fixes = [], []
    if read_timeout <= needed:
        problems.append("nginx closes idle websockets before Engine.IO's heartbeat does")
        fixes.append("re-run site.yml: the nginx role derives proxy_read_timeout from the plan's ping settings")
    if body_max < max_message:
        problems.append("payloads above client_max_body_size get 413 (Flask-SocketIO #469)")
        # The kit's site sets no client_max_body_size: nginx's 1m default holds the app's 100000 B.
        fixes.append(
            "the kit's nginx config keeps nginx's 1m default (re-run site.yml to restore it); an "
            f"app_max_message_bytes above 1m needs client_max_body_size >= {max_message} in the lb's "
            "/socket.io location"
        )
    if problems:
        return Check("nginx timeouts and sizes", FAIL, measured + ": " + "; ".join(problems), "; ".join(fixes))
    return Check("nginx timeouts and sizes", PASS, measured)
