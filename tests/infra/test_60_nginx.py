"""nginx: a valid configuration that proxies websockets to every app instance."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import PATHS, env_file, nginx_directive, nginx_dump, planned_uwsgi_ports, run_probe, wait_until


@pytest.mark.group("lb")
def test_nginx_config_valid(node):
    r = node.run("nginx -t")
    assert r.rc == 0, f"nginx -t failed:\n{r.stderr}"
    assert "syntax is ok" in r.stderr and "test is successful" in r.stderr


@pytest.mark.group("lb")
def test_nginx_websocket_proxying(node, cluster):
    conf = nginx_dump(node)
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade", conf), "no map $http_upgrade"
    loc = re.search(r"location\s+/socket\.io\s*\{(.*?)\n\s*\}", conf, re.S)
    assert loc, "no location /socket.io"
    body = loc.group(1)
    assert "proxy_http_version 1.1" in body
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade", body)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade", body)
    # nginx closes an idle websocket after proxy_read_timeout: above Engine.IO ping interval + timeout
    timeout = re.search(r"proxy_read_timeout\s+(\d+)s?;", body)
    assert timeout, "no proxy_read_timeout in location /socket.io"
    # What the app instances really run with, from their environment file on every app host.
    for app in cluster.hosts("app"):
        env = env_file(app, PATHS["app_env"])
        needed = int(env["SIOKIT_PING_INTERVAL"]) + int(env["SIOKIT_PING_TIMEOUT"])
        assert int(timeout.group(1)) > needed, (
            f"proxy_read_timeout {timeout.group(1)} s <= ping interval + timeout {needed} s on {app.siokit_name}"
        )


@pytest.mark.group("lb")
def test_upstream_has_every_instance(node, cluster):
    conf = nginx_dump(node)
    up = re.search(r"upstream\s+\S+\s*\{(.*?)\}", conf, re.S)
    assert up, "no upstream block"
    servers = set(re.findall(r"^\s*server\s+(\S+?)[\s;]", up.group(1), re.M))
    balance = [d for d in ("ip_hash", "least_conn", "hash") if re.search(rf"^\s*{d}\b", up.group(1), re.M)]
    assert balance, "upstream without ip_hash / hash / least_conn"
    ports_seen: dict[str, list[int]] = {}
    for s in servers:
        host, _, port = s.rpartition(":")
        ports_seen.setdefault(host, []).append(int(port))
    want = {name: planned_uwsgi_ports(cluster.host(name)) for name in cluster.group("app")}
    total = sum(len(p) for p in want.values())
    assert len(servers) == total, f"upstream has {sorted(servers)}, the app hosts run {total}: {want}"
    for name, ports in want.items():
        assert any(sorted(p) == ports for p in ports_seen.values()), f"{name}'s ports {ports} not in upstream"


@pytest.mark.group("lb")
def test_lb_healthz(node):
    listen = nginx_directive(nginx_dump(node), "listen") or "80"
    port = re.search(r"(\d+)", listen.split()[0]).group(1)
    r = node.run(f"curl -fsS -m 5 http://127.0.0.1:{port}/healthz")
    assert r.rc == 0, f"/healthz through nginx failed: {r.stderr}"
    assert '"status":"ok"' in r.stdout.replace(" ", "")


@pytest.mark.group("lb")
def test_access_log_shows_websocket(node, cluster, lb_url):
    """After a real client session (test_70 runs the probe), the access log holds a 101 for websocket."""
    client = cluster.hosts("loadgen")[0]
    report = run_probe(client, {"lb": lb_url, "direct": [], "timeout": 10})
    assert report.get("lb_transport") == "polling->websocket", report
    sid = report["lb_eio_sid"]

    def upgraded() -> None:
        # the access log is buffered (flush=5s) and a websocket is logged when it closes.
        # -e: a sid is base64url and may start with "-", which grep would read as options (rc 2).
        r = node.run(f"grep -F -e {shlex.quote(sid)} {PATHS['nginx_access_log']}")
        if r.rc not in (0, 1):
            pytest.fail(f"grep of the access log failed (rc {r.rc}): {r.stderr}")
        log = r.stdout
        assert "transport=websocket" in log and '" 101 ' in log, f"no websocket 101 for {sid} in the access log:\n{log}"

    wait_until(upgraded, timeout=15)
