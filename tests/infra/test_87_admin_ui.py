"""The Socket.IO Admin UI on the cluster (issue #13): Chromium on this machine logs in through the lb
and sees the cluster's connected clients and every uWSGI instance.

Runs where an operator's browser would, on the control machine, through the public URL
(SIOKIT_INFRA_PUBLIC_URL, else lb_url). The password is read from the app hosts' env file, where the
role wrote it (generated once by the plan role). Screenshot: reports/admin-ui-cluster.png. Needs
`siokit_admin_ui_enabled: true` (molecule/cluster sets it); a deployment without it skips.
"""

from __future__ import annotations

import os
import shlex

import pytest
import socketio
from conftest import PATHS, planned_uwsgi_ports

from tests.integration.admin_ui_page import dashboard_clients, log_in, namespace_sockets, servers_clients
from tests.integration.chromium import REPORTS, chromium

CLIENTS = 8


def _env(host, name: str) -> str | None:
    out = host.run(f"grep -E '^{name}=' {shlex.quote(PATHS['app_env'])}").stdout.strip()
    return out.split("=", 1)[1].strip().strip("'\"") if out else None


def test_chromium_sees_the_cluster_clients_in_the_admin_ui(cluster, lb_url: str) -> None:
    apps = cluster.hosts("app")
    if _env(apps[0], "SIOKIT_ADMIN_UI") != "on":
        pytest.skip("the Admin UI is off in this deployment (siokit_admin_ui_enabled)")
    user, password = _env(apps[0], "SIOKIT_ADMIN_UI_USER"), _env(apps[0], "SIOKIT_ADMIN_UI_PASSWORD")
    assert user and password, f"SIOKIT_ADMIN_UI is on but no user/password in {PATHS['app_env']}"
    instances = sum(len(planned_uwsgi_ports(h)) for h in apps)
    url = os.environ.get("SIOKIT_INFRA_PUBLIC_URL", lb_url)

    clients = [socketio.Client(reconnection=False) for _ in range(CLIENTS)]
    try:
        for c in clients:
            c.connect(url, transports=["websocket"], wait_timeout=10)
        with chromium(window="1280,900") as driver:
            wait = log_in(driver, url, user, password, timeout=30)
            # Other sockets may be open on the cluster: at least ours on "/", the UI alone on its own.
            wait.until(lambda d: (namespace_sockets(d, "/") or 0) >= CLIENTS and dashboard_clients(d) >= CLIENTS + 1)
            REPORTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(REPORTS / "admin-ui-cluster.png"))
            # Every instance reports its stats through Redis: one row per planned instance.
            driver.execute_script("location.hash = '#/servers/'")
            wait.until(lambda d: len(servers_clients(d)) == instances and sum(servers_clients(d)) >= CLIENTS + 1)
            driver.save_screenshot(str(REPORTS / "admin-ui-cluster-servers.png"))
        assert (REPORTS / "admin-ui-cluster.png").stat().st_size > 10_000
    finally:
        for c in clients:
            c.disconnect()
