"""``siokit load`` against a real python-socketio server (bench/py_server.py) on loopback.

The server runs in a subprocess (gevent pywsgi + gevent-websocket, echo + /admin broadcast) with a
2 s Engine.IO ping interval, so idle clients must answer pings to survive the hold.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .chromium import REPORTS, chromium

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "bench" / "py_server.py"
TOKEN = secrets.token_urlsafe(12)  # a test credential, generated per run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SERVER),
                "--port",
                str(self.port),
                "--ping-interval",
                "2",
                "--ping-timeout",
                "3",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ, SIOKIT_ADMIN_TOKEN=TOKEN),  # not on its command line
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), f"server did not start: {line!r}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def established_to(port: int) -> int:
    """Client-side ESTABLISHED TCP sockets whose peer is the server port (ss, else psutil)."""
    if shutil.which("ss") is None:
        import psutil  # type: ignore[import-untyped]

        return sum(
            1
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == port
        )
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def load_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "siokit.load", "--no-progress", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("SIOKIT_ADMIN_TOKEN", None)
    return e


def run_watching(cmd: list[str], port: int, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the load generator; sample the server port's ESTABLISHED count while it runs."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        peak = max(peak, established_to(port))
        time.sleep(0.3)
    out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), peak


def test_websocket_clients_two_workers_one_tcp_connection_each(server: Server, tmp_path: Path) -> None:
    n = 300
    report = tmp_path / "load.json"
    res, peak = run_watching(
        load_cmd(
            "--url",
            server.url,
            "--bind",
            "127.0.0.2,127.0.0.3",
            "--workers",
            "1",
            "--connections",
            str(n),
            "--concurrency",
            "100",
            "--batch-size",
            "100",
            "--hold",
            "6",
            "--echo-every",
            "1",
            "--broadcast-every",
            "1",
            "--admin-token",
            TOKEN,
            "--report",
            str(report),
        ),
        server.port,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    r = json.loads(report.read_text())
    assert r["config"]["processes"] == 2
    assert r["connections"]["held_at_end"] == n
    assert r["connections"]["peak_held"] == n
    assert r["connections"]["transports"] == {"websocket": n}
    assert r["failures"] == {}
    assert r["connections"]["reconnects"] == 0
    assert r["connections"]["drops"] == 0  # pings answered: 6 s hold > 2 s interval + 3 s timeout
    # exactly one TCP connection per virtual client, plus the one uncounted admin client
    assert peak == n + 1
    lat = r["latency_ms"]
    assert lat["connect"]["count"] == n and lat["connect"]["p99"] > 0
    assert lat["echo"]["count"] > n and lat["echo"]["p50"] is not None
    assert lat["broadcast_fanout"]["count"] > 0 and lat["broadcast_fanout"]["max"] is not None
    assert r["broadcast"]["sent"] >= 3
    counts = [b["clients"] for b in r["broadcast"]["per_broadcast"]]
    assert counts and all(c == n for c in counts)  # traffic drains before the clients close
    assert r["echo"]["answered"] == r["echo"]["sent"]
    assert len(r["timeline"]) >= 5
    # the final reports came before the teardown, and both workers then closed their clients
    assert r["teardown"]["workers_closed"] == 2 and r["teardown"]["workers_terminated_while_closing"] == 0
    html = report.with_suffix(".html").read_text()
    # Self-contained: three Plotly charts, plotly.js inlined once, no script fetched from anywhere.
    assert html.count("Plotly.newPlot(") == 3 and html.count("plotly.js v") == 1
    assert re.search(r"<script[^>]*\bsrc=", html) is None
    screenshot_report(report.with_suffix(".html"))


def screenshot_report(html: Path) -> None:
    """Chromium draws every chart of the report from the file alone; the screenshot is an artifact."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    REPORTS.mkdir(exist_ok=True)
    shutil.copy(html, REPORTS / "load-report.html")
    with chromium(window="1200,2400") as driver:
        driver.get(html.as_uri())
        WebDriverWait(driver, 30).until(
            lambda d: (
                len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")) >= 3
                and len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer .trace")) >= 5
            )
        )
        # Axis titles and legends are drawn (not only present in the JSON).
        drawn = driver.find_element(By.TAG_NAME, "body").text
        for text in ("time since start (s)", "clients held", "latency (ms, log scale)", "broadcast fan-out"):
            assert text in drawn, text
        driver.save_screenshot(str(REPORTS / "load-report.png"))
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors


