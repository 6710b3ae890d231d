"""Drill 6, a reconnect storm: nginx on the lb restarted, so every client drops at once and comes
back with the load generator's jittered exponential backoff. The instances must not take more than
the share the planner gave each of them (/etc/siokit/plan.json, uwsgi.sockets_per_instance)."""

from __future__ import annotations

import time

from siokit.drills import cluster
from siokit.drills.base import Context, Fault, row_at, wait_until
from siokit.drills.load import Sampler, ServerSamples

BACK_WITHIN_S = 90  # how long the action waits for the instances to hold every socket again


def busiest(samples: ServerSamples, start: float, end: float) -> tuple[str, int]:
    """The instance that held the most sockets at any sample in [start, end], and that count."""
    top, count = "", 0
    for ts, row in samples.rows:
        if start <= ts <= end:
            for key, n in row.items():
                if n is not None and n > count:
                    top, count = key, n
    return top, count


def reconnect_storm(ctx: Context, sampler: Sampler) -> Fault:
    plan = cluster.deployed_plan()
    share = int(plan["uwsgi"]["sockets_per_instance"])
    before = sampler.samples.total(row_at(sampler.samples, time.time()))
    start = time.time()
    cluster.run("lb", "systemctl restart nginx")
    restarted = time.time()

    def all_back() -> bool:
        rows = sampler.samples.rows
        return bool(rows) and rows[-1][0] > restarted and sampler.samples.total(rows[-1][1]) >= before

    back = wait_until(all_back, BACK_WITHIN_S, 1)
    time.sleep(10)  # the storm's tail: late reconnects and rebalancing
    end = time.time()
    # From the restart on: before it, the instances still count the sockets of the old load.
    top, most = busiest(sampler.samples, restarted, end)
    even = before / max(1, sum(len(p) for p in ctx.ports.values()))
    return Fault(
        start,
        start,
        end,
        {
            "nginx_restart_s": round(restarted - start, 1),
            "instances_back_s": round(back - start, 1) if back else None,
            "planned_sockets_per_instance": share,
            "max_instance_sockets": most,
            "max_instance": top,
            "max_instance_vs_even_share": round(most / even, 2) if even else None,
            "instances": sum(len(p) for p in ctx.ports.values()),
            # What the planner allowed for a storm at the planned scale (siokit plan), for comparison.
            "plan_storm_connects_per_second": plan["nginx"].get("storm_connects_per_second"),
            "plan_storm_ports_per_upstream_and_source": plan["nginx"].get("storm_ports_per_upstream_and_source"),
            "plan_usable_ports_per_upstream_and_source": plan["nginx"].get("usable_ports_per_upstream_and_source"),
        },
    )
