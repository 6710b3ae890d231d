"""`siokit bench` mechanics on small numbers: the real stack, the real load generator, real /proc readings.

No timing is asserted: speed and capacity live in BENCHMARKS.md, produced by `make bench`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siokit.lab.bench import main as bench_main

from .conftest import free_base_port

pytestmark = pytest.mark.integration


def test_small_loopback_bench_measures_every_component(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = bench_main(
        [
            "--target",
            "loopback",
            "--connections",
            "300",
            "--port",
            str(free_base_port()),
            "--state-dir",
            str(tmp_path / "stack"),
            "--out",
            str(out),
            "--hold",
            "8",
            "--broadcast-every",
            "3",
            "--echo-every",
            "3",
        ]
    )
    assert rc == 0
    bench = json.loads((out / "bench.json").read_text())
    load, measured = bench["load"], bench["measured"]
    assert load["connections"]["peak_held"] == 300
    assert load["connections"]["transports"] == {"websocket": 300}
    assert load["failures"] == {}
    assert load["broadcast"]["per_broadcast"], "no broadcast was measured"
    assert all(b["clients"] == 300 for b in load["broadcast"]["per_broadcast"])
    assert load["latency_ms"]["broadcast_fanout"]["count"] >= 300
    for component in ("nginx", "uwsgi", "redis", "loadgen"):
        assert component in measured["components"], measured["components"].keys()
    # Holding sockets costs memory in the proxy and the app server: the readings must see it.
    assert measured["components"]["uwsgi"]["kb_per_socket"] > 0
    assert measured["components"]["nginx"]["kb_per_socket"] > 0
    assert measured["held_sockets"] == 300
    # The servers' disconnects by reason beside the load generator's drops by reason: a quiet run
    # has none on either side (the teardown's closes come after the hold and are left out).
    d = measured["disconnects"]
    assert d["read"] is True and d["note"] is None, d
    assert d["client"] == {"drops": 0, "drop_reasons": {}}
    assert d["server_total"] == 0 and d["server_slow_consumer_closes"] == 0, d
    # The ramp's CPU per connect, net of the idle rate read before the load started.
    c = measured["connect_cpu"]
    assert c["measured"] is True and c["idle_subtracted"] is True and c["connects"] == 300, c
    # The load generator is in it: a connect costs a client far more than 50 us.
    assert c["us_per_connect"]["uwsgi user"] > 0 and c["us_per_connect"]["loadgen user"] > 50, c
    # The broadcasts above needed the admin token: it went through the environment, not the command line.
    assert "siokit.load" in bench["command"] and "admin-token" not in bench["command"]
    # The HTML report beside bench.json (drawn by siokit bench from the JSON, on the cluster too).
    html = (out / "load-report.html").read_text()
    assert html.count("Plotly.newPlot(") == 3
    # No monitor host on loopback: no Prometheus series, and the report says why.
    assert measured["server_series"] == {
        "collected": False,
        "note": "the loopback stack has no monitor host (no Prometheus scrapes it)",
    }
    assert "Not collected: the loopback stack has no monitor host" in html


def test_memory_guard_stops_the_load_cleanly(tmp_path: Path) -> None:
    """A floor above all the memory there is trips at once: the load stops, the report still comes."""
    out = tmp_path / "out"
    rc = bench_main(
        [
            "--target",
            "loopback",
            "--connections",
            "200",
            "--port",
            str(free_base_port()),
            "--state-dir",
            str(tmp_path / "stack"),
            "--out",
            str(out),
            "--hold",
            "30",
            "--min-available-gib",
            "100000",
        ]
    )
    assert rc == 0
    bench = json.loads((out / "bench.json").read_text())
    guard = bench["measured"]["memory_guard"]
    assert guard["stopped_at_mem_available_gib"] < 100000
    assert bench["load"]["duration"]["hold_s"] < 30  # interrupted, not held to the end
