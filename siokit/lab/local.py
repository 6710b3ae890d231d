"""The loopback stack: Redis, N uWSGI instances and nginx on 127.0.0.1, no systemd.

Rendered from the same templates as a deployment (only paths and addresses differ), so tests and
developers exercise the real configuration with the real processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from siokit import planner
from siokit.facts import local_host_facts
from siokit.render import ROOT, render_all

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def plan_loopback(sockets: int, instances: int | None = None, source_ips: int | None = None) -> planner.Plan:
    """The plan of a loopback stack: every group on this host, sized on its facts, computed once.
    source_ips: the load generator's addresses (127.0.0.2, ...); default the fewest the ports allow."""
    target = planner.Target(
        sockets=sockets,
        source_ips=planner.source_ips_needed(sockets) if source_ips is None else source_ips,
        colocated=True,
        uwsgi_instances_per_host=instances,
    )
    return planner.plan(target, local_host_facts())


@dataclass
class LocalStack:
    """A loopback stack. Give it `plan` (the one plan document, e.g. the bench's), or `sockets` and
    `instances` and it plans once itself; either way every file is rendered from that one plan."""

    state_dir: Path
    port: int = 8080
    instances: int | None = 2
    balance: str = "ip_hash"
    sockets: int = 2000
    plan: planner.Plan | None = None
    # nginx's per-address limits skip these (the loopback load tests bind 127.0.0.x).
    limit_exempt: list[str] = field(default_factory=lambda: ["127.0.0.0/8"])
    # Any other template variable, applied last (tests: TLS, monitoring networks, a small nginx limit).
    overrides: dict[str, Any] = field(default_factory=dict)
    redis_port: int = 0
    app_ports: list[int] = field(default_factory=list)
    redis_password: str = ""
    admin_secret: str = ""
    # The Socket.IO Admin UI at /admin-ui/ (nginx basic auth, the app's /admin-ui namespace), user "admin".
    admin_ui: bool = False
    admin_ui_password: str = ""
    admin_ui_salt: str = ""
    # nginx's workers (nobody, when root starts nginx) read the password file at each request: it lives
    # in a directory of its own that they can reach, which a test's private temp dir is not.
    admin_ui_dir: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.plan is None:
            self.plan = plan_loopback(self.sockets, self.instances)
        self.instances = self.plan.uwsgi.instances_per_host
        self.sockets = self.plan.sockets

    @property
    def planned(self) -> planner.Plan:
        assert self.plan is not None  # set in __post_init__
        return self.plan

    @property
    def plan_file(self) -> Path:
        """The plan document of this stack (what `siokit load --plan` reads)."""
        return self.state_dir / "plan.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rendered(self) -> Path:
        return self.state_dir / "rendered"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    def save(self) -> None:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["plan"] = self.planned.to_dict()
        self.state_file.write_text(json.dumps(data, indent=2))
        self.state_file.chmod(0o600)  # holds the generated secrets
        self.plan_file.write_text(json.dumps(data["plan"], indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> LocalStack:
        data = json.loads((state_dir / "stack.json").read_text())
        data["state_dir"] = Path(data["state_dir"])
        try:
            data["plan"] = planner.Plan.from_dict(data.get("plan") or {})
        except planner.PlanError:
            data["plan"] = None  # a stack started by an older siokit: still stoppable, planned anew
        return cls(**data)

    def variables(self) -> dict[str, Any]:
        """Template variables for loopback: the role defaults with local paths and addresses."""
        s = self.state_dir
        venv = Path(sys.prefix)
        return {
            "siokit_plan": self.planned.to_dict(),
            "siokit_redis_password": self.redis_password,
            "siokit_admin_secret": self.admin_secret,
            "siokit_admin_ui_enabled": self.admin_ui,
            "siokit_admin_ui_password": self.admin_ui_password,
            "siokit_admin_ui_salt": self.admin_ui_salt,
            # Served from the checkout (`make static` builds it), the password file from the rendered dir.
            "nginx_admin_ui_root": str(ROOT / "build" / "admin-ui"),
            "nginx_admin_ui_htpasswd": str(
                Path(self.admin_ui_dir or self.rendered / "nginx") / "siokit-admin-ui.htpasswd"
            ),
            "siokit_redis_host": "127.0.0.1",
            "siokit_redis_port": self.redis_port,
            "nginx_user": "",
            "nginx_pid_file": str(s / "nginx.pid"),
            "nginx_error_log": str(s / "nginx-error.log"),
            "nginx_error_log_level": "notice",
            "nginx_access_log": str(s / "nginx-access.log"),
            "nginx_upstream_error_log": str(s / "nginx-upstream-errors.log"),
            "nginx_temp_dir": str(s / "nginx-tmp"),
            "nginx_site_path": str(self.rendered / "nginx" / "siokit.conf"),
            "nginx_listen": f"127.0.0.1:{self.port}",
            "nginx_status_listen": f"127.0.0.1:{self.port + 1}",
            "nginx_balance": self.balance,
            # The loopback load tests come from 127.0.0.x: the kit's own load generator is exempt.
            "nginx_limit_exempt": list(self.limit_exempt),
            "nginx_upstream_servers": [f"127.0.0.1:{p}" for p in self.app_ports],
            "app_base_port": self.app_ports[0],
            "app_bind_address": "127.0.0.1",
            "kit_virtualenv": str(venv),
            "app_uwsgi_binary": str(venv / "bin" / "uwsgi"),
            "kit_src_dir": str(ROOT),
            "app_run_dir": str(s / "run"),
            "app_ini_file": str(self.rendered / "uwsgi" / "siokit.ini"),
            "app_env_file": str(self.rendered / "uwsgi" / "siokit.env"),
            "app_cors_origins": "",  # same origin: nginx passes Host with its port
            "redis_bind_addresses": ["127.0.0.1"],
            "redis_supervised": "no",
            "redis_dir": str(s / "redis"),
            "redis_pidfile": str(s / "redis.pid"),
            "redis_logfile": str(s / "redis.log"),
            "siokit_host_address": "127.0.0.1",
            "nginx_server_name": "127.0.0.1 localhost",
            **self.overrides,
        }


def _free_port(start: int) -> int:
    for port in range(start, start + 1000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port from {start}")


def _read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key] = value
    return env


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return proc.pid


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _wait_http(url: str, deadline: float, accept: tuple[int, ...] = (200,)) -> None:
    last: Exception | None = None
    opener = urllib.request.build_opener(_NoRedirect)
    while time.monotonic() < deadline:
        try:
            with opener.open(url, timeout=2) as resp:
                if resp.status in accept:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in accept:
                return
            last = exc
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {READY_TIMEOUT:.0f} s: {last}")


def _wait_tcp(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {READY_TIMEOUT:.0f} s")


def up(stack: LocalStack) -> LocalStack:
    for tool in ("redis-server", "nginx"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            raise RuntimeError(f"{tool} is not installed (make deps installs it)")
    uwsgi = Path(sys.prefix) / "bin" / "uwsgi"
    if not uwsgi.exists():
        raise RuntimeError(f"{uwsgi} is missing (make venv builds uWSGI with SSL)")
    s = stack.state_dir
    for sub in ("run", "redis", "nginx-tmp", "logs"):
        (s / sub).mkdir(parents=True, exist_ok=True)
    (s / "nginx-tmp").chmod(0o1777)  # workers run as nobody when started by root
    stack.redis_password = stack.redis_password or secrets.token_urlsafe(24)
    stack.admin_secret = stack.admin_secret or secrets.token_urlsafe(24)
    if stack.admin_ui:
        if not (ROOT / "build" / "admin-ui" / "index.html").exists():
            raise RuntimeError("build/admin-ui is missing (make static builds the Admin UI)")
        # Letters and digits, like the plan role's generated passwords.
        stack.admin_ui_password = stack.admin_ui_password or secrets.token_hex(16)
        stack.admin_ui_salt = stack.admin_ui_salt or secrets.token_hex(8)
        if not stack.admin_ui_dir:
            stack.admin_ui_dir = tempfile.mkdtemp(prefix="siokit-admin-ui-")
            os.chmod(stack.admin_ui_dir, 0o755)
    stack.redis_port = _free_port(stack.port + 9)
    base = _free_port(stack.port + 10)
    stack.app_ports = []
    port = base
    while len(stack.app_ports) < stack.planned.uwsgi.instances_per_host:
        port = _free_port(port)
        stack.app_ports.append(port)
        port += 1
    render_all(stack.variables(), stack.rendered)
    if stack.admin_ui:
        htpasswd = Path(stack.admin_ui_dir) / "siokit-admin-ui.htpasswd"
        shutil.copyfile(stack.rendered / "nginx" / "siokit-admin-ui.htpasswd", htpasswd)
        htpasswd.chmod(0o644)  # a salted hash, for the workers' user
    stack.save()

    deadline = time.monotonic() + READY_TIMEOUT
    stack.pids["redis"] = _spawn(
        ["redis-server", str(stack.rendered / "redis" / "redis.conf")], s / "logs" / "redis.out"
    )
    stack.save()
    _wait_tcp(stack.redis_port, deadline)
    for port in stack.app_ports:
        start_instance(stack, port)
    for port in stack.app_ports:
        _wait_http(f"http://127.0.0.1:{port}/healthz", deadline)
    nginx = _nginx_cmd(stack)
    check = subprocess.run([*nginx, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
    started = subprocess.run(nginx, capture_output=True, text=True)
    if started.returncode != 0:  # e.g. its port taken since it was chosen
        raise RuntimeError(f"nginx failed to start:\n{started.stderr}")
    stack.pids["nginx"] = int((s / "nginx.pid").read_text())
    stack.save()
    # 301: nginx redirects plain HTTP to HTTPS when a test asks for it (nginx_tls_redirect_http).
    _wait_http(f"{stack.url}/healthz", deadline, accept=(200, 301))
    return stack


def start_instance(stack: LocalStack, port: int) -> int:
    """Start the uWSGI instance of `port` (what systemd's siokit-uwsgi@PORT does); its pid. Also
    how a test restarts an instance it killed."""
    env = dict(os.environ)
    env.update(_read_env_file(stack.rendered / "uwsgi" / "siokit.env"))
    env["SIOKIT_INSTANCE_ID"] = f"local:{port}"
    uwsgi = Path(sys.prefix) / "bin" / "uwsgi"
    pid = _spawn(
        [str(uwsgi), "--set-ph", f"port={port}", "--ini", str(stack.rendered / "uwsgi" / "siokit.ini")],
        stack.state_dir / "logs" / f"uwsgi-{port}.log",
        env=env,
    )
    stack.pids[f"uwsgi-{port}"] = pid
    stack.save()
    return pid


def _nginx_cmd(stack: LocalStack) -> list[str]:
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin") or "nginx"
    return [
        nginx,
        "-p",
        str(stack.state_dir),
        "-e",
        str(stack.state_dir / "nginx-error.log"),
        "-c",
        str(stack.rendered / "nginx" / "nginx.conf"),
    ]


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a parent to reap it."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap our own children (uWSGI, Redis)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _stop(pid: int, group: bool) -> None:
    kill = os.killpg if group else os.kill
    try:
        kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            kill(pid, signal.SIGKILL)


def down(state_dir: Path) -> None:
    if not (state_dir / "stack.json").exists():
        return
    stack = LocalStack.load(state_dir)
    # nginx first, so no client is sent to an instance that is going away.
    for name in sorted(stack.pids, key=lambda n: (n != "nginx", n == "redis", n)):
        _stop(stack.pids[name], group=name != "nginx")
    stack.pids = {}
    if stack.admin_ui_dir:
        shutil.rmtree(stack.admin_ui_dir, ignore_errors=True)
        stack.admin_ui_dir = ""
    stack.save()


def status(state_dir: Path) -> dict[str, bool]:
    stack = LocalStack.load(state_dir)
    return {name: _alive(pid) for name, pid in stack.pids.items()}


def main(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    if args.action == "down":
        down(state_dir)
        print(f"loopback stack in {state_dir} stopped")
        return 0
    if args.action == "status":
        if not (state_dir / "stack.json").exists():
            print("no loopback stack")
            return 1
        result = status(state_dir)
        for name, alive in result.items():
            print(f"{name}: {'running' if alive else 'stopped'}")
        return 0 if result and all(result.values()) else 1
    try:
        plan = plan_loopback(args.sockets, args.instances)
    except planner.PlanError as exc:
        print(f"siokit local up: impossible target: {exc}", file=sys.stderr)
        return 2
    down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(state_dir=state_dir, port=args.port, balance=args.balance, plan=plan, admin_ui=args.admin_ui)
    try:
        up(stack)
    except Exception as exc:
        print(f"siokit local up failed: {exc}\nlogs: {state_dir}", file=sys.stderr)
        down(state_dir)
        return 1
    print(
        f"loopback stack up: {stack.url}/ (nginx, {len(stack.app_ports)} uWSGI instances on "
        f"{stack.app_ports}, Redis on {stack.redis_port}); state and logs in {state_dir}"
    )
    if stack.admin_ui:
        print(
            f"Socket.IO Admin UI: {stack.url}/admin-ui/ (user admin, password: admin_ui_password in "
            f"{stack.state_file}; in the UI's advanced options, namespace /admin-ui)"
        )
    return 0
