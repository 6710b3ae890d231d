"""siokit/lab/server_series.py: the queries `siokit bench` sends to Prometheus and what it makes of
the answers, on answers shaped as Prometheus 2.42's HTTP API gives them (the cluster's Debian package).

Against the cluster's real Prometheus: tests/infra/test_88_bench_series.py.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from siokit.lab import server_series as ss
from siokit.lab.bench import Target, cluster_prometheus, server_side
from siokit.lab.bench import main as bench_main

START = 1_796_300_000.0


def test_durations() -> None:
    assert ss.duration_s("15s") == 15
    assert ss.duration_s("1m30s") == 90
    assert ss.duration_s("500ms") == 0.5
    assert ss.duration_s("1h") == 3600
    for bad in ("15", "s", "1x", "15s ", ""):
        with pytest.raises(ValueError):
            ss.duration_s(bad)


@pytest.mark.parametrize(
    ("seconds", "scrape", "step", "rate"),
    [
        (60, 15, 15, 60),  # a short run: one point per scrape, rate over 4 scrapes
        (300, 15, 15, 60),
        (3600, 15, 30, 60),  # 120 points: step 30, rate still 4 scrapes
        (7200, 15, 60, 75),  # step + one scrape once that passes 4 scrapes
        (100, 5, 5, 20),
        (100, 2.5, 3, 10),  # steps are whole seconds
    ],
)
def test_window_is_sized_to_the_run(seconds: float, scrape: float, step: int, rate: int) -> None:
    w = ss.window_for(START, START + seconds, scrape)
    assert (w.step_s, w.rate_s) == (step, rate)
    assert (w.end - w.start) / w.step_s <= ss.MAX_POINTS
    assert w.rate_s >= 4 * scrape and w.rate_s >= w.step_s


def test_window_refuses_an_empty_run() -> None:
    with pytest.raises(ValueError):
        ss.window_for(START, START, 15)


def matrix(rows: Mapping[str, list[tuple[float, str]]]) -> list[dict[str, Any]]:
    return [
        {"metric": {"host": inst.split(":")[0], "instance": inst}, "values": [[t, v] for t, v in values]}
        for inst, values in rows.items()
    ]


def test_to_series_relative_time_scale_and_dropped_nan() -> None:
    result = matrix(
        {
            "app2:8001": [(START + 15, "3145728"), (START + 30, "NaN"), (START + 45, "+Inf")],
            "app1:8001": [(START, "1048576"), (START + 15, "2097152")],
        }
    )
    out = ss.to_series(result, START, 1 / ss.MIB)
    assert list(out) == ["app1:8001", "app2:8001"]  # sorted
    assert out["app1:8001"] == {"host": "app1", "t": [0.0, 15.0], "v": [1.0, 2.0]}
    assert out["app2:8001"] == {"host": "app2", "t": [15.0], "v": [3.0]}


def test_per_instance_peaks_and_means() -> None:
    series = {
        "sockets": {"a:1": {"host": "a", "t": [0, 15], "v": [10.0, 150.0]}},
        "rss_mib": {
            "a:1": {"host": "a", "t": [0, 15], "v": [140.0, 152.5]},
            "b:1": {"host": "b", "t": [0], "v": [100.0]},
        },
        "cpu_cores": {"a:1": {"host": "a", "t": [0, 15], "v": [0.1, 0.3]}},
    }
    stats = ss.per_instance(series)
    assert stats["a:1"] == {
        "host": "a",
        "sockets_peak": 150.0,
        "rss_mib_peak": 152.5,
        "cpu_cores_mean": 0.2,
        "cpu_cores_peak": 0.3,
    }
    # b:1 had no socket or CPU series in the window: None, not 0
    assert stats["b:1"] == {
        "host": "b",
        "sockets_peak": None,
        "rss_mib_peak": 100.0,
        "cpu_cores_mean": None,
        "cpu_cores_peak": None,
    }


def targets_answer(scraped_at: str = "2026-12-03T12:53:40.90778569Z") -> dict[str, Any]:
    def target(job: str, instance: str, health: str = "up") -> dict[str, Any]:
        return {
            "labels": {"host": instance.split(":")[0], "instance": instance, "job": job},
            "scrapeUrl": f"http://{instance}/metrics",
            "health": health,
            "lastScrape": scraped_at,
            "scrapeInterval": "15s",
        }

    return {
        "activeTargets": [
            target("node", "app1:9100"),
            target("siokit", "app1:8001"),
            target("siokit", "app2:8001", "down"),
        ],
        "droppedTargets": [],
    }


class FakePrometheus:
    """Answers as Prometheus would, and keeps what was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, str]]] = []

    def __call__(self, path: str, params: Mapping[str, str]) -> Any:
        self.asked.append((path, dict(params)))
        if path == "/api/v1/targets":
            return targets_answer()
        assert path == "/api/v1/query_range"
        start, end, step = float(params["start"]), float(params["end"]), int(params["step"])
        stamps = [start + i * step for i in range(int((end - start) // step) + 1)]
        value = "1.5e8" if "resident" in params["query"] else "42"
        return {"resultType": "matrix", "result": matrix({"app1:8001": [(t, value) for t in stamps]})}


def test_collect_asks_one_range_per_series_over_the_run() -> None:
    prom = FakePrometheus()
    got = ss.collect(prom, START, START + 300, source="fake", settle=False)
    ranges = [p for path, p in prom.asked if path == "/api/v1/query_range"]
    assert [p["query"] for p in ranges] == [
        'sum by (host, instance) (siokit_connected_sockets{job="siokit"})',
        'sum by (host, instance) (rate(process_cpu_seconds_total{job="siokit"}[60s]))',
        'sum by (host, instance) (process_resident_memory_bytes{job="siokit"})',
    ]
    assert {(p["start"], p["end"], p["step"]) for p in ranges} == {(f"{START:.3f}", f"{START + 300:.3f}", "15")}
    assert got["collected"] is True
    assert got["window"]["step_s"] == 15 and got["window"]["rate_s"] == 60
    # only the app's job, both healths kept (a down instance is part of the story)
    assert got["targets"] == [
        {"instance": "app1:8001", "host": "app1", "health": "up"},
        {"instance": "app2:8001", "host": "app2", "health": "down"},
    ]
    assert got["series"]["rss_mib"]["app1:8001"]["v"][0] == pytest.approx(1.5e8 / ss.MIB, abs=1e-3)
    assert got["series"]["sockets"]["app1:8001"]["t"][:2] == [0.0, 15.0]
    assert got["per_instance"]["app1:8001"]["sockets_peak"] == 42
    assert json.loads(json.dumps(got)) == got  # goes into bench.json as is


def test_collect_without_app_targets_is_an_error() -> None:
    def get(path: str, params: Mapping[str, str]) -> Any:
        return {"activeTargets": [t for t in targets_answer()["activeTargets"] if t["labels"]["job"] != "siokit"]}

    with pytest.raises(ss.PrometheusError, match="no active target of job 'siokit'"):
        ss.collect(get, START, START + 60, source="fake", settle=False)


def test_waits_for_the_scrapes_after_the_end_then_gives_up() -> None:
    prom = FakePrometheus()
    scraped = ss._scraped_at(targets_answer()["activeTargets"][1])
    # scraped after `at`: no wait, one look
    ss.wait_for_scrapes_after(prom, scraped - 1, timeout=5, poll=0.01)
    assert len(prom.asked) == 1
    # never scraped after `at`: looks until the timeout, then returns what it has
    prom.asked.clear()
    ss.wait_for_scrapes_after(prom, scraped + 1, timeout=0.2, poll=0.01)
    assert len(prom.asked) > 2


@pytest.fixture
def http_prometheus() -> Iterator[str]:
    """A real HTTP server answering as Prometheus does: success, and a 400 with its error body."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body: dict[str, Any]
            if "bad" in self.path:
                code, body = 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
            else:
                code, body = 200, {"status": "success", "data": {"path": self.path}}
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_http_getter(http_prometheus: str) -> None:
    get = ss.http_getter(http_prometheus)
    assert get("/api/v1/query", {"query": 'up{job="x"}'}) == {"path": "/api/v1/query?query=up%7Bjob%3D%22x%22%7D"}
    with pytest.raises(ss.PrometheusError, match="bad_data: parse error"):
        get("/api/v1/bad", {})


def test_http_getter_unreachable() -> None:
    with pytest.raises(ss.PrometheusError, match=re.escape("127.0.0.1:9")):
        ss.http_getter("http://127.0.0.1:9", timeout=2)("/api/v1/targets", {})


def test_bench_without_a_monitor_host_says_so() -> None:
    target = Target("t", "http://x", [], "", [], "", no_prometheus="the loopback stack has no monitor host")
    assert server_side(target, START, START + 10) == {
        "collected": False,
        "note": "the loopback stack has no monitor host",
    }


def test_bench_with_a_failing_prometheus_keeps_the_run() -> None:
    target = Target("t", "http://x", [], "", [], "", prometheus_url="http://127.0.0.1:9")
    got = server_side(target, START, START + 10)
    assert got["collected"] is False and "http://127.0.0.1:9 failed" in got["note"]


def test_bench_prometheus_option() -> None:
    # no Docker needed: the option wins over looking for the cluster's monitor container
    assert cluster_prometheus("none") == (None, "--prometheus none")
    assert cluster_prometheus("http://10.0.0.9:9090") == ("http://10.0.0.9:9090", "")
    with pytest.raises(SystemExit) as exc:
        bench_main(["--target", "loopback", "--prometheus", "http://10.0.0.9:9090"])
    assert exc.value.code == 2