def test_reconnects_after_server_restart(server: Server, tmp_path: Path) -> None:
    n = 60
    report = tmp_path / "r.json"
    proc = subprocess.Popen(
        load_cmd(
            "--url",
            server.url,
            "--bind",
            "127.0.0.4",
            "--connections",
            str(n),
            "--hold",
            "10",
            "--reconnect-min",
            "0.2",
            "--reconnect-max",
            "1",
            "--report",
            str(report),
        ),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 15
    while established_to(server.port) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    assert established_to(server.port) == n
    time.sleep(1.0)  # TCP is up; let every namespace handshake finish too
    server.stop()  # every client drops...
    time.sleep(0.5)
    server.start()  # ...and comes back (backoff 0.1-0.2 s, doubling up to 1 s)
    _out, err = proc.communicate(timeout=40)
    r = json.loads(report.read_text())
    assert r["connections"]["drops"] == n, json.dumps(r["connections"]) + json.dumps(r["failures"]) + err
    assert r["connections"]["reconnects"] == n
    assert r["connections"]["reconnect_attempts"] >= n
    assert r["connections"]["held_at_end"] == n
    assert proc.returncode == 1  # failures during the outage make the run "not ok"
    assert set(r["failures"]) <= {"refused", "reset", "closed", "timeout"}
    # SIGKILL: the kernel closed the server's sockets (FIN, or RST where it had unread bytes); the
    # failures all came from reconnects (the first connects all succeeded)
    reasons = r["connections"]["drop_reasons"]
    assert set(reasons) <= {"eof_no_close_frame", "tcp_reset"} and sum(reasons.values()) == n, reasons
    assert r["connections"]["reconnect_failures"] == r["failures"]


def test_polling_transport_one_connection_per_client(server: Server, tmp_path: Path) -> None:
    n = 40
    report = tmp_path / "p.json"
    res, peak = run_watching(
        load_cmd(
            "--url",
            server.url,
            "--transport",
            "polling",
            "--connections",
            str(n),
            "--hold",
            "5",
            "--echo-every",
            "1",
            "--report",
            str(report),
        ),
        server.port,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    r = json.loads(report.read_text())
    assert r["connections"]["transports"] == {"polling": n}
    assert r["connections"]["held_at_end"] == n
    assert r["connections"]["drops"] == 0
    assert r["latency_ms"]["echo"]["count"] > 0
    assert peak == n


def test_refused_is_counted_by_reason(tmp_path: Path) -> None:
    port = free_port()
    report = tmp_path / "f.json"
    res = subprocess.run(
        load_cmd(
            "--url",
            f"http://127.0.0.1:{port}",
            "--connections",
            "5",
            "--no-reconnect",
            "--hold",
            "0",
            "--report",
            str(report),
        ),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1
    r = json.loads(report.read_text())
    assert r["failures"] == {"refused": 5}
    assert r["connections"]["held_at_end"] == 0


def test_bad_admin_token_is_reported(server: Server, tmp_path: Path) -> None:
    report = tmp_path / "a.json"
    res = subprocess.run(
        load_cmd(
            "--url",
            server.url,
            "--connections",
            "5",
            "--hold",
            "1",
            "--broadcast-every",
            "0.5",
            "--admin-token",
            "wrong",
            "--report",
            str(report),
        ),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    r = json.loads(report.read_text())
    assert r["failures"] == {"admin_connect_error": 1}
    assert r["connections"]["held_at_end"] == 5
    assert res.returncode == 1
