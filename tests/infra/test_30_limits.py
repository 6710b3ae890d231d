"""Open-file limits the kernel really gave nginx and every uWSGI instance (/proc/<pid>/limits).

Services ignore limits.conf: the limit must come from LimitNOFILE= in the unit (or drop-in), sized by
the planner and never above the host's hard limit (20,000 on the project's container hosts).
"""

from __future__ import annotations

import re

import pytest
from conftest import (
    PATHS,
    UWSGI_UNIT,
    children,
    in_container,
    nginx_directive,
    nginx_dump,
    planned_uwsgi_ports,
    proc_nofile,
    read_plan,
    unit_prop,
)

# The hard open-file limit of every process on the project's container hosts (no CAP_SYS_RESOURCE).
CONTAINER_CAP = 20_000


def host_hard_limit(host) -> int:
    """The most a service can get here: PID 1's hard limit (systemd's own ceiling)."""
    hard = proc_nofile(host, 1)[1]
    if not in_container(host):
        # What VMs are for: limits above the containers' cap (a VM's systemd has fs.nr_open).
        assert hard > CONTAINER_CAP, f"PID 1 hard nofile {hard} on a VM/real host, not above {CONTAINER_CAP}"
    return hard


def unit_nofile(host, unit: str) -> int:
    value = unit_prop(host, unit, "LimitNOFILE")
    assert value.isdigit(), f"{unit}: LimitNOFILE={value!r}"
    return int(value)


@pytest.mark.group("lb")
def test_nginx_nofile(node):
    unit_limit = unit_nofile(node, "nginx.service")
    plan = read_plan(node)
    if plan is not None:
        assert unit_limit == plan["nginx"]["limit_nofile"], f"unit {unit_limit} != plan {plan['nginx']}"
    assert unit_limit > 1024, f"nginx.service keeps the default LimitNOFILE ({unit_limit}): no drop-in"
    assert unit_limit <= host_hard_limit(node)

    conf = nginx_dump(node)
    rlimit = int(nginx_directive(conf, "worker_rlimit_nofile") or 0)
    connections = int(nginx_directive(conf, "worker_connections") or 0)
    assert rlimit, "worker_rlimit_nofile not set"
    # each proxied client holds two connections (downstream + upstream) of the same worker
    assert rlimit >= connections, f"worker_rlimit_nofile {rlimit} < worker_connections {connections}"
    assert rlimit <= unit_limit, f"worker_rlimit_nofile {rlimit} above the unit's LimitNOFILE {unit_limit}"
    if plan is not None:
        assert rlimit == plan["nginx"]["worker_rlimit_nofile"]
        assert connections == plan["nginx"]["worker_connections"]

    master = unit_prop(node, "nginx.service", "MainPID")
    assert master not in ("", "0"), "nginx has no main process"
    assert proc_nofile(node, master) == (unit_limit, unit_limit), f"nginx master limits {proc_nofile(node, master)}"
    workers = children(node, master)
    assert workers, "nginx has no worker process"
    for pid in workers:
        soft, _hard = proc_nofile(node, pid)
        assert soft == rlimit, f"nginx worker {pid}: soft nofile {soft} != worker_rlimit_nofile {rlimit}"


@pytest.mark.group("app")
def test_uwsgi_nofile(node):
    plan = read_plan(node)
    hard = host_hard_limit(node)
    ini = node.file(PATHS["app_ini"]).content_string
    m = re.search(r"^\s*gevent\s*=\s*(\d+)", ini, re.M)
    assert m, "no gevent = N in the uWSGI ini"
    cores = int(m.group(1))
    failures = []
    for port in planned_uwsgi_ports(node):
        unit = UWSGI_UNIT.format(port=port)
        limit = unit_nofile(node, unit)
        if plan is not None and limit != plan["uwsgi"]["limit_nofile"]:
            failures.append(f"{unit}: LimitNOFILE {limit} != plan {plan['uwsgi']['limit_nofile']}")
        if limit > hard:
            failures.append(f"{unit}: LimitNOFILE {limit} above the host hard limit {hard}")
        # every async core may hold one socket, plus the listen socket, logs, Redis...
        if limit < cores:
            failures.append(f"{unit}: LimitNOFILE {limit} < gevent cores {cores}")
        master = unit_prop(node, unit, "MainPID")
        if master in ("", "0"):
            failures.append(f"{unit}: not running")
            continue
        for pid in [int(master), *children(node, master)]:
            got = proc_nofile(node, pid)
            if got != (limit, limit):
                failures.append(f"{unit}: pid {pid} has nofile {got}, the unit asks {limit}")
    assert not failures, "\n".join(failures)
