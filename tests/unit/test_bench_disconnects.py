"""The bench puts the servers' disconnects by reason (their /metrics) beside the load generator's
drops by reason, over the same window (issue #9, run C: 680 drops the load generator could not explain)."""

from __future__ import annotations

from typing import Any

from siokit.lab import bench

METRICS = """# HELP siokit_disconnects_total Socket.IO disconnects, by namespace and python-engineio's reason
# TYPE siokit_disconnects_total counter
siokit_disconnects_total{namespace="/",reason="transport close"} 659.0
siokit_disconnects_total{namespace="/",reason="ping timeout"} 21.0
siokit_disconnects_total{namespace="/admin",reason="transport close"} 3.0
# HELP siokit_disconnects_created Socket.IO disconnects
siokit_disconnects_created{namespace="/",reason="transport close"} 1.7e+09
# TYPE siokit_slow_consumer_closes counter
siokit_slow_consumer_closes_total 12.0
siokit_slow_consumer_closes_created 1.7e+09
"""


def test_parse_disconnects_reads_one_namespace() -> None:
    assert bench.parse_disconnects(METRICS) == {"transport close": 659, "ping timeout": 21, bench.SLOW_CONSUMER: 12}
    assert bench.parse_disconnects(METRICS, "/admin") == {"transport close": 3, bench.SLOW_CONSUMER: 12}
    assert bench.parse_disconnects("") == {}


def _report(drops: int, reasons: dict[str, int]) -> dict[str, Any]:
    return {"duration": {"ramp_s": 5.0, "hold_s": 10.0}, "connections": {"drops": drops, "drop_reasons": reasons}}


def test_compare_disconnects_takes_the_hold_window_and_names_a_restart() -> None:
    a, b = "http://a", "http://b"
    samples = [
        {"t": 0.5, "disconnects": {a: {"transport close": 2}, b: {}}},
        {"t": 8.0, "disconnects": {a: {"transport close": 2, "server disconnect": 4}, b: None}},
        {
            "t": 14.0,
            "disconnects": {
                a: {"transport close": 5, "server disconnect": 4, bench.SLOW_CONSUMER: 2},
                b: {"ping timeout": 1},
            },
        },
        # after the hold: the teardown's closes are not drops
        {"t": 20.0, "disconnects": {a: {"transport close": 900}, b: {"transport close": 900}}},
    ]
    got = bench.compare_disconnects(_report(8, {"tcp_reset": 3, "eio_close_packet": 4, "ws_close_1011": 1}), samples)
    assert got["read"] and got["window_s"] == [0.5, 14.0]
    assert got["server_by_reason"] == {"ping timeout": 1, "server disconnect": 4, "transport close": 3}
    assert got["server_total"] == 8  # the slow-consumer closes are inside "transport close"
    assert got["server_slow_consumer_closes"] == 2
    assert got["client"] == {"drops": 8, "drop_reasons": {"tcp_reset": 3, "eio_close_packet": 4, "ws_close_1011": 1}}
    assert got["note"] is None

    restarted = [
        {"t": 1.0, "disconnects": {a: {"transport close": 50}}},
        {"t": 9.0, "disconnects": {a: {"transport close": 2}}},
    ]
    got = bench.compare_disconnects(_report(0, {}), restarted)
    assert got["server_by_reason"] == {"transport close": 2}
    assert "counters reset" in got["note"]
    assert bench.compare_disconnects(_report(0, {}), [])["read"] is False
