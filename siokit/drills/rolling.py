"""Drill 4, a rolling upgrade through site.yml under load: a new `app_release` deployed by
`ansible-playbook site.yml --tags app` (scripts/cluster.sh converge: Molecule's inventory of the
running cluster, this checkout's roles), then the release that ran before deployed back the same
way. The app role restarts each host's instances one at a time, each waiting for its /healthz
before the next (ansible/roles/app/tasks/rolling_restart.yml); the hosts do this in parallel, so
at most one instance per host is down at any moment."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from siokit.drills import cluster
from siokit.drills.base import Context, Fault
from siokit.drills.load import Sampler, ServerSamples

ROOT = Path(__file__).resolve().parents[2]
CONVERGE_TIMEOUT_S = 900
SETTLE_S = 30  # observed after the second converge: the last instance's clients coming back


def min_serving(samples: ServerSamples, start: float, end: float) -> int | None:
    """The fewest instances that answered /metrics at any sample in [start, end]; None: no sample.
    An instance too busy to answer within 4 s counts as not serving: the check errs on the strict side."""
    counts = [sum(v is not None for v in row.values()) for ts, row in samples.rows if start <= ts <= end]
    return min(counts) if counts else None


def on_release(health: Mapping[str, Mapping[str, Any] | None], release: str) -> int:
    """Instances whose /healthz reports `release`."""
    return sum(1 for h in health.values() if h is not None and h.get("release") == release)


def restarted(before: Mapping[str, Mapping[str, Any] | None], after: Mapping[str, Mapping[str, Any] | None]) -> int:
    """Instances with a new systemd MainPID (a process that answers /healthz after)."""
    return sum(
        1
        for key, h in after.items()
        if h is not None and h.get("main_pid") and (before.get(key) or {}).get("main_pid") != h["main_pid"]
    )


def _health(ctx: Context) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for host, ports in ctx.ports.items():
        for port, h in cluster.instance_health(host, ports).items():
            out[f"{host}:{port}"] = h
    return out


def _converge(ctx: Context, release: str, log: Path) -> float:
    """`site.yml --tags app -e app_release=...` against the running cluster; its duration in seconds."""
    t0 = time.time()
    with log.open("w") as out:
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / "cluster.sh"), "converge", "--tags", "app", "-e", f"app_release={release}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=CONVERGE_TIMEOUT_S,
            env=dict(os.environ),
        )
    if proc.returncode != 0:
        raise RuntimeError(f"site.yml --tags app (app_release={release!r}) exited {proc.returncode}; see {log}")
    return time.time() - t0


def rolling_upgrade(ctx: Context, sampler: Sampler) -> Fault:
    first = _health(ctx)
    previous = next((h.get("release", "") for h in first.values() if h is not None), "")
    release = f"drill-{int(time.time())}"
    start = time.time()
    upgrade_s = _converge(ctx, release, ctx.out / "rolling-upgrade.log")
    upgraded = _health(ctx)
    rollback_s = _converge(ctx, previous, ctx.out / "rolling-rollback.log")
    end = time.time()
    rolled_back = _health(ctx)
    time.sleep(SETTLE_S)
    return Fault(
        start,
        end,
        time.time(),
        {
            "instances": len(first),
            "release": release,
            "previous_release": previous,
            "upgrade_s": round(upgrade_s, 1),
            "rollback_s": round(rollback_s, 1),
            "instances_on_new_release": on_release(upgraded, release),
            "instances_restarted_by_upgrade": restarted(first, upgraded),
            "instances_back_on_previous": on_release(rolled_back, previous),
            "instances_restarted_by_rollback": restarted(upgraded, rolled_back),
            "min_instances_serving": min_serving(sampler.samples, start, end),
        },
    )
