"""``siokit load`` says why its clients dropped, on the loopback stack (real nginx, uWSGI, Redis).

Issue #9, run C: 680 clients dropped and the load generator counted no reason. Here two causes are
provoked for real and each drop must be counted under the reason the client could observe, next
to what the servers counted in their own /metrics:

- the server cuts clients off (its event rate limit, made small here): python-engineio closes the
  session with an Engine.IO close packet; the servers count ``server disconnect``. The load
  generator's ``eio_close_packet`` drops must equal the servers' count exactly.
- one uWSGI instance is killed with SIGKILL: nginx closes its clients' connections with no
  websocket close frame; every client the instance held (its /healthz just before) must be counted
  as ``eof_no_close_frame``, and the surviving instance must count no disconnect of its own.

Small and bounded: 10 clients, about 10 s per run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siokit.lab.bench import SLOW_CONSUMER, read_server_count, read_server_disconnects
from siokit.lab.local import LocalStack, down, up
from siokit.load.client import EIO_CLOSE_PACKET, UNKNOWN
from siokit.load.transport import EOF_NO_CLOSE

from .conftest import free_base_port

pytestmark = pytest.mark.integration

CLIENTS = 10


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    tmp = tmp_path_factory.mktemp("stack-drops")
    # A small event limit, so that 10 echoes a second cut a client off within ~2 s.
    limits = {"app_event_rate": 2, "app_event_burst": 4, "app_event_drop_limit": 8}
    s = LocalStack(state_dir=tmp, port=free_base_port(), instances=2, balance="least_conn", overrides=limits)
    try:
        up(s)
    except Exception:
        down(tmp)
        raise
    yield s
    down(tmp)


def _instances(stack: LocalStack) -> list[str]:
    return [f"http://127.0.0.1:{p}" for p in stack.app_ports]


def _load(stack: LocalStack, report: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SIOKIT_ADMIN_TOKEN": stack.admin_secret}  # not on the command line
    opts = ["--connections", str(CLIENTS), "--workers", "1", "--reconnect-min", "0.3", "--reconnect-max", "1"]
    cmd = [sys.executable, "-m", "siokit.load", "--no-progress", "--url", stack.url, "--report", str(report)]
    cmd += [*opts, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen[str], report: Path) -> dict[str, Any]:
    out, err = proc.communicate(timeout=90)
    assert report.exists(), f"no report (exit {proc.returncode}):\n{err[-3000:]}"
    summary = json.loads(out)
    r: dict[str, Any] = json.loads(report.read_text())
    # the text summary carries the reasons too
    assert summary["drops"] == r["connections"]["drops"]
    assert summary["drop_reasons"] == r["connections"]["drop_reasons"]
    con = r["connections"]
    assert sum(con["drop_reasons"].values()) == con["drops"]  # a reason for every drop
    assert UNKNOWN not in con["drop_reasons"]
    lag = r["loop_lag"]
    assert lag["samples"] >= 20 * r["duration"]["hold_s"] * 0.5  # the 50 ms probe ran through the hold
    assert lag["max_ms"] is not None and lag["per_worker_max_ms"]
    return r


def _disconnects(stack: LocalStack) -> dict[str, dict[str, int]]:
    got = {u: read_server_disconnects(u) for u in _instances(stack)}
    assert all(v is not None for v in got.values()), got
    assert all(SLOW_CONSUMER in (v or {}) for v in got.values()), got  # the real exposition parses
    return {u: v or {} for u, v in got.items()}


def _wait_held(stack: LocalStack, n: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = {u: read_server_count(u) or 0 for u in _instances(stack)}
        if sum(counts.values()) == n:
            return counts
        assert time.monotonic() < deadline, f"servers hold {counts}, wanted {n} in all"
        time.sleep(0.2)


def test_server_cut_offs_are_counted_as_engineio_close_packets_like_the_servers_count_them(
    stack: LocalStack, tmp_path: Path
) -> None:
    before = _disconnects(stack)
    report = tmp_path / "cut.json"
    r = _finish(_load(stack, report, "--hold", "8", "--echo-every", "0.1"), report)
    # read after the load generator's report: its clients are closed by then (teardown), which
    # the servers count as other reasons; "server disconnect" comes only from the cut-offs
    after = _disconnects(stack)
    server_cut = sum(after[u].get("server disconnect", 0) - before[u].get("server disconnect", 0) for u in after)
    reasons = r["connections"]["drop_reasons"]
    assert server_cut > 0, "the rate limit cut no client off: the test provoked nothing"
    assert reasons.get(EIO_CLOSE_PACKET, 0) == server_cut, (reasons, server_cut)
    assert r["connections"]["reconnects"] > 0
    assert all(after[u][SLOW_CONSUMER] == before[u][SLOW_CONSUMER] for u in after)  # no other cause


def test_a_killed_instance_s_clients_are_counted_as_eof_without_close_frame(stack: LocalStack, tmp_path: Path) -> None:
    report = tmp_path / "kill.json"
    proc = _load(stack, report, "--hold", "10")
    try:
        held = _wait_held(stack, CLIENTS, timeout=30)
        victim_url = max(held, key=lambda u: held[u])
        victim_port = int(victim_url.rsplit(":", 1)[1])
        survivor = next(u for u in held if u != victim_url)
        survivor_before = read_server_disconnects(survivor)
        os.killpg(stack.pids[f"uwsgi-{victim_port}"], signal.SIGKILL)
        time.sleep(4)  # clients notice, reconnect to the survivor; the hold goes on
        survivor_after = read_server_disconnects(survivor)
        r = _finish(proc, report)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert held[victim_url] > 0
    assert r["connections"]["drop_reasons"] == {EOF_NO_CLOSE: held[victim_url]}, (held, r["connections"])
    # the survivor closed no client of its own while they came over
    assert survivor_before is not None and survivor_after == survivor_before
    assert r["connections"]["held_at_end"] == CLIENTS  # all back, on the survivor


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def test_a_stalled_load_worker_shows_as_its_own_loop_lag_in_the_broadcast_window(
    stack: LocalStack, tmp_path: Path
) -> None:
    """SIGSTOP the load generator's one worker for 1.5 s during the hold: the report must show a
    stall of that size, on that worker, in the window of the broadcast it fell in, and no drop (the
    servers' ping timeout is far longer): the figure names the component that held the run back."""
    report = tmp_path / "stall.json"
    proc = _load(stack, report, "--hold", "9", "--broadcast-every", "2")
    try:
        _wait_held(stack, CLIENTS, timeout=30)
        time.sleep(3)  # inside the hold, a broadcast or two sent
        workers = [k for k in _children(proc.pid) if b"siokit" in Path(f"/proc/{k}/cmdline").read_bytes()]
        assert len(workers) == 1, workers  # --workers 1 (multiprocessing may add a resource tracker)
        t_stop = time.time()
        os.kill(workers[0], signal.SIGSTOP)
        time.sleep(1.5)
        os.kill(workers[0], signal.SIGCONT)
        r = _finish(proc, report)
    finally:
        if proc.poll() is None:
            proc.kill()
    lag = r["loop_lag"]
    assert 1400 <= lag["max_ms"] < 5000, lag
    assert lag["per_worker_max_ms"] == {"0": lag["max_ms"]}
    # the window it began in; worker 0 also sends the broadcasts, so none went out during it
    stalled = [b for b in lag["per_broadcast"] if b["max_stall_ms"] >= 1400]
    assert len(stalled) == 1 and stalled[0]["worker"] == 0, lag["per_broadcast"]
    sent = {b["seq"]: b["sent_at"] for b in r["broadcast"]["per_broadcast"]}
    seq = stalled[0]["seq"]
    assert sent[seq] <= t_stop and (seq + 1 not in sent or sent[seq + 1] >= t_stop + 1.4), (sent, t_stop)
    assert r["connections"]["drops"] == 0
    assert r["broadcast"]["sent"] >= 3
