"""The drill runner's mechanics on synthetic numbers: measurements from a load report's timeline,
expectations as checks, the report table, and the per-instance /metrics parsing."""

from __future__ import annotations

from typing import Any

import pytest

from siokit.drills import abuse, cluster, fallback, ports, rolling, runner, slow, storm
from siokit.drills.base import Fault
from siokit.drills.clients import Latency, latency_summary, read_frames, ws_frame
from siokit.drills.load import ServerSamples
from siokit.drills.measure import (
    Expect,
    Window,
    back_after,
    broadcast_times,
    dip_and_back,
    evaluate,
    longest_below,
    measure,
)
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


# --- the drills added for #10 (storm, slow consumer, abuse, fallback): their judgments on synthetic runs


def _judge(key: str, extra: dict[str, Any], **base: Any) -> dict[str, bool]:
    """The drill's expectations against a steady synthetic run plus `extra`: {expectation: passed}."""
    m = measure(report([3000] * 60, [0] * 60), Window(T0 + 19.5, T0 + 30, T0 + 50))
    for name, value in base.items():
        setattr(m, name, value)
    m.extra.update(extra)
    return {c.expect.split(" ")[0]: c.passed for c in evaluate(m, DRILLS[key].expectations)}


def test_reload_needs_old_workers_gone_within_the_bound_and_their_clients_back() -> None:
    ok = {
        "new_connects_failed": 0,
        "new_connects_held": 200,
        "judged_before_drain": True,
        "old_workers_left": 0,
        "old_workers_drained_after_s": 41.0,
        "drain_bound_s": 55,
        "back_after_drain_s": 6.0,
    }
    assert all(_judge("reload", ok).values())
    assert not _judge("reload", {**ok, "old_workers_left": 3})["old_workers_left"]
    # no bound configured: nothing drained, nothing to compare with
    unbounded = _judge("reload", {**ok, "old_workers_drained_after_s": None, "drain_bound_s": None})
    assert not unbounded["old_workers_drained_after_s"]
    assert not _judge("reload", {**ok, "old_workers_drained_after_s": 70.0})["old_workers_drained_after_s"]
    assert not _judge("reload", {**ok, "back_after_drain_s": None})["back_after_drain_s"]
    assert not _judge("reload", {**ok, "judged_before_drain": False})["judged_before_drain"]
    assert not _judge("reload", ok, sockets_lowest=2900)["sockets_lowest"]


def test_dip_and_back_measures_from_the_dip_not_from_the_bound() -> None:
    # 3000 held; the old workers close 1000 at t=42 (the bound was t=40), back by t=47
    r = report([3000] * 42 + [2000, 2400, 2800, 2900, 2990] + [3000] * 10, [0] * 57)
    assert dip_and_back(r, T0 + 40, 3000) == (1000, 5.0)
    assert dip_and_back(report([3000] * 60, [0] * 60), T0 + 40, 3000) == (0, 0.0)  # nothing held there
    assert dip_and_back(report([3000] * 42 + [2000] * 18, [0] * 60), T0 + 40, 3000) == (1000, None)


def test_storm_fails_on_an_instance_past_its_planned_share() -> None:
    ok = {"max_instance_sockets": 310, "planned_sockets_per_instance": 400, "max_instance_vs_even_share": 1.03}
    assert all(_judge("storm", ok).values())
    over = _judge("storm", {**ok, "max_instance_sockets": 401})
    assert not over["max_instance_sockets"] and over["recover_s"]
    assert not _judge("storm", ok, recover_s=75.0)["recover_s"]
    assert not _judge("storm", {**ok, "max_instance_vs_even_share": 2.0})["max_instance_vs_even_share"]


def test_busiest_instance_in_the_window() -> None:
    s = ServerSamples(
        [
            (0.0, {"app1:8001": 900, "app2:8001": 100}),  # before the window
            (2.0, {"app1:8001": None, "app2:8001": 350}),
            (4.0, {"app1:8001": 300, "app2:8001": 320}),
        ]
    )
    assert storm.busiest(s, 1.0, 5.0) == ("app2:8001", 350)
    assert storm.busiest(s, 10.0, 12.0) == ("", 0)


def slow_ok() -> dict[str, Any]:
    return {
        "slow_consumer_closes": 1,
        "cut_off_after_s": 12.0,
        "client_saw_close": True,
        "rss_growth_mib": 3.1,
        "other_receivers_ratio": 1.0,
    }


