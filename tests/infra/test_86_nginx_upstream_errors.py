"""nginx's failed upstream attempts reach Prometheus (the "nginx upstream errors" alert of issue #13).

stub_status has no such counter: nginx logs the requests whose upstream attempt failed with a 5xx
in a log of their own, siokit-nginx-errors (siokit/nginx_errors.py) counts them into node exporter's
textfile directory, and the node job exports siokit_nginx_upstream_errors_total{upstream,status}.

- on every lb: the counter runs, its textfile is fresh, node exporter serves the metric's HELP;
- destructive: one uWSGI instance stopped, direct websocket handshakes through the lb (least_conn
  picks the instance with the fewest connections: the stopped one, which has none) fail over to the
  others, and Prometheus shows failed attempts against exactly that instance. Restarted in a finally.
"""

from __future__ import annotations

import base64
import json
import shlex
import time
from pathlib import Path

import pytest
from conftest import (
    UWSGI_UNIT,
    listen_address,
    planned_uwsgi_ports,
    prometheus_api,
    require_monitor_group,
    uwsgi_client_address,
    wait_until,
)

METRIC = "siokit_nginx_upstream_errors_total"
TEXTFILE = "/var/lib/prometheus/node-exporter/siokit_nginx_upstream.prom"
# Direct websocket handshakes from a client host, each closed at once (the probe's helper).
HANDSHAKES = r"""
import json, sys
sys.path.insert(0, "/tmp")
from siokit_sio_probe import WebSocket
url, n = sys.argv[1], int(sys.argv[2])
opened = 0
for _ in range(n):
    ws = WebSocket(url, timeout=10)
    opened += ws.recv().startswith("0{")  # the Engine.IO open packet
    ws.sock.close()
print(json.dumps({"opened": opened}))
"""


@pytest.fixture(autouse=True, scope="module")
def _monitor_group(cluster):
    require_monitor_group(cluster)


def test_the_counter_runs_and_node_exporter_serves_it(cluster):
    for name in cluster.group("lb"):
        lb = cluster.host(name)
        assert lb.service("siokit-nginx-errors").is_running, f"{name}: siokit-nginx-errors is not running"
        assert lb.service("siokit-nginx-errors").is_enabled
        # Rewritten every 5 s, errors or not.
        age = lb.run(f"echo $(( $(date +%s) - $(stat -c %Y {TEXTFILE}) ))")
        assert age.rc == 0 and int(age.stdout) < 30, f"{name}: {TEXTFILE} is stale or missing: {age.stderr}"
        address = listen_address(lb, "/etc/default/prometheus-node-exporter", "web.listen-address")
        r = lb.run(f"curl -fsS -m 10 http://{address}/metrics")
        assert r.rc == 0, r.stderr
        assert f"# TYPE {METRIC} counter" in r.stdout, f"{name}: node exporter does not export {METRIC}"


def _errors_for(monitor, upstream: str) -> float:
    result = prometheus_api(monitor, "/api/v1/query", query=f'sum({METRIC}{{upstream="{upstream}"}})')["result"]
    return float(result[0]["value"][1]) if result else 0.0


@pytest.mark.destructive
def test_a_stopped_instance_shows_as_upstream_errors(cluster, lb_url):
    monitor = cluster.hosts("monitor")[0]
    app = cluster.hosts("app")[0]
    client = cluster.hosts("loadgen")[0]
    port = planned_uwsgi_ports(app)[0]
    upstream = f"{uwsgi_client_address(app)}:{port}"
    before = _errors_for(monitor, upstream)
    # Ties in least_conn go round robin: twice the instances reach the stopped one at least once.
    handshakes = 2 * sum(len(planned_uwsgi_ports(cluster.host(n))) for n in cluster.group("app"))
    url = lb_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    probe = base64.b64encode((Path(__file__).parent / "sio_probe.py").read_bytes()).decode()
    assert client.run(f"echo {probe} | base64 -d > /tmp/siokit_sio_probe.py").rc == 0
    try:
        r = app.run(f"systemctl stop {UWSGI_UNIT.format(port=port)}")
        assert r.rc == 0, r.stderr
        time.sleep(1)
        r = client.run(f"python3 -c {shlex.quote(HANDSHAKES)} {shlex.quote(url)} {handshakes}")
        assert r.rc == 0, r.stderr
        # nginx retried each failed attempt on another instance: every client got its session.
        assert json.loads(r.stdout.strip().splitlines()[-1]) == {"opened": handshakes}
    finally:
        app.run(f"systemctl start {UWSGI_UNIT.format(port=port)}")

    def counted() -> None:
        now = _errors_for(monitor, upstream)
        assert now > before, f"{METRIC}{{upstream={upstream!r}}} still {now} (was {before})"

    # The counter writes every 5 s, Prometheus scrapes node exporter every scrape interval.
    wait_until(counted, timeout=90, interval=3)
