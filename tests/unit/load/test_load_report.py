"""JSON/HTML reports from a synthetic run."""

from __future__ import annotations

import json
from pathlib import Path

from siokit.load.options import build_parser, make_plan
from siokit.load.report import render_html, write_html, write_json
from siokit.load.runner import build_report
from siokit.load.stats import WorkerStats


def synthetic_report() -> dict:
    plan = make_plan(
        build_parser().parse_args(["--url", "http://127.0.0.1:1", "--connections", "10"]), nofile=(1024, 20000)
    )
    st = WorkerStats()
    for i in range(10):
        st.connect.add(0.01 * (i + 1))
        st.echo.add(0.001 * (i + 1))
        st.on_broadcast(1, 0.02 * (i + 1))
    st.broadcasts_sent = 1
    st.connected = 10
    st.established = 10
    st.attempts = 10
    st.rss_kb = 30_000
    st.failures["timeout"] = 2
    timeline = [
        {
            "t": float(t),
            "connected": min(10, 3 * t),
            "attempts": 10,
            "failures": 0,
            "reconnects": 0,
            "client_rss_kb": 1,
            "phase": "hold",
        }
        for t in range(1, 6)
    ]
    return build_report(plan, st, timeline, {}, False, 0.0, 2.0, 5.0, 10, 31_000)


def test_report_fields() -> None:
    r = synthetic_report()
    assert r["connections"]["held_at_end"] == 10
    assert r["connections"]["connect_rate_per_s"] == 5.0
    assert r["latency_ms"]["connect"]["p50"] > 0
    (b1,) = r["broadcast"]["per_broadcast"]
    assert b1["seq"] == 1 and b1["clients"] == 10
    assert 100 <= b1["p50"] <= 101 and b1["max"] == 200  # ms: the 5th of 20..200 ms, and the max
    assert r["latency_ms"]["broadcast_fanout"]["count"] == 10
    assert r["client"]["rss_kb_per_connection"] == 3000.0
    assert r["ok"] is False  # a failure happened
    json.dumps(r)


def test_write_files(tmp_path: Path) -> None:
    r = synthetic_report()
    write_json(r, str(tmp_path / "sub" / "r.json"))
    assert json.loads((tmp_path / "sub" / "r.json").read_text())["connections"]["target"] == 10
    write_html(r, str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    assert html.count("<svg") == 5
    assert "<script" not in html and "src=" not in html


def test_html_escapes_and_handles_empty() -> None:
    r = synthetic_report()
    r["failures"] = {"<b>x</b>": 1}
    r["timeline"] = []
    r["histograms"] = {}
    html = render_html(r)
    assert "<b>x</b>" not in html and "&lt;b&gt;" in html
    assert "no samples" in html


def test_stop_grace_scales_with_the_clients_of_a_worker() -> None:
    from siokit.load.worker import close_deadline_s, stop_grace_s

    small, big = stop_grace_s(100), stop_grace_s(14_546)  # 160k over 11 workers
    assert small < big
    assert big > 60  # the old fixed grace that 160k overran
    assert big > close_deadline_s(14_546)  # the parent outwaits its workers' own deadline
    assert stop_grace_s(29_092) - stop_grace_s(14_546) == close_deadline_s(29_092) - close_deadline_s(14_546)


def test_pings_and_cpu_per_message_sections() -> None:
    plan = make_plan(
        build_parser().parse_args(["--url", "http://127.0.0.1:1", "--connections", "4"]), nofile=(1024, 20000)
    )
    st = WorkerStats()
    st.connected = 4
    st.pings_held.update({0: 1, 2: 2, 5: 1})
    st.ping_interval_s, st.ping_timeout_s = 25.0, 20.0
    timeline = [
        {"t": 1.0, "connected": 4, "client_cpu_ms": 1000, "received": 0, "phase": "hold"},
        {"t": 11.0, "connected": 4, "client_cpu_ms": 1500, "received": 20_000, "phase": "hold"},
    ]
    r = build_report(plan, st, timeline, {}, False, 0.0, 1.0, 10.0, 4, 0, 45.0)
    assert r["pings"]["held_with_pings"] == 3 and r["pings"]["held_clients"] == 4
    assert r["pings"]["min_per_client"] == 0 and r["pings"]["median_per_client"] == 2
    assert r["client"]["hold"]["us_per_received_message"] == 25.0  # 0.5 s / 20,000
    assert r["config"]["stop_grace_s"] == 45.0
