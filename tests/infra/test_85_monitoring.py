"""Prometheus on the monitor host (role `monitoring`, issue #13), checked through its own HTTP API.

- it runs and listens on the private address only;
- it scrapes exactly what runs: every uWSGI instance of every app host (from each host's siokit.target
  and uWSGI ini, not from Prometheus' own configuration), an exporter on every host, nginx's on lb,
  Redis' on redis, each bound to its private address; every one of those targets is `up`;
- the kit's alert rules are loaded, healthy, and the file is the repository's, byte for byte;
- the app's /metrics is open to the monitor host through nginx and closed to other hosts;
- every query of docs/grafana/siokit.json returns data, after the test made the traffic some of them
  need (a Socket.IO round trip on every instance, a refused /admin connect, a failed handshake).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    GROUPS,
    PATHS,
    duration_seconds,
    listen_address,
    planned_uwsgi_ports,
    prometheus_api,
    require_monitor_group,
    run_probe,
    uwsgi_client_address,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "templates" / "prometheus" / "siokit-alerts.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "siokit.json"
# Each exporter: the groups it runs on, its /etc/default file and its listen flag.
EXPORTERS = {
    "node": (GROUPS, "/etc/default/prometheus-node-exporter", "web.listen-address"),
    "nginx": (("lb",), "/etc/default/prometheus-nginx-exporter", "web.listen-address"),
    "redis": (("redis",), "/etc/default/prometheus-redis-exporter", "web.listen-address"),
}


@pytest.fixture(autouse=True, scope="module")
def _monitor_group(cluster):
    require_monitor_group(cluster)


@pytest.fixture(scope="module")
def monitor(cluster):
    return cluster.hosts("monitor")[0]


def _active_targets(monitor) -> list[dict[str, Any]]:
    return prometheus_api(monitor, "/api/v1/targets", state="active")["activeTargets"]


def _scrape_interval(monitor) -> float:
    config = yaml.safe_load(prometheus_api(monitor, "/api/v1/status/config")["yaml"])
    return duration_seconds(config["global"]["scrape_interval"])


def _expected_targets(cluster) -> dict[str, set[str]]:
    """job -> address:port, read from what each host runs and was told to listen on."""
    expected: dict[str, set[str]] = {"siokit": set()}
    for name in cluster.group("app"):
        host = cluster.host(name)
        address = uwsgi_client_address(host)
        expected["siokit"] |= {f"{address}:{port}" for port in planned_uwsgi_ports(host)}
    for job, (groups, env_path, flag) in EXPORTERS.items():
        for group in groups:
            for host in cluster.hosts(group):
                expected.setdefault(job, set()).add(listen_address(host, env_path, flag))
    prometheus = {listen_address(h, PATHS["prometheus_env"], "web.listen-address") for h in cluster.hosts("monitor")}
    expected["prometheus"] = prometheus
    return expected


@pytest.mark.group("monitor")
def test_prometheus_runs_on_the_private_address_only(node):
    assert node.service("prometheus").is_running
    assert node.service("prometheus").is_enabled
    address = listen_address(node, PATHS["prometheus_env"], "web.listen-address")
    host, _, port = address.rpartition(":")
    assert host not in ("", "0.0.0.0", "::", "127.0.0.1"), f"Prometheus listens on {address!r}"
    assert node.socket(f"tcp://{address}").is_listening
    assert not node.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not node.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert node.run("promtool check config /etc/prometheus/prometheus.yml").rc == 0


@pytest.mark.group(*GROUPS)
def test_exporters_listen_on_the_private_address(node):
    for groups, env_path, flag in EXPORTERS.values():
        if node.siokit_group not in groups:
            continue
        unit = Path(env_path).name
        assert node.service(unit).is_running, f"{unit} is not running on {node.siokit_name}"
        address = listen_address(node, env_path, flag)
        assert not address.startswith((":", "0.0.0.0:", "[::]:")), f"{unit} listens on every address: {address}"
        assert node.socket(f"tcp://{address}").is_listening, f"{unit} does not listen on {address}"


def test_every_target_is_scraped_and_up(cluster, monitor):
    expected = _expected_targets(cluster)
    assert len(expected["siokit"]) >= 2 and expected["node"], expected
    interval = _scrape_interval(monitor)

    def all_up() -> list[dict[str, Any]]:
        targets = _active_targets(monitor)
        down = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets if t["health"] != "up"]
        assert not down, f"targets not up: {down}"
        return targets

    # Just after a converge a target may not have been scraped yet: two intervals at most.
    targets = wait_until(all_up, timeout=2 * interval + 15, interval=2)
    seen: dict[str, set[str]] = {}
    for t in targets:
        seen.setdefault(t["labels"]["job"], set()).add(t["labels"]["instance"])
    assert seen == expected, f"Prometheus scrapes {seen}, the hosts run {expected}"
    # The same through PromQL: up == 1 for every one of them.
    # (Compared per target: a series of a target replaced by the converge stays until it goes stale.)
    result = prometheus_api(monitor, "/api/v1/query", query="up")["result"]
    up = {(r["metric"]["job"], r["metric"]["instance"]): r["value"][1] for r in result}
    wanted = {(job, inst) for job, insts in expected.items() for inst in insts}
    assert {k: up.get(k) for k in wanted} == dict.fromkeys(wanted, "1"), up


def test_redis_exporter_reads_redis_as_its_own_user(monitor):
    """redis_up == 1 and no scrape error: the exporter's ACL user has every command it sends."""
    up = prometheus_api(monitor, "/api/v1/query", query='redis_up{job="redis"}')["result"]
    assert up and all(r["value"][1] == "1" for r in up), up
    errors = prometheus_api(monitor, "/api/v1/query", query='redis_exporter_last_scrape_error{job="redis"}')["result"]
    assert errors and all(r["value"][1] == "0" for r in errors), errors
    nginx = prometheus_api(monitor, "/api/v1/query", query='nginx_up{job="nginx"}')["result"]
    assert nginx and all(r["value"][1] == "1" for r in nginx), nginx