def test_slow_consumer_judgment() -> None:
    assert all(_judge("slow", slow_ok()).values())
    assert not _judge("slow", {**slow_ok(), "slow_consumer_closes": 0, "cut_off_after_s": None})["cut_off_after_s"]
    assert not _judge("slow", {**slow_ok(), "rss_growth_mib": 40.0})["rss_growth_mib"]
    assert not _judge("slow", {**slow_ok(), "client_saw_close": False})["client_saw_close"]
    assert not _judge("slow", slow_ok(), sockets_lowest=2990)["sockets_lowest"]


def test_slow_consumer_metric_with_or_without_total() -> None:
    assert slow.metric({"siokit_slow_consumer_closes_total": 2.0}, slow.CLOSES) == 2.0
    assert slow.metric({"siokit_slow_consumer_closes": 3.0}, slow.CLOSES) == 3.0
    assert slow.metric(None, slow.CLOSES) is None
    assert slow.metric({}, slow.RSS) is None


def test_abuse_bounds() -> None:
    assert abuse.allowed_chats(10.0, 20, 3, 20.0) == 260
    assert abuse.allowed_chats(10.0, 20, 0, 1.0) == 30  # no session opened: still one bucket
    assert abuse.latency_bound(12.0) == 74.0
    assert abuse.latency_bound(None) is None
    ok = {
        "chats_relayed": 250,
        "chats_allowed": 260,
        "flood_cut_off": 3,
        "echo_p95_during_ms": 60.0,
        "echo_p95_bound_ms": 74.0,
        "echo_timeouts_during": 0,
    }
    assert all(_judge("abuse", ok).values())
    assert not _judge("abuse", {**ok, "chats_relayed": 261})["chats_relayed"]
    assert not _judge("abuse", {**ok, "echo_p95_during_ms": 80.0})["echo_p95_during_ms"]
    assert not _judge("abuse", {**ok, "echo_p95_bound_ms": None})["echo_p95_during_ms"]  # unmeasured fails


def test_latency_summary_window() -> None:
    samples: list[tuple[float, float | None]] = [(float(i), 0.010 + i / 1000) for i in range(20)]
    samples.append((5.5, None))
    lat = latency_summary(samples, 0.0, 10.0)
    assert (lat.count, lat.timeouts) == (11, 1)
    assert lat.median_ms == pytest.approx(14.5)
    assert lat.p95_ms == pytest.approx(19.0)
    assert latency_summary(samples, 100.0, 110.0) == Latency(0, 0, None, None)


def test_fallback_judgment_and_cpu_per_message() -> None:
    ok = {
        "clients_on_polling": 4,
        "fallback_clients": 4,
        "acks_failed": 0,
        "fallback_room_ratio": 1.0,
        "fallback_broadcasts_received": 16,
        "fallback_broadcasts_expected": 16,
        "polling_echo_timeouts": 0,
        "lb_config_restored": True,
    }
    assert all(_judge("fallback", ok).values())
    assert not _judge("fallback", {**ok, "clients_on_polling": 3})["clients_on_polling"]  # one upgraded
    assert not _judge("fallback", {**ok, "lb_config_restored": False})["lb_config_restored"]
    # 3.0 CPU-s in 30 s with 0.05 CPU-s/s of background, over 1,500 messages: 1,000 us each
    assert fallback.cpu_per_message_us(3.0, 0.05, 30.0, 1500) == 1000.0
    assert fallback.cpu_per_message_us(1.0, 0.05, 30.0, 100) == 0.0  # never negative
    assert fallback.cpu_per_message_us(1.0, 0.0, 1.0, 0) is None


def test_parse_instance_metrics() -> None:
    out = (
        "#port 8001 200\n"
        'siokit_connected_sockets{namespace="/"} 12.0\n'
        "siokit_slow_consumer_closes_total 1.0\n"
        "process_resident_memory_bytes 1.2e+08\n"
        "#port 8002 000\n"
    )
    got = cluster.parse_instance_metrics(out, [8001, 8002])
    assert got[8002] is None
    assert got[8001] == {
        'siokit_connected_sockets{namespace="/"}': 12.0,
        "siokit_slow_consumer_closes_total": 1.0,
        "process_resident_memory_bytes": 1.2e8,
    }


