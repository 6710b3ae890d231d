"""The drill runner's mechanics on synthetic numbers: measurements from a load report's timeline,
expectations as checks, the report table, and the per-instance /metrics parsing."""

from __future__ import annotations

from typing import Any

import pytest

from siokit.drills import cluster
from siokit.drills.load import ServerSamples
from siokit.drills.measure import Expect, Window, broadcast_times, evaluate, measure
from siokit.drills.probe import ProbeLog
from siokit.drills.runner import DRILLS, NOT_DONE, _others_dropped, markdown

T0 = 1_000_000.0


def report(
    connected: list[int],
    failures: list[int],
    *,
    ramp_s: float = 5.0,
    every: float | None = 5.0,
    per_broadcast: dict[int, int] | None = None,
) -> dict[str, Any]:
    return {
        "started_at": T0,
        "duration": {"ramp_s": ramp_s, "hold_s": 60},
        "config": {"broadcast_every": every, "target_connections": 3000},
        "timeline": [
            {"t": float(i), "connected": c, "failures": f}
            for i, (c, f) in enumerate(zip(connected, failures, strict=True))
        ],
        "broadcast": {"per_broadcast": [{"seq": s, "clients": n} for s, n in (per_broadcast or {}).items()]},
    }


def host_loss_report() -> dict[str, Any]:
    # 3000 held; at t=20 half drop; back by t=27; two handshakes fail during the fault.
    connected = [3000] * 20 + [1500, 1600, 2000, 2500, 2900, 2990, 2999, 3000] + [3000] * 30
    failures = [0] * 21 + [1] * 5 + [2] * 32
    # broadcasts: seq 1 at t=5, one every 5 s: seq 4 at t=20, seq 5 at t=25 (in the fault)
    bcasts = {1: 3000, 2: 3000, 3: 3000, 4: 1500, 5: 2995, 6: 3000}
    return report(connected, failures, per_broadcast=bcasts)


def test_measure_host_loss_numbers() -> None:
    m = measure(host_loss_report(), Window(T0 + 19.5, T0 + 19.5, T0 + 50))
    assert (m.sockets_before, m.sockets_lowest, m.sockets_after) == (3000, 1500, 3000)
    assert m.recover_s == pytest.approx(7.5)
    assert m.handshake_failures == 2
    # seq 4 (t=20), 5 (t=25), 6 (t=30) fall in the window; 7+ were never sent
    assert m.broadcasts_sent == 3
    assert m.broadcast_deliveries == 1500 + 2995 + 3000
    assert m.broadcast_deliveries_expected == 3 * 3000


def test_recover_is_none_when_the_sockets_never_come_back() -> None:
    connected = [3000] * 10 + [1500] * 20
    m = measure(report(connected, [0] * 30), Window(T0 + 9.5, T0 + 9.5, T0 + 29))
    assert m.recover_s is None
    checks = evaluate(m, [Expect("recover_s", "<=", 30)])
    assert not checks[0].passed  # a missing number fails, it does not pass by default


def test_no_dip_recovers_at_once() -> None:
    m = measure(report([3000] * 30, [0] * 30), Window(T0 + 9.5, T0 + 12, T0 + 29))
    assert m.recover_s == 0.0 and m.sockets_lowest == 3000


def test_window_outside_the_timeline_is_an_error() -> None:
    with pytest.raises(ValueError, match="does not cover"):
        measure(report([3000] * 10, [0] * 10), Window(T0 + 50, T0 + 50, T0 + 60))


def test_broadcast_times_follow_the_admin_schedule() -> None:
    times = broadcast_times(report([1] * 3, [0] * 3, ramp_s=2.0, every=5.0, per_broadcast={1: 1, 3: 1}))
    assert times == {1: T0 + 2.0, 3: T0 + 12.0}
    assert broadcast_times(report([1], [0], every=None)) == {}


