"""bench/compare.py: how a `siokit load` report becomes a target's result (complete, timed-out and
short ramps), on reports built by the load generator's own build_report."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from siokit.load.options import build_parser, make_plan
from siokit.load.runner import build_report
from siokit.load.stats import WorkerStats

_spec = importlib.util.spec_from_file_location("bench_compare", Path(__file__).parents[2] / "bench" / "compare.py")
assert _spec and _spec.loader
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def load_report(
    *,
    target: int,
    established: int,
    connected: int,
    peak: int,
    ramp_s: float,
    timeline: list[dict[str, Any]],
    failures: dict[str, int] | None = None,
    ramp_timeout: float | None = None,
    interrupted: bool = False,
) -> dict[str, Any]:
    argv = ["--url", "http://127.0.0.1:1", "--connections", str(target)]
    if ramp_timeout:
        argv += ["--ramp-timeout", str(ramp_timeout)]
    plan = make_plan(build_parser().parse_args(argv), nofile=(1024, 20000))
    st = WorkerStats()
    st.established = established
    st.connected = connected
    st.attempts = established + sum((failures or {}).values())
    st.rss_kb = 10_000
    for reason, n in (failures or {}).items():
        st.failures[reason] += n
    for _ in range(established):
        st.connect.add(0.05)
    return build_report(plan, st, timeline, {}, interrupted, 0.0, ramp_s, 5.0, peak)


def sample(t: float, connected: int, phase: str) -> dict[str, Any]:
    return {"t": t, "connected": connected, "attempts": connected, "failures": 0, "phase": phase}


def test_complete_ramp_keeps_the_generators_rate_and_divides_rss_by_held() -> None:
    r = load_report(
        target=300, established=300, connected=300, peak=300, ramp_s=2.0, timeline=[sample(1.0, 150, "ramp")]
    )
    res = compare.summarize(r, base_kb=50_000, peak_kb=80_000, measured=True, ramp_timeout=20.0)
    assert res["ramp_complete"] is True and res["ramp_note"] is None
    assert res["connect_rate_per_s"] == 150.0  # 300 established / 2 s
    assert res["server_kb_per_socket"] == 100.0  # 30,000 KB / 300
    assert compare.table_row(res)["held/requested"] == "300/300"
    assert "PARTIAL" not in compare.table_row(res)["ramp"]


def test_timed_out_ramp_is_marked_and_rated_over_the_ramp_only() -> None:
    # 50 held when the 20 s deadline hit; the workers went on connecting during the hold (80 peak)
    timeline = [sample(float(t), min(50, 10 * t), "ramp") for t in range(1, 20)]
    timeline += [sample(20.0, 60, "hold"), sample(21.0, 80, "hold")]
    r = load_report(
        target=300,
        established=80,
        connected=80,
        peak=80,
        ramp_s=20.0,
        timeline=timeline,
        failures={"timeout": 120},
        ramp_timeout=20,
    )
    assert r["connections"]["connect_rate_per_s"] == 4.0  # the generator's 80 / 20 s, hold included
    res = compare.summarize(r, base_kb=50_000, peak_kb=58_000, measured=True, ramp_timeout=20.0)
    assert res["ramp_complete"] is False
    assert "timeout after 20 s" in res["ramp_note"] and "50/300 held at the end of the ramp" in res["ramp_note"]
    assert "peak 80/300" in res["ramp_note"] and "120 failed handshakes" in res["ramp_note"]
    assert res["connect_rate_per_s"] == round(50 / 19, 1)  # last ramp sample: 50 held at t=19
    assert res["held"] == 80 and res["target"] == 300
    assert res["server_kb_per_socket"] == 100.0  # 8,000 KB / 80 held, not / 300 requested
    assert res["handshake_failures"] == 120
    row = compare.table_row(res)
    assert row["held/requested"] == "80/300" and row["ramp"].endswith("PARTIAL")


def test_same_report_without_a_timeout_is_a_short_ramp_not_a_timeout() -> None:
    r = load_report(
        target=300,
        established=200,
        connected=200,
        peak=200,
        ramp_s=20.0,
        timeline=[sample(1.0, 200, "ramp")],
        failures={"refused": 100, "protocol_after_connect": 3},
    )
    complete, note, rate = compare.ramp_outcome(r, None)
    assert complete is False
    assert note == "ramp ended at 200/300 held (protocol_after_connect=3, refused=100)"
    assert rate == 10.0
    assert compare.handshake_failures(r["failures"]) == 100


def test_interrupted_ramp_and_unmeasured_server() -> None:
    r = load_report(target=300, established=10, connected=10, peak=10, ramp_s=3.0, timeline=[], interrupted=True)
    res = compare.summarize(r, base_kb=0, peak_kb=0, measured=False, ramp_timeout=None)
    assert res["ramp_complete"] is False and res["ramp_note"].startswith("interrupted after 3 s")
    assert res["server_kb_per_socket"] is None


def test_siokit_vars_are_yaml_scalars_and_a_pair_without_a_name_is_refused() -> None:
    assert compare._template_vars(["app_fanout_core_wait_ms=0", "app_fanout_pacing=off", "x=a=b"]) == {
        "app_fanout_core_wait_ms": 0,
        "app_fanout_pacing": False,
        "x": "a=b",
    }
    for bad in ("app_fanout_core_wait_ms", "=3"):
        with pytest.raises(ValueError, match="--siokit-var takes NAME=VALUE"):
            compare._template_vars([bad])


def test_siokit_vars_without_the_slo_mode_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        compare.main(["--siokit-var", "app_fanout_pacing=false", "--targets", "node"])
    assert exc.value.code == 2
    assert "--siokit-var goes with --slo-p95-ms" in capsys.readouterr().err


def _held(started_at: float) -> dict[str, Any]:
    """300 clients held; the ramp took 3 s and the hold 5 s, so the hold ends at started_at + 8."""
    r = load_report(target=300, established=300, connected=300, peak=300, ramp_s=3.0, timeline=[])
    r["started_at"] = started_at
    return r


def test_the_end_count_is_the_last_reading_that_returned_inside_the_hold() -> None:
    r = _held(1000.0)
    assert r["connections"]["held_at_end"] == 300
    counts: list[tuple[float, int | None]] = [
        (1004.0, 300),
        (1007.9, 300),
        (1007.95, None),  # one instance did not answer
        (1008.4, 120),  # began in the hold, returned during the load's closes
        (1009.0, 0),
    ]
    got = compare.counts_at_hold_end(r, counts)
    assert got == {
        "server_count_end": 300,
        "server_count_end_before_hold_end_s": 0.1,
        "client_count_end": 300,
        "server_count_match": True,
    }
    short = compare.counts_at_hold_end(r, [(1006.0, 290), (1008.5, 300)])
    assert short["server_count_end"] == 290 and short["server_count_match"] is False
    unread = compare.counts_at_hold_end(r, [(1008.5, 300), (1007.0, None)])
    assert unread["server_count_end"] is None and unread["server_count_match"] is None


def test_cpu_per_message_reads_the_cpu_series_on_the_loads_wall_clock() -> None:
    r = _held(1000.0)
    r["timeline"] = [
        {"t": 2.0, "phase": "ramp", "received": 0},
        {"t": 4.0, "phase": "hold", "received": 1_000},
        {"t": 8.0, "phase": "hold", "received": 11_000},
    ]
    # cumulative CPU-seconds: 0.1 s at 1004 and 0.4 s at 1008; the samples near 0 and 9 s are off-window
    cpu = [(1000.0, 0.0), (1004.1, 0.1), (1007.9, 0.4), (1009.0, 0.9)]
    assert compare.cpu_per_message(r, cpu) == {"server_cpu_s": 0.3, "received": 10_000, "us_per_message": 30.0}