def test_websocket_frames() -> None:
    # Server frames are unmasked: a short one, a 16-bit length one, then half of a third.
    big = "x" * 300
    stream = b"\x81\x0240" + b"\x81\x7e" + (300).to_bytes(2, "big") + big.encode() + b"\x81\x05ab"
    frames, rest = read_frames(stream)
    assert frames == ["40", big]
    assert rest == b"\x81\x05ab"
    masked = ws_frame("420")
    assert masked[:2] == b"\x81\x83"  # FIN + text, MASK bit + length 3
    key = masked[2:6]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(masked[6:])) == b"420"


def test_markdown_lists_each_drills_own_measurements() -> None:
    m = measure(host_loss_report(), Window(T0 + 19.5, T0 + 19.5, T0 + 50))
    m.extra.update({"max_instance_sockets": 310, "max_instance": "app1:8003"})
    table = markdown(
        [{"drill": 6, "key": "storm", "title": "storm", "measured": m.as_dict(), "passed": True, "checks": []}]
    )
    assert '- drill 6 (storm): max_instance_sockets 310, max_instance "app1:8003"' in table


def test_port_holders_leave_the_stated_ports_free() -> None:
    assert ports.holder_plan(1024, 65535, 200, 15000) == [
        (1024, 16024),
        (16024, 31024),
        (31024, 46024),
        (46024, 61024),
        (61024, 65336),
    ]
    assert sum(b - a for a, b in ports.holder_plan(32768, 60999, 200, 15000)) == 28032
    assert ports.holder_plan(40000, 40099, 200, 15000) == []


def test_ports_judgment() -> None:
    ok = {
        "one_ip_addr_unavailable": 400,
        "diagnosis_names_the_ip": True,
        "spread_failures": 0,
        "spread_connected": ports.CLIENTS,
        "plan_clients_per_source_ip": 1000,
        "plan_usable_ports_per_source_ip": 28000,
        "holders_left": 0,
    }
    assert all(_judge("ports", ok).values())
    assert not _judge("ports", {**ok, "diagnosis_names_the_ip": False})["diagnosis_names_the_ip"]
    assert not _judge("ports", {**ok, "one_ip_addr_unavailable": 0})["one_ip_addr_unavailable"]
    assert not _judge("ports", {**ok, "plan_clients_per_source_ip": 30000})["plan_clients_per_source_ip"]


def test_during_fault_counts_the_loss_and_the_return() -> None:
    # broadcasts at t=5,10,...; the fault from t=19.5 to 31: seq 4 (t=20) and 5 (t=25) half delivered, seq 6 at t=30
    rep = report([3000] * 60, [0] * 60, per_broadcast={3: 3000, 4: 1500, 5: 1400, 6: 3000, 7: 3000})
    log = ProbeLog(receivers=2)
    log.sent = {1: T0 + 20.0, 2: T0 + 28.0, 3: T0 + 31.5, 4: T0 + 33.0, 5: T0 + 34.0}
    log.received.update({1: 1, 2: 0, 3: 1, 4: 2, 5: 2})
    got = runner._during_fault(rep, log, Fault(T0 + 19.5, T0 + 31.0, T0 + 50.0))
    assert got["fault_broadcasts_sent"] == 3
    assert got["fault_broadcast_deliveries"] == 1500 + 1400 + 3000
    assert got["fault_broadcast_deliveries_lost"] == 3 * 3000 - 5900
    assert (got["fault_room_sent"], got["fault_room_deliveries"], got["fault_room_deliveries_lost"]) == (2, 1, 3)
    assert got["room_full_again_after_s"] == 2.0  # seq 4, the first after the end to reach both
    assert log.first_full_after(T0 + 40) is None


# --- drill 4, the rolling upgrade


def rolling_report() -> dict[str, Any]:
    # 3000 held; two instances restart: 300 drop at t=20 (back by t=24), 300 at t=30 (back by t=40).
    connected = [3000] * 20 + [2700, 2800, 2900, 2990, 3000] + [3000] * 5
    connected += [2700, 2750, 2800, 2850, 2900, 2950, 2980, 2990, 2995, 2999] + [3000] * 20
    return report(connected, [0] * len(connected))