def test_evaluate_against_a_number_and_another_metric() -> None:
    m = measure(host_loss_report(), Window(T0 + 19.5, T0 + 19.5, T0 + 50))
    m.extra["new_clients_on_returned_host"] = 0
    checks = evaluate(
        m,
        [
            Expect("recover_s", "<=", 30),
            Expect("handshake_failures", "==", 0),
            Expect("sockets_after", ">=", "sockets_before"),
            Expect("new_clients_on_returned_host", ">", 0),
        ],
    )
    assert [c.passed for c in checks] == [True, False, True, False]
    assert checks[1].actual == 2
    assert "(= 3000)" in checks[2].expect


def test_evaluate_unknown_metric_is_an_error() -> None:
    m = measure(host_loss_report(), Window(T0 + 19.5, T0 + 19.5, T0 + 50))
    with pytest.raises(KeyError):
        evaluate(m, [Expect("nonsense", "==", 0)])


def test_every_drill_states_expectations_that_name_measured_values() -> None:
    m = measure(host_loss_report(), Window(T0 + 19.5, T0 + 19.5, T0 + 50))
    for drill in DRILLS.values():
        assert drill.expectations, drill.key
        for e in drill.expectations:
            m.extra.setdefault(e.metric, 0)
            if isinstance(e.value, str):
                m.extra.setdefault(e.value, 0)
        evaluate(m, drill.expectations)  # every name resolves
    assert not set(NOT_DONE) & {d.number for d in DRILLS.values()}


def test_probe_log_window() -> None:
    log = ProbeLog(receivers=3)
    log.sent = {1: 10.0, 2: 11.0, 3: 12.0}
    log.received.update({1: 3, 2: 1, 3: 3})
    assert log.in_window(10.5, 12.0) == (2, 6, 4)


def test_others_dropped_ignores_the_victim() -> None:
    s = ServerSamples(
        [
            (0.0, {"app1:8001": 500, "app1:8002": 500, "app2:8001": 500}),
            (2.0, {"app1:8001": None, "app1:8002": 490, "app2:8001": 700}),
            (4.0, {"app1:8001": 100, "app1:8002": 600, "app2:8001": 800}),
        ]
    )
    assert _others_dropped(s, "app1:8001", 1.0, 5.0) == 10
    s.rows.append((6.0, {"app1:8001": 500, "app1:8002": None, "app2:8001": None}))
    assert _others_dropped(s, "app1:8001", 1.0, 7.0) == 10  # no answer is not a drop
    assert s.host_total(s.rows[2][1], "app1") == 700


def test_parse_instance_sockets() -> None:
    out = (
        "#port 8001 200\n"
        'siokit_connected_sockets{namespace="/"} 1503.0\n'
        'siokit_connected_sockets{namespace="/admin"} 1.0\n'
        "#port 8002 000\n"
        "#port 8003 200\n"
    )
    assert cluster.parse_instance_sockets(out, [8001, 8002, 8003, 8004]) == {
        8001: 1503,
        8002: None,
        8003: 0,
        8004: None,
    }


def test_markdown_lists_results_and_the_drills_not_done() -> None:
    m = measure(host_loss_report(), Window(T0 + 19.5, T0 + 19.5, T0 + 50))
    checks = evaluate(m, [Expect("handshake_failures", "==", 0)])
    table = markdown(
        [
            {
                "drill": 5,
                "title": "host lost",
                "measured": m.as_dict(),
                "passed": False,
                "checks": [{"expect": c.expect, "actual": c.actual, "passed": c.passed} for c in checks],
            }
        ]
    )
    assert "| 5 | host lost | 3,000 / 1,500 / 3,000 | 7.5 s | 2 |" in table
    assert "FAIL: handshake_failures == 0 (got 2)" in table
    for n in NOT_DONE:
        assert f"| {n} |" in table
    unmeasured = markdown([{"drill": 2, "title": "redis", "error": "ramped to 1512 of 3000", "passed": False}])
    assert "| 2 | redis | | | | | | NOT MEASURED: ramped to 1512 of 3000 |" in unmeasured
