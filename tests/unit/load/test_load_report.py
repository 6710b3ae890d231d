"""JSON/HTML reports from a synthetic run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from siokit.load.options import UsageError, build_parser, make_plan
from siokit.load.report import (
    connections_figure,
    latency_figure,
    render_html,
    server_figures,
    slo_figure,
    write_html,
    write_json,
    write_slo_html,
)
from siokit.load.runner import build_report
from siokit.load.stats import Histogram, WorkerStats


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


def slo_result(capacity_steps: int = 2) -> dict:
    steps = []
    for i, p95 in enumerate((120.0, 300.0, 800.0), start=1):
        ok = i <= capacity_steps
        steps.append(
            {
                "clients": 1000 * i,
                "held": 1000 * i,
                "broadcasts": 5,
                "complete_broadcasts": 5,
                "fanout_p50_ms": p95 / 3,
                "fanout_p95_ms": p95,
                "fanout_p99_ms": p95 * 1.5,
                "fanout_max_ms": p95 * 2,
                "failures": 0,
                "ok": ok,
                "why_not": None if ok else f"fan-out p95 {p95} ms > 500 ms",
            }
        )
    return {"slo_p95_ms": 500.0, "step": 1000, "max": 3000, "capacity": 2000, "limited_by_max": False, "steps": steps}


def test_write_files(tmp_path: Path) -> None:
    r = synthetic_report()
    write_json(r, str(tmp_path / "sub" / "r.json"))
    assert json.loads((tmp_path / "sub" / "r.json").read_text())["connections"]["target"] == 10
    write_html(r, str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    # Three charts, plotly.js inlined exactly once and never fetched: the file opens offline.
    assert html.count("Plotly.newPlot(") == 3
    assert html.count("plotly.js v") == 1
    assert re.search(r"<script[^>]*\bsrc=", html) is None
    for label in ("time since start (s)", "latency (ms, log scale)", "clients that received it"):
        assert label in html


def test_connections_figure_has_the_timeline() -> None:
    r = synthetic_report()
    fig = connections_figure(r["timeline"])
    held, failures = fig.data
    assert list(held.x) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(held.y) == [3, 6, 9, 10, 10]
    assert failures.yaxis == "y2" and list(failures.y) == [0] * 5
    assert fig.layout.yaxis.title.text == "clients held"
    assert fig.layout.yaxis2.title.text == "handshake failures (cumulative)"


def test_latency_figure_is_cumulative_per_histogram() -> None:
    hists = {k: Histogram.from_dict(v) for k, v in synthetic_report()["histograms"].items()}
    fig = latency_figure(hists)
    names = [t.name for t in fig.data]
    assert names == ["connect (10 samples)", "echo round trip (10 samples)", "broadcast fan-out (10 samples)"]
    for trace in fig.data:
        ys = list(trace.y)
        assert ys == sorted(ys) and ys[-1] == 100.0
    # The connect samples were 10..100 ms: the curve spans them (1% buckets).
    connect = fig.data[0]
    assert 9.9 <= connect.x[0] <= 10.2 and 99 <= connect.x[-1] <= 101.5
    assert fig.layout.xaxis.type == "log"


def test_html_escapes_and_handles_empty() -> None:
    r = synthetic_report()
    r["failures"] = {"<b>x</b>": 1}
    r["timeline"] = []
    r["histograms"] = {}
    html = render_html(r)
    assert "<b>x</b>" not in html and "&lt;b&gt;" in html
    assert "no samples" in html


def test_slo_report_draws_the_capacity_curve(tmp_path: Path) -> None:
    slo = {"siokit": slo_result()}
    write_slo_html(slo, str(tmp_path / "slo.html"))
    html = (tmp_path / "slo.html").read_text()
    assert html.count("Plotly.newPlot(") == 1 and html.count("plotly.js v") == 1
    assert re.search(r"<script[^>]*\bsrc=", html) is None
    assert "siokit: 2,000 clients at p95 fan-out &lt;= 500 ms" in html
    assert "<td>no</td><td>fan-out p95 800.0 ms &gt; 500 ms</td>" in html
    fig = slo_figure(slo)
    p95 = fig.data[0]
    assert list(p95.x) == [1000, 2000, 3000] and list(p95.y) == [120.0, 300.0, 800.0]
    assert list(p95.marker.symbol) == ["circle", "circle", "x"]  # the step that missed it
    assert p95.name == "siokit p95 (capacity 2,000)"
    assert [s.y0 for s in fig.layout.shapes if s.type == "line" and s.y0 == s.y1] == [500.0]
    assert fig.layout.xaxis.title.text == "clients" and fig.layout.yaxis.title.text == "broadcast fan-out (ms)"


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


def test_without_plotly_the_json_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The kit's hosts install siokit without the 'report' extra: the load runs, the HTML is skipped.
    from siokit.load import report

    args = ["--url", "http://127.0.0.1:1", "--connections", "10", "--report", str(tmp_path / "r.json")]
    assert make_plan(build_parser().parse_args(args), nofile=(1024, 20000)).html == str(tmp_path / "r.html")
    monkeypatch.setattr(report, "charts_available", lambda: False)
    assert make_plan(build_parser().parse_args(args), nofile=(1024, 20000)).html is None
    with pytest.raises(UsageError, match="plotly"):
        make_plan(build_parser().parse_args([*args, "--html", str(tmp_path / "x.html")]), nofile=(1024, 20000))


def server_section(started_at: float) -> dict:
    """siokit bench's server-side series (siokit/lab/server_series.py collect()), 2 instances."""

    def rows(values: dict[str, list[float]]) -> dict:
        return {i: {"host": i.split(":")[0], "t": [0.0, 15.0, 30.0], "v": v} for i, v in values.items()}

    return {
        "collected": True,
        "source": "http://127.0.0.1:9090",
        "window": {
            "start": started_at - 2,
            "end": started_at + 30,
            "step_s": 15,
            "rate_s": 60,
            "scrape_interval_s": 15,
        },
        "queries": {
            "sockets": {"expr": "...", "unit": "sockets", "title": "Sockets"},
            "cpu_cores": {"expr": "...", "unit": "CPU (cores)", "title": "CPU"},
            "rss_mib": {"expr": "...", "unit": "resident memory (MiB)", "title": "Resident memory"},
        },
        "series": {
            "sockets": rows({"app1:8001": [0, 150, 150], "app2:8001": [0, 140, 0]}),
            "cpu_cores": rows({"app1:8001": [0.01, 0.2, 0.05], "app2:8001": [0.01, 0.1, 0.02]}),
            "rss_mib": rows({"app1:8001": [140, 152.5, 150], "app2:8001": [141, 150, 149]}),
        },
        "per_instance": {
            "app1:8001": {"sockets_peak": 150.0, "rss_mib_peak": 152.5, "cpu_cores_mean": 0.087, "cpu_cores_peak": 0.2},
            "app2:8001": {"sockets_peak": 140.0, "rss_mib_peak": 150.0, "cpu_cores_mean": 0.043, "cpu_cores_peak": 0.1},
        },
    }


