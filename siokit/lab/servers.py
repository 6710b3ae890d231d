"""Real uWSGI and redis-server processes on loopback, started and stopped for tests and lab measurements."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siokit.facts import local_facts
from siokit.render import build_vars, render_template

REPO = Path(__file__).resolve().parents[2]  # the repository: uWSGI serves app.wsgi from it
VENV = Path(sys.prefix)
UWSGI = VENV / "bin" / "uwsgi"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uwsgi_ini(directory: Path, gevent_cores: int = 200, variables: Mapping[str, Any] | None = None) -> Path:
    """The deployment's instance ini (templates/uwsgi/siokit.ini.j2), rendered for loopback.

    Only paths and the bind address differ from a host's: one uWSGI command line, the template's.
    The plan is the planner's for one instance holding `gevent_cores` sockets on this machine, asked
    for exactly that many async cores (planner input, checked there; a planner without that input
    gives at least as many, with its margin).
    """
    values: dict[str, Any] = {
        "siokit_plan_input": {
            "sockets": gevent_cores,
            "uwsgi_instances_per_host": 1,
            "async_cores": gevent_cores,
            "colocated": True,
            "app": local_facts(),
        },
        "app_bind_address": "127.0.0.1",
        "kit_virtualenv": str(VENV),
        "kit_src_dir": str(REPO),
        "app_run_dir": str(directory),
        # A test's instance stops within STOP_TIMEOUT (a host's waits app_stop_mercy = 10 s).
        "app_stop_mercy": 5,
        **(variables or {}),
    }
    ini = directory / "siokit.ini"
    ini.write_text(render_template("uwsgi/siokit.ini.j2", build_vars(values)))
    return ini


def uwsgi_args(port: int, ini: Path, extra: Sequence[str] = ()) -> list[str]:
    """How systemd starts an instance (templates/systemd/siokit-uwsgi@.service.j2), plus `extra`."""
    return [str(UWSGI), "--set-ph", f"port={port}", "--ini", str(ini), *extra]


@dataclass
class Proc:
    """A child process in its own session, so it and its workers can be signalled as one group."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int
    url: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        pgid = self.popen.pid  # start_new_session=True: the group id is our own child's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.popen.wait(timeout=STOP_TIMEOUT)


def _spawn(args: Sequence[str], env: Mapping[str, str], log_path: Path, port: int) -> Proc:
    log_file = log_path.open("wb")
    try:
        popen = subprocess.Popen(
            list(args),
            env=dict(env),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log_file.close()
    return Proc(popen=popen, log_path=log_path, port=port)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


@contextlib.contextmanager
def run_uwsgi(
    tmp_path: Path,
    name: str = "uwsgi",
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
    gevent_cores: int = 200,
    variables: Mapping[str, Any] | None = None,
) -> Iterator[Proc]:
    """Start uWSGI serving app.wsgi on a free loopback port; yield once /healthz answers.

    `variables` are template variables of the ini (app_websockets_ping_freq, ...); `extra` are
    command-line options after it.
    """
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIOKIT_")}
    full_env.update({"SIOKIT_INSTANCE_ID": f"{name}:{port}", **(env or {})})
    conf_dir = tmp_path / f"{name}-{port}"
    conf_dir.mkdir(parents=True, exist_ok=True)
    ini = uwsgi_ini(conf_dir, gevent_cores, variables)
    proc = _spawn(uwsgi_args(port, ini, extra), full_env, tmp_path / f"{name}.log", port)
    proc.url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not proc.alive():
                raise RuntimeError(f"uWSGI exited early:\n{proc.log()}")
            try:
                proc.info = get_json(proc.url + "/healthz", timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"uWSGI did not answer /healthz in {START_TIMEOUT}s:\n{proc.log()}") from None
                time.sleep(0.1)
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def run_redis(tmp_path: Path) -> Iterator[Proc]:
    """A throwaway redis-server on a free loopback port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not installed (Debian package redis-server)")
    port = free_port()
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]
    proc = _spawn(args, os.environ, tmp_path / "redis.log", port)
    proc.url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not proc.alive():
                raise RuntimeError(f"redis-server exited early:\n{proc.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer in {START_TIMEOUT}s:\n{proc.log()}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.stop()


def redis_numsub(port: int, channel: str) -> int:
    """Subscribers of a Redis pub/sub channel (PUBSUB NUMSUB), over a raw RESP connection."""
    with socket.create_connection(("127.0.0.1", port), 2.0) as s:
        s.sendall(f"PUBSUB NUMSUB {channel}\r\n".encode())
        reply = s.recv(4096).decode()
    # *2\r\n$<len>\r\n<channel>\r\n:<count>\r\n
    return int(reply.rsplit(":", 1)[1].split("\r\n", 1)[0])


def process_tree_cpu_seconds(root_pid: int) -> float:
    """utime+stime of root_pid and its children (uWSGI master + workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [root_pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == root_pid:
                    pids.append(int(entry.name))
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks
