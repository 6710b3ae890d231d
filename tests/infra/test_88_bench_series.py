"""`siokit bench`'s server-side series (siokit/lab/server_series.py) from the deployment's real
Prometheus, while the real load generator holds a few hundred sockets.

The load: one small `siokit load` per uWSGI instance on the loadgen host, straight to the instance
(the lb hashes by client address, so one loadgen's clients would all land on one instance). The
bench's own queries, over the window of the load, must then give every instance of every app host
a sockets series that reaches what that instance holds, and a CPU and a resident-memory series.
Prometheus is asked from the monitor host itself (it listens on the private address only).
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Mapping
from typing import Any

import pytest
from conftest import planned_uwsgi_ports, prometheus_api, require_monitor_group, wait_until

from siokit.lab import server_series
from siokit.lab.deployment import role_path

PER_INSTANCE = 30  # clients per instance: 300 on the local cluster's 10 instances
HOLD_S = 180  # long enough for any wait below; the test stops the loads itself
REMOTE = "/tmp/siokit-test88-{i}"


@pytest.fixture(scope="module")
def monitor(cluster):
    require_monitor_group(cluster)
    return cluster.hosts("monitor")[0]


def _instances(cluster) -> dict[tuple[str, int], str]:
    """(inventory host, port) -> the URL the loadgen host reaches that instance on."""
    return {
        (name, port): f"http://{cluster.address(name)}:{port}"
        for name in cluster.group("app")
        for port in planned_uwsgi_ports(cluster.host(name))
    }


def _key(instance: str, row: Mapping[str, Any]) -> tuple[str, int]:
    """Prometheus' target (`host` label, the port of `instance`) as the inventory names it."""
    return str(row["host"]), int(instance.rsplit(":", 1)[1])


def _start_loads(loadgen, urls: list[str]) -> list[int]:
    binary = shlex.quote(role_path("loadgen_siokit_binary"))
    pids = []
    for i, url in enumerate(urls):
        base = REMOTE.format(i=i)
        cmd = (
            f"{binary} load --url {shlex.quote(url)} --connections {PER_INSTANCE} --workers 1 --hold {HOLD_S} "
            f"--no-progress --report {base}.json"
        )
        r = loadgen.run(f"rm -f {base}.json; setsid nohup {cmd} > {base}.log 2>&1 < /dev/null & echo $!")
        assert r.rc == 0, r.stderr
        pids.append(int(r.stdout.strip()))
    return pids


def _stop_loads(loadgen, pids: list[int]) -> list[dict[str, Any]]:
    """SIGINT (a clean ramp-down, then the report), wait for every one; their reports."""
    loadgen.run(f"kill -INT {' '.join(map(str, pids))} 2>/dev/null")
    loadgen.run(
        f"for i in $(seq 60); do kill -0 {' '.join(map(str, pids))} 2>/dev/null || break; sleep 1; done; "
        f"kill -KILL {' '.join(map(str, pids))} 2>/dev/null; true"
    )
    reports = []
    for i in range(len(pids)):
        f = loadgen.file(f"{REMOTE.format(i=i)}.json")
        reports.append(json.loads(f.content_string) if f.exists else {})
    loadgen.run(f"rm -f {REMOTE.format(i='*')}.json {REMOTE.format(i='*')}.log")
    return reports


def test_bench_series_per_instance_while_the_load_holds(cluster, monitor):
    instances = _instances(cluster)
    assert len(instances) >= 2, instances
    loadgen = cluster.hosts("loadgen")[0]

    def get(path: str, params: Mapping[str, str]) -> Any:
        return prometheus_api(monitor, path, **params)

    interval = server_series.scrape_interval_s(server_series.app_targets(get))
    start = time.time()
    pids = _start_loads(loadgen, list(instances.values()))
    try:
        # Only scrapes made after the loads started: a sample from before (another run's sockets)
        # stays the latest one for up to a scrape interval.
        fresh = (
            f"{server_series.QUERIES['sockets'].expr} "
            f'and on (instance) (timestamp(up{{job="{server_series.JOB}"}}) > {start:.3f})'
        )

        def every_instance_scraped_holding() -> None:
            rows = get("/api/v1/query", {"query": fresh})["result"]
            seen = {_key(r["metric"]["instance"], r["metric"]): float(r["value"][1]) for r in rows}
            short = {k: seen.get(k) for k in instances if (seen.get(k) or 0) < PER_INSTANCE}
            assert not short, f"instances Prometheus has not yet seen holding {PER_INSTANCE}: {short}"

        # the ramp (a second or two) and then one scrape of every instance
        wait_until(every_instance_scraped_holding, timeout=3 * interval + 30, interval=2)
        # one step on: the window's last point lies after those scrapes
        time.sleep(math.ceil(interval))
        got = server_series.collect(get, start, time.time(), source="monitor host", settle=False)
    finally:
        reports = _stop_loads(loadgen, pids)

    # the load generator did hold them: PER_INSTANCE on every instance
    held = [r.get("connections", {}).get("peak_held") for r in reports]
    assert held == [PER_INSTANCE] * len(instances), held

    assert got["collected"] is True
    assert got["window"]["step_s"] == math.ceil(interval)  # a short run: one point per scrape
    for name in ("sockets", "cpu_cores", "rss_mib"):
        seen = {_key(i, row) for i, row in got["series"][name].items()}
        assert set(instances) <= seen, f"{name}: no series for {sorted(set(instances) - seen)}"
    for instance, row in got["series"]["sockets"].items():
        if _key(instance, row) not in instances:
            continue
        assert row["t"] and all(0 <= t <= got["window"]["end"] - got["window"]["start"] + 1 for t in row["t"])
        # at the window's end the instance holds its share of the load (other clients may add)
        assert row["v"][-1] >= PER_INSTANCE, (instance, row)
    stats = {_key(i, s): s for i, s in got["per_instance"].items()}
    for key in instances:
        assert (stats[key]["sockets_peak"] or 0) >= PER_INSTANCE, (key, stats[key])
        # a gevent/uWSGI Python process holding sockets: tens of MiB at least; CPU spent on the handshakes
        assert (stats[key]["rss_mib_peak"] or 0) > 20, (key, stats[key])
        assert (stats[key]["cpu_cores_peak"] or 0) > 0, (key, stats[key])