def test_server_series_drawn_on_the_loads_clock() -> None:
    r = synthetic_report()
    figs = server_figures(server_section(r["started_at"]), r)
    assert [f.layout.yaxis.title.text for f in figs] == ["sockets", "CPU (cores)", "resident memory (MiB)"]
    assert all(f.layout.xaxis.title.text == "time since start (s)" for f in figs)
    sockets = figs[0]
    assert [t.name for t in sockets.data] == ["app1 app1:8001", "app2 app2:8001"]
    # the query window started 2 s before the load did: its points move 2 s left
    assert list(sockets.data[0].x) == [-2.0, 13.0, 28.0]
    assert list(sockets.data[1].y) == [0, 140, 0]
    # the hold band: ramp 2 s, hold 5 s (synthetic_report)
    (band,) = sockets.layout.shapes
    assert (band.x0, band.x1) == (2.0, 7.0)


def test_html_with_server_series(tmp_path: Path) -> None:
    r = synthetic_report()
    path = tmp_path / "r.html"
    write_html(r, str(path), server=server_section(r["started_at"]))
    html = path.read_text()
    assert html.count("Plotly.newPlot(") == 6 and html.count("plotly.js v") == 1
    assert "Server side (Prometheus on the monitor host)" in html
    assert "one point every 15 s" in html and "rate over 60 s" in html
    # the per-instance table: peak sockets, peak RSS (MiB), mean and peak CPU (cores)
    assert "<tr><th>app2:8001</th><td>140</td><td>150</td><td>0.043</td><td>0.100</td></tr>" in html


def test_html_says_when_no_server_series() -> None:
    r = synthetic_report()
    html = render_html(
        r, {"collected": False, "note": "the cluster has no monitor host (no running `monitor` container)"}
    )
    assert html.count("Plotly.newPlot(") == 3
    assert "Not collected: the cluster has no monitor host (no running `monitor` container)" in html
    # `siokit load`'s own report (no bench around it): no server section at all
    assert "Server side" not in render_html(r)
