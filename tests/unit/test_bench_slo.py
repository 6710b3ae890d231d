"""siokit bench: capacity-at-SLO steps, server-side socket counts beside the load generator's, and
the committed summary; on reports built by the load generator's own build_report."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from siokit.lab import bench, slo
from siokit.load.options import build_parser, make_plan
from siokit.load.runner import build_report
from siokit.load.stats import WorkerStats


def load_report(clients: int, held: int, fanout_s: list[float], broadcasts: int = 4) -> dict[str, Any]:
    plan = make_plan(
        build_parser().parse_args(["--url", "http://127.0.0.1:1", "--connections", str(clients)]), nofile=(1024, 20000)
    )
    st = WorkerStats()
    st.connected = st.established = st.attempts = held
    for seq in range(1, broadcasts + 1):
        for i in range(held):
            st.on_broadcast(seq, fanout_s[i % len(fanout_s)])
    return build_report(plan, st, [], {}, False, 0.0, 2.0, 10.0, held)


def test_slo_steps_stop_at_the_first_miss_and_report_the_last_met() -> None:
    spec = slo.SloSpec(p95_ms=500, step=10, max_clients=50)
    ran: list[int] = []

    def run_step(n: int) -> dict[str, Any]:
        ran.append(n)
        # fan-out grows with the clients: 10 and 20 meet 500 ms, 30 does not
        return load_report(n, n, [0.01 * n, 0.02 * n])

    result = slo.search(spec, run_step)
    assert ran == [10, 20, 30]  # no step after the first miss
    assert result["capacity"] == 20 and result["limited_by_max"] is False
    rows = result["steps"]
    assert [r["ok"] for r in rows] == [True, True, False]
    assert 400 <= rows[1]["fanout_p95_ms"] <= 404  # 0.4 s, within the histogram's 1%
    assert "p95" in rows[2]["why_not"]
    assert "capacity at p95 fan-out <= 500 ms: 20 clients" in slo.format_table(result)


def test_slo_step_with_a_lost_client_or_too_few_broadcasts_fails() -> None:
    spec = slo.SloSpec(p95_ms=500, step=5, max_clients=5)
    row = slo.judge(spec, 5, load_report(5, 4, [0.01]))
    assert not row["ok"] and "held 4/5" in row["why_not"]
    row = slo.judge(spec, 5, load_report(5, 5, [0.01], broadcasts=2))
    assert not row["ok"] and "broadcasts" in row["why_not"]
    result = slo.search(spec, lambda n: load_report(n, n, [0.01]))
    assert result["capacity"] == 5 and result["limited_by_max"] is True


@pytest.mark.parametrize(
    ("kw", "name"), [({"p95_ms": 0}, "p95-ms"), ({"step": -1}, "step"), ({"max_clients": 3, "step": 5}, "--max")]
)
def test_slo_spec_names_the_bad_setting(kw: dict[str, Any], name: str) -> None:
    args = {"p95_ms": 500.0, "step": 5, "max_clients": 10, **kw}
    with pytest.raises(ValueError, match=name):
        slo.SloSpec(**args)


def samples(*totals: tuple[float, int | None, int | None]) -> list[dict[str, Any]]:
    return [{"t": t, "counts": {"http://a": a, "http://b": b}} for t, a, b in totals]


def test_server_counts_match() -> None:
    r = load_report(10, 10, [0.01])  # ramp 2 s + hold 10 s
    got = bench.compare_counts(r, samples((1, 3, 2), (5, 5, 5), (11, 5, 5), (13, 0, 0)))
    assert got["match"] is True and got["note"] is None
    assert got["server"]["peak"] == 10 and got["server"]["end"] == 10 and got["server"]["end_at_s"] == 11
    assert got["client"] == {"peak": 10, "end": 10}


def test_server_counts_mismatch_is_said() -> None:
    r = load_report(10, 10, [0.01])
    got = bench.compare_counts(r, samples((5, 5, 5), (11, 5, 3), (11.5, None, 3)))
    assert got["match"] is False
    assert "end: servers held 8, the load generator 10" in got["note"]
    assert got["unanswered_samples"] == 1
    assert bench.compare_counts(r, [])["match"] is None  # nothing to read is not "match"


def test_read_server_count_from_a_healthz() -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok", "connected": 8, "sockets": {"/": 7, "/admin": 1}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        assert bench.read_server_count(f"http://127.0.0.1:{srv.server_address[1]}") == 7  # "/" only, not admin
    finally:
        srv.shutdown()
    assert bench.read_server_count("http://127.0.0.1:1", timeout=0.5) is None


def test_summary_is_written_small_and_named(tmp_path: Path) -> None:
    r = load_report(10, 10, [0.01])
    r["timeline"] = [{"t": i, "connected": 10, "pad": "x" * 400} for i in range(3000)]  # ~1.3 MB
    path = bench.write_summary({"target": "t", "load": r, "measured": {}}, "run-1", tmp_path / "results")
    assert path == tmp_path / "results" / "run-1.json"
    data = json.loads(path.read_text())
    assert data["name"] == "run-1" and path.stat().st_size <= bench.SUMMARY_MAX_BYTES * 1.2
    assert data["load"]["timeline_thinned"] >= 2 and data["load"]["histograms"]
    with pytest.raises(ValueError, match="--name"):
        bench.write_summary({}, "../x", tmp_path)
