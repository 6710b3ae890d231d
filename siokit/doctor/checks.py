"""Which checks `siokit doctor` runs, and the host-side probes that feed the judgments in hosts.py."""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siokit.doctor import FAIL, PASS, Check
from siokit.doctor import client as cl
from siokit.doctor import hosts as hs
from siokit.lab.deployment import layout

ROOT = Path(__file__).resolve().parents[2]


def _health_of_all(fleet: hs.Fleet) -> dict[str, dict[str, Any] | None]:
    return {f"{name}:{port}": h for name, host in fleet.hosts("app") for port, h in hs.instance_health(host).items()}


def check_spread(fleet: hs.Fleet) -> Check:
    health = _health_of_all(fleet)
    down = [k for k, h in health.items() if h is None]
    if down:
        unit = layout().uwsgi_unit.format(port="PORT")
        return Check(
            "upstream spread",
            FAIL,
            f"instances not answering /healthz: {', '.join(down)}",
            f"systemctl status {unit} on that host; journalctl -u {unit}",
        )
    return hs.judge_spread({k: int(h["connected"]) for k, h in health.items() if h is not None})


def check_subscribers(fleet: hs.Fleet) -> Check:
    running = sum(h is not None for h in _health_of_all(fleet).values())
    _, app = fleet.hosts("app")[0]
    # As the app's own Redis user, with its URL from the env file: no secret on a command line.
    code = (
        "import os, redis; print(redis.Redis.from_url(os.environ['SIOKIT_MESSAGE_QUEUE'])"
        f".pubsub_numsub({hs.CHANNEL!r})[0][1])"
    )
    r = app.run(f"bash -c {shlex.quote(_with_app_env(code))}")
    if r.rc != 0:  # Redis down or refusing: the last line of the traceback names the error
        lines = str(r.stderr).strip().splitlines()
        return hs.judge_subscribers(None, running, lines[-1][:200] if lines else f"exit {r.rc}")
    return hs.judge_subscribers(int(str(r.stdout).strip()), running)


def _with_app_env(code: str) -> str:
    """A shell line running `code` in the app's venv with its environment file loaded."""
    where = layout()
    return f"set -a; . {where.app_env_file}; set +a; {where.app_virtualenv}/bin/python -c {shlex.quote(code)}"


def check_external_emit(pub: cl.Public, fleet: hs.Fleet) -> Check:
    """The way Celery workers emit: a write-only queue client on another process reaches a browser."""
    name = "external emit"
    _, app = fleet.hosts("app")[0]
    ws, sid = cl.open_listener(pub)
    token = uuid.uuid4().hex
    code = (
        "import os, socketio; socketio.RedisManager(os.environ['SIOKIT_MESSAGE_QUEUE'], "
        f"channel={hs.CHANNEL!r}, write_only=True).emit('doctor', {{'token': {token!r}}}, "
        f"room={sid!r}, namespace='/')"
    )
    with ws:
        hs._out(app, f"bash -c {shlex.quote(_with_app_env(code))}")
        got = cl.wait_event(ws, "doctor")
    if got and isinstance(got[0], dict) and got[0].get("token") == token:
        return Check(name, PASS, "a write-only RedisManager on an app host reached a websocket client via lb")
    return Check(
        name,
        FAIL,
        f"the client got {got!r} within {cl.TIMEOUT:g} s",
        "every instance must subscribe to the queue (see 'message queue subscribers'); external "
        "emitters need the same channel and URL (Flask-SocketIO #1910)",
    )


def check_versions(fleet: hs.Fleet) -> Check:
    _, app = fleet.hosts("app")[0]
    health = next((h for h in hs.instance_health(app).values() if h), {})
    ssl = app.run(f"ldd {layout().app_virtualenv}/bin/uwsgi | grep -q libssl").rc == 0
    return hs.judge_versions(hs.installed_versions(app), hs.pinned_versions(ROOT / "constraints.txt"), health, ssl)


def check_limits(fleet: hs.Fleet) -> Check:
    problems, seen = [], []
    # Anchored at the start of the command line, so the shell running pgrep never matches itself.
    for group, pattern, key in (
        ("lb", "^nginx: worker", ("nginx", "worker_rlimit_nofile")),
        ("app", "^[^ ]*/uwsgi ", ("uwsgi", "limit_nofile")),
    ):
        for name, host in fleet.hosts(group):
            plan = hs._plan(host)
            want = int(plan[key[0]][key[1]])
            pids = [int(p) for p in host.run(f"pgrep -f {shlex.quote(pattern)}").stdout.split()]
            limits = hs.nofile(host, pids) if pids else []
            if not limits:
                problems.append(f"{name}: no {pattern!r} process")
                continue
            low = min(limits)
            seen.append(f"{name} {key[0]} nofile {low} (plan {want})")
            if low < want:
                problems.append(f"{name}: {key[0]} runs with nofile {low} < planned {want}")
    if problems:
        return Check(
            "open-file limits",
            FAIL,
            "; ".join(problems),
            "LimitNOFILE= in the unit (services ignore limits.conf); re-run site.yml and restart",
        )
    return Check("open-file limits", PASS, "; ".join(seen))


def check_sysctls(fleet: hs.Fleet) -> list[Check]:
    return [
        c
        for group in ("lb", "app", "redis", "loadgen")
        for n, h in fleet.groups.get(group, [])
        for c in check_sysctls_on(n, h)
    ]


def check_sysctls_on(name: str, host: Any) -> list[Check]:
    planned = hs._plan(host).get("sysctls", {})
    live, writable = hs.live_sysctls(host, list(planned))
    return hs.judge_sysctls(name, planned, live, writable)


def check_nginx(pub: cl.Public, fleet: hs.Fleet) -> Check:
    _, lb = fleet.hosts("lb")[0]
    _, app = fleet.hosts("app")[0]
    conf = hs._out(lb, "nginx -T 2>/dev/null")
    max_msg = hs._out(app, f"sed -n 's/^SIOKIT_MAX_MESSAGE_BYTES=//p' {layout().app_env_file}").strip()
    hs_live = pub.handshake(headers={"Origin": pub.origin})  # the heartbeat the app really runs with
    return hs.nginx_timeouts(conf, hs_live.ping_interval_s, hs_live.ping_timeout_s, int(max_msg or 0))


def all_checks(url: str, fleet: hs.Fleet | None) -> list[tuple[str, Callable[[], Check | list[Check]]]]:
    pub = cl.Public(url)
    checks: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("websocket upgrade", lambda: cl.check_upgrade(pub)),
        ("sticky polling", lambda: cl.check_sticky_polling(pub)),
        ("allowed origins", lambda: cl.check_origins(pub)),
    ]
    if fleet is not None:
        checks += [
            ("upstream spread", lambda: check_spread(fleet)),
            ("message queue subscribers", lambda: check_subscribers(fleet)),
            ("external emit", lambda: check_external_emit(pub, fleet)),
            ("versions and async mode", lambda: check_versions(fleet)),
            ("open-file limits", lambda: check_limits(fleet)),
            ("nginx timeouts and sizes", lambda: check_nginx(pub, fleet)),
            ("sysctls", lambda: check_sysctls(fleet)),
        ]
    return checks


def run(url: str, fleet: hs.Fleet | None) -> list[Check]:
    results: list[Check] = []
    for name, fn in all_checks(url, fleet):
        try:
            got = fn()
        except Exception as exc:  # a broken deployment can break a probe in any way: report, go on
            got = Check(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}")
        results += got if isinstance(got, list) else [got]
    return results
