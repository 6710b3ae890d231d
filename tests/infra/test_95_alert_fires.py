"""One alert fires for real: stop one uWSGI instance and Prometheus' alerts API shows
SiokitInstanceDown for that instance, pending then firing, within its `for:` plus the scrape and
evaluation intervals; the instance is restarted in a finally block, and the test ends only when
Prometheus sees it up again and the alert is gone.

Runs after the other infra tests (file order). Every bound is read from the running Prometheus
(the rule's `for:`, the global intervals), none is written here.
"""

from __future__ import annotations

import time

import pytest
import yaml
from conftest import (
    UWSGI_UNIT,
    duration_seconds,
    planned_uwsgi_ports,
    prometheus_api,
    require_monitor_group,
    uwsgi_client_address,
    wait_until,
)

ALERT = "SiokitInstanceDown"


def _alert_state(monitor, instance: str) -> str | None:
    alerts = prometheus_api(monitor, "/api/v1/alerts")["alerts"]
    mine = [a for a in alerts if a["labels"].get("alertname") == ALERT and a["labels"].get("instance") == instance]
    states = [a["state"] for a in mine]
    return states[0] if states else None


def _target_health(monitor, instance: str) -> str:
    targets = prometheus_api(monitor, "/api/v1/targets", state="active")["activeTargets"]
    found = [t["health"] for t in targets if t["labels"].get("job") == "siokit" and t["labels"]["instance"] == instance]
    assert found, f"{instance} is not a target of job siokit"
    return found[0]


@pytest.fixture(autouse=True, scope="module")
def _monitor_group(cluster):
    require_monitor_group(cluster)


@pytest.mark.destructive
def test_a_stopped_instance_fires_instance_down(cluster):
    monitor = cluster.hosts("monitor")[0]
    app = cluster.hosts("app")[0]
    port = planned_uwsgi_ports(app)[-1]
    instance = f"{uwsgi_client_address(app)}:{port}"
    unit = UWSGI_UNIT.format(port=port)

    rules = prometheus_api(monitor, "/api/v1/rules", type="alert")["groups"]
    rule = next(r for g in rules for r in g["rules"] if r["name"] == ALERT)
    hold = float(rule["duration"])  # the rule's for:, in seconds
    config = yaml.safe_load(prometheus_api(monitor, "/api/v1/status/config")["yaml"])["global"]
    scrape = duration_seconds(config["scrape_interval"])
    evaluation = duration_seconds(config["evaluation_interval"])
    # Down is seen at the next scrape, pending at the next evaluation, firing `for:` later (at an evaluation).
    bound = scrape + evaluation + hold + evaluation + 15

    # Up and quiet before the drill (test_90 stops and restarts this same instance moments before).
    wait_until(lambda: _assert_equal(_target_health(monitor, instance), "up"), timeout=2 * scrape + 30, interval=2)
    wait_until(lambda: _assert_equal(_alert_state(monitor, instance), None), timeout=2 * evaluation + 30, interval=2)
    seen: dict[str, float] = {}
    start = time.monotonic()
    try:
        r = app.run(f"systemctl stop {unit}")
        assert r.rc == 0, r.stderr
        while time.monotonic() - start < bound:
            state = _alert_state(monitor, instance)
            if state and state not in seen:
                seen[state] = round(time.monotonic() - start, 1)
            if state == "firing":
                break
            time.sleep(2)
    finally:
        app.run(f"systemctl start {unit}")
    print(f"{ALERT} for {instance}: {seen} s after the stop (for: {hold} s, bound {bound} s)")
    assert "firing" in seen, f"{ALERT} for {instance} did not fire within {bound} s (states seen: {seen})"
    assert seen["firing"] >= hold, f"fired after {seen['firing']} s, before its for: of {hold} s"
    # Restored: Prometheus scrapes the instance again and the alert resolves.
    wait_until(lambda: _assert_equal(_target_health(monitor, instance), "up"), timeout=2 * scrape + 30, interval=2)
    wait_until(lambda: _assert_equal(_alert_state(monitor, instance), None), timeout=2 * evaluation + 30, interval=2)


def _assert_equal(a: object, b: object) -> None:
    assert a == b, f"{a!r} != {b!r}"