def test_the_kits_alert_rules_are_loaded(monitor):
    groups = prometheus_api(monitor, "/api/v1/rules", type="alert")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    doc = yaml.safe_load(RULES.read_text())
    shipped = {rule["alert"] for group in doc["groups"] for rule in group["rules"] if "alert" in rule}
    assert set(loaded) == shipped, f"loaded {sorted(loaded)}, the kit ships {sorted(shipped)}"
    bad = {name: rule.get("lastError") for name, rule in loaded.items() if rule["health"] not in ("ok", "unknown")}
    assert not bad, bad
    on_host = monitor.run(f"sha256sum {PATHS['prometheus_rules']}").stdout.split()[0]
    assert on_host == hashlib.sha256(RULES.read_bytes()).hexdigest(), "the rules file on the host is not the kit's"


def test_metrics_open_to_the_monitor_host_only(cluster, monitor, lb_url):
    """nginx's /metrics allow-list follows the inventory's monitor group."""
    url = shlex.quote(f"{lb_url}/metrics")
    r = monitor.run(f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' {url}")
    assert r.stdout.strip() == "200", f"monitor host got HTTP {r.stdout} from {lb_url}/metrics: {r.stderr}"
    other = cluster.hosts("loadgen")[0]
    r = other.run(f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' {url}")
    assert r.stdout.strip() == "403", f"a loadgen host got HTTP {r.stdout} from {lb_url}/metrics"


# Refused /admin connects and failed handshakes only exist after some happened: made on every
# instance, with the probe's helpers (a websocket-only client and a raw HTTP request).
ACTIVITY = r"""
import json, sys
sys.path.insert(0, "/tmp")
from siokit_sio_probe import WebSocket, http
out = {}
for base in json.loads(sys.argv[1]):
    ws = WebSocket(base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket", timeout=10)
    ws.recv()  # the Engine.IO open packet
    ws.send("40/admin,{}")
    refused = ws.recv()
    ws.sock.close()
    status, _ = http(base + "/socket.io/?EIO=3&transport=polling", timeout=10)
    out[base] = {"admin": refused[:40], "eio3": status}
print(json.dumps(out))
"""


def _dashboard_queries(window: str) -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", window))
        for panel in doc["panels"]
        for target in panel["targets"]
    ]


def test_every_dashboard_query_returns_data(cluster, monitor, lb_url, app_endpoints):
    client = cluster.hosts("loadgen")[0]
    report = run_probe(client, {"lb": lb_url, "direct": app_endpoints, "timeout": 15})
    assert "error" not in report, report.get("error")
    r = client.run(f"python3 -c {shlex.quote(ACTIVITY)} {shlex.quote(json.dumps(app_endpoints))}")
    assert r.rc == 0, r.stderr
    made = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(m["admin"].startswith("44/admin") and m["eio3"] == 400 for m in made.values()), made
    interval = _scrape_interval(monitor)
    # $__rate_interval is Grafana's: at least four scrape intervals.
    window = f"{int(4 * interval)}s"
    queries = _dashboard_queries(window)
    assert len(queries) >= 15

    def all_answer() -> None:
        empty = [
            (title, expr)
            for title, expr in queries
            if not prometheus_api(monitor, "/api/v1/query", query=expr)["result"]
        ]
        assert not empty, f"dashboard queries without data: {empty}"

    # A counter that just appeared needs two scrapes before rate() has a value.
    wait_until(all_answer, timeout=3 * interval + 30, interval=interval / 2)


def test_dashboard_queries_name_only_scraped_jobs():
    """The dashboard's job selectors are jobs the kit scrapes (a renamed job would leave panels empty)."""
    jobs = {m for _, expr in _dashboard_queries("1m") for m in re.findall(r'job="([^"]+)"', expr)}
    assert jobs and jobs <= {"siokit", "node", "nginx", "redis", "prometheus"}, jobs
