"""The planner's CPU figures are the runs its comments cite, recomputed from their result files.

A figure changed without a run to show for it, or a result file replaced under it, fails here.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from siokit import planner

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def _result(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    return data


def _per_delivery(name: str, key: str) -> float:
    """Mean over a run's broadcasts of one component's microseconds per delivery."""
    rows = _result(name)["measured"]["broadcast_cpu"]["broadcasts"]
    return statistics.mean(row["us_per_delivery"][key] for row in rows)


def _quiet(name: str, *keys: str) -> tuple[float, float]:
    """(cores of keys in the quiet hold, Engine.IO pings per second) of a run."""
    data = _result(name)
    pings = data["load"]["pings"]
    quiet = data["measured"]["broadcast_cpu"]["quiet_cores"]
    return sum(quiet[k] for k in keys), pings["held_clients"] / pings["ping_interval_s"]


def _per_ping(*keys: str) -> list[float]:
    """CPU-seconds of keys per ping round trip: a 5 s interval against each of the two 120 s runs."""
    busy_5, rate_5 = _quiet("cluster-30k-ping-5s-2026-12-06", *keys)
    out = []
    for base in ("cluster-30k-ping-120s-2026-12-06", "cluster-30k-ping-120s-b-2026-12-06"):
        busy, rate = _quiet(base, *keys)
        out.append((busy_5 - busy) / (rate_5 - rate))
    return out


def test_the_colocated_cost_per_delivery_is_run_ls_machine_time() -> None:
    measured = _per_delivery("cluster-160k-l-2026-12-06", "machine busy")
    assert measured == pytest.approx(planner.MACHINE_CPU_S_PER_DELIVERY * 1e6, abs=0.05)


def test_the_lbs_costs_per_delivery_are_run_ls() -> None:
    run = "cluster-160k-l-2026-12-06"
    nginx = _per_delivery(run, "nginx user") + _per_delivery(run, "nginx sys")
    assert nginx == pytest.approx(planner.NGINX_CPU_S_PER_DELIVERY * 1e6, abs=0.05)
    assert _per_delivery(run, "softirq") == pytest.approx(planner.SOFTIRQ_CPU_S_PER_DELIVERY * 1e6, abs=0.05)


def test_the_costs_per_ping_are_the_a_b_a_runs() -> None:
    # The quiet hold against the ping rate: a 5 s interval between two 120 s runs.
    machine = _per_ping("machine busy")
    assert statistics.mean(machine) == pytest.approx(planner.PING_MACHINE_CPU_SECONDS, abs=0.5e-6)
    uwsgi = _per_ping("uwsgi user", "uwsgi sys")
    assert max(uwsgi) == pytest.approx(planner.PING_CPU_SECONDS, abs=0.05e-6)


def test_the_plans_fanout_lies_between_the_p50_and_p99_of_a_run_with_that_plan() -> None:
    # Run M: 160,000 on the local cluster with the plan this planner makes for it (122 s, 4.94 s).
    cluster = planner.plan(
        planner.Target(sockets=160_000, app_hosts=2, source_ips=4, colocated=True),
        planner.HostFacts(cores=2, memory_gib=24, nofile_hard=20000, somaxconn=4096),
    )
    run = _result("cluster-160k-m-2026-12-06")
    assert run["load"]["pings"]["ping_interval_s"] == cluster.ping_interval
    fanout = run["load"]["latency_ms"]["broadcast_fanout"]
    assert fanout["p50"] / 1000 <= cluster.broadcast_fanout_s <= fanout["p99"] / 1000
