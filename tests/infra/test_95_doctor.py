"""siokit doctor on the live cluster: every check passes, then each breakage is caught and restored.

Runs after the fault tests (file order). Each test breaks one thing the way it breaks in the field,
asserts that doctor's matching check fails, restores it, and waits until the check passes again.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from conftest import UWSGI_UNIT, planned_uwsgi_ports, wait_until

from siokit.doctor import FAIL, Check
from siokit.doctor import checks as dc
from siokit.doctor.client import Public
from siokit.doctor.hosts import Fleet


@pytest.fixture(scope="module")
def fleet(cluster) -> Fleet:
    return Fleet({g: [(n, cluster.host(n)) for n in cluster.group(g)] for g in ("lb", "app", "redis", "loadgen")})


def passes(probe: Callable[[], Check]) -> Check:
    """The check's result, as an AssertionError while it fails (or cannot run yet), for wait_until."""
    try:
        check = probe()
    except Exception as exc:  # e.g. Redis still starting: keep waiting
        raise AssertionError(f"{type(exc).__name__}: {exc}") from exc
    assert check.status != FAIL, f"{check.name}: {check.measured}"
    return check


def failed(results: list[Check]) -> dict[str, str]:
    return {r.name: r.measured for r in results if r.status == FAIL}


def test_doctor_passes_on_the_healthy_cluster(lb_url, fleet) -> None:
    assert failed(dc.run(lb_url, fleet)) == {}


@pytest.mark.destructive
def test_stopped_instance_is_caught(lb_url, fleet) -> None:
    name, host = fleet.hosts("app")[0]
    unit = UWSGI_UNIT.format(port=planned_uwsgi_ports(host)[-1])
    try:
        assert host.run(f"systemctl stop {unit}").rc == 0
        bad = dc.check_spread(fleet)
        assert bad.status == FAIL and f"{name}:" in bad.measured
    finally:
        host.run(f"systemctl start {unit}")
    wait_until(lambda: passes(lambda: dc.check_spread(fleet)), timeout=60)


@pytest.mark.destructive
def test_short_proxy_read_timeout_is_caught(lb_url, fleet) -> None:
    _, lb = fleet.hosts("lb")[0]
    site = "/etc/nginx/siokit.conf"
    backup = "/root/siokit.conf.doctor-test"
    assert lb.run(f"cp -p {site} {backup}").rc == 0
    try:
        lb.run(f"sed -i -E 's/proxy_read_timeout [0-9]+s;/proxy_read_timeout 30s;/' {site} && nginx -s reload")
        bad = dc.check_nginx(Public(lb_url), fleet)
        assert bad.status == FAIL and "proxy_read_timeout 30 s" in bad.measured
    finally:
        lb.run(f"cp -p {backup} {site} && rm -f {backup} && nginx -s reload")
    wait_until(lambda: passes(lambda: dc.check_nginx(Public(lb_url), fleet)), timeout=30)


@pytest.mark.destructive
def test_low_open_file_limit_is_caught(fleet) -> None:
    _, host = fleet.hosts("app")[0]
    pid = host.run("pgrep -f '^[^ ]*/uwsgi ' | tail -n1").stdout.strip()
    limits = host.run(f"cat /proc/{pid}/limits").stdout
    soft, hard = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M).groups()  # type: ignore[union-attr]
    try:
        assert host.run(f"prlimit --pid {pid} --nofile=1024:{hard}").rc == 0
        bad = dc.check_limits(fleet)
        assert bad.status == FAIL and "nofile 1024 <" in bad.measured
    finally:
        host.run(f"prlimit --pid {pid} --nofile={soft}:{hard}")
    passes(lambda: dc.check_limits(fleet))


@pytest.mark.destructive
def test_redis_down_is_caught(lb_url, fleet) -> None:
    _, redis = fleet.hosts("redis")[0]
    service = "redis-server"
    try:
        assert redis.run(f"systemctl stop {service}").rc == 0
        assert dc.check_external_emit(Public(lb_url), fleet).status == FAIL
        assert dc.check_subscribers(fleet).status == FAIL
    finally:
        redis.run(f"systemctl start {service}")
    wait_until(lambda: passes(lambda: dc.check_subscribers(fleet)), timeout=60)
    wait_until(lambda: passes(lambda: dc.check_external_emit(Public(lb_url), fleet)), timeout=30)