def test_rolling_dips_and_the_return_after_the_last_restart() -> None:
    r = rolling_report()
    w = Window(T0 + 19.5, T0 + 38, T0 + 60)
    assert longest_below(r, w, 3000) == 10.0  # t=30..40, the longer of the two dips
    assert back_after(r, T0 + 38, 3000) == 2.0  # the sample at t=40
    assert back_after(r, T0 + 45, 3000) == 0.0
    assert back_after(report([3000] * 10 + [2000] * 10, [0] * 20), T0 + 12, 3000) is None
    # a dip still open when the window ends counts up to its last sample
    assert longest_below(report([3000] * 10 + [2000] * 10, [0] * 20), Window(T0 + 9.5, T0 + 9.5, T0 + 19), 3000) == 9.0


def test_rolling_release_and_restart_counts() -> None:
    before = {"app1:8001": {"release": "", "main_pid": 10}, "app1:8002": {"release": "", "main_pid": 11}}
    after = {"app1:8001": {"release": "r2", "main_pid": 20}, "app1:8002": None}
    assert rolling.on_release(after, "r2") == 1
    assert rolling.on_release(before, "") == 2
    assert rolling.restarted(before, after) == 1  # an instance that does not answer is not counted
    assert rolling.restarted(before, before) == 0
    s = ServerSamples(
        [
            (0.0, {"app1:8001": 300, "app1:8002": 300}),
            (2.0, {"app1:8001": None, "app1:8002": 600}),
            (4.0, {"app1:8001": None, "app1:8002": None}),
        ]
    )
    assert rolling.min_serving(s, 1.0, 3.0) == 1
    assert rolling.min_serving(s, 1.0, 5.0) == 0
    assert rolling.min_serving(s, 10.0, 20.0) is None


def test_parse_instance_health() -> None:
    out = '#port 8001 1234\n{"status": "ok", "release": "r2"}\n#port 8002 0\n\n#port 8003 99\n<html>\n'
    assert cluster.parse_instance_health(out, [8001, 8002, 8003, 8004]) == {
        8001: {"status": "ok", "release": "r2", "main_pid": 1234},
        8002: None,
        8003: None,
        8004: None,
    }


def test_rolling_judgment() -> None:
    ok = {
        "instances": 10,
        "instances_on_new_release": 10,
        "instances_restarted_by_upgrade": 10,
        "instances_back_on_previous": 10,
        "min_instances_serving": 8,
        "longest_below_before_s": 12.0,
        "back_after_fault_end_s": 3.0,
    }
    assert all(_judge("rolling", ok).values())
    assert not _judge("rolling", {**ok, "min_instances_serving": 0})["min_instances_serving"]
    assert not _judge("rolling", {**ok, "instances_on_new_release": 9})["instances_on_new_release"]
    assert not _judge("rolling", {**ok, "instances_restarted_by_upgrade": 0})["instances_restarted_by_upgrade"]
    assert not _judge("rolling", {**ok, "back_after_fault_end_s": None})["back_after_fault_end_s"]
    assert not _judge("rolling", {**ok, "longest_below_before_s": 45.0})["longest_below_before_s"]
    assert not _judge("rolling", ok, handshake_failures=3)["handshake_failures"]


def test_ramp_check_reads_the_load_generators_progress_first() -> None:
    from siokit.drills import load as drill_load

    progress = (
        "[ramp    1.0s] held 120/3000  attempts 130  failed 0  connect p50 12ms  reconnects 0  echo 0  bcast rx 0\n"
        "[ramp    2.0s] held 2999/3000  attempts 3000  failed 0  connect p50 12ms  reconnects 0  echo 0  bcast rx 0\n"
        "[hold    3.0s] held 3000/3000  attempts 3000  failed 0  connect p50 12ms  reconnects 0  echo 0  bcast rx 0\n"
    )
    assert drill_load.last_held(progress) == 3000
    assert drill_load.last_held(progress.splitlines()[0]) == 120
    assert drill_load.last_held("siokit load: starting\n") is None

    class Busy:  # instances too busy to answer /metrics: every one None
        samples = ServerSamples()

        def sample(self) -> dict[str, int | None]:
            return {"app1:8001": None, "app2:8001": None}

    class Held:
        def held(self) -> int | None:
            return 3000

    assert drill_load.wait_for_sockets(Busy(), 3000, 5, Held()) == 3000  # type: ignore[arg-type]
    assert drill_load.wait_for_sockets(Busy(), 3000, 0.1) == 0  # type: ignore[arg-type]
