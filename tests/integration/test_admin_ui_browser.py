"""The Socket.IO Admin UI on the loopback stack: nginx's basic auth, the app's /admin-ui namespace,
and a real Chromium that logs in and sees the connected clients of both instances (through Redis).

The screenshots land in reports/ (admin-ui-dashboard.png, admin-ui-servers.png).
"""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from siokit.lab.local import LocalStack, down

from .admin_ui_page import NAMESPACE, dashboard_clients, log_in, namespace_sockets, servers_clients
from .chromium import REPORTS, chromium
from .conftest import start_stack

pytestmark = pytest.mark.integration
ROOT_CLIENTS = 6


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    tmp = tmp_path_factory.mktemp("stack-admin-ui")
    stack = start_stack(tmp, "hash_remote_addr", admin_ui=True)
    yield stack
    down(tmp)


def _get(url: str, user: str | None = None, password: str | None = None) -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)


def test_nginx_serves_the_ui_only_with_the_password(ui_stack: LocalStack) -> None:
    url = ui_stack.url + "/admin-ui/"
    assert _get(url)[0] == 401
    assert _get(url, "admin", "wrong")[0] == 401
    assert _get(url, "root", ui_stack.admin_ui_password)[0] == 401
    status, body, _ = _get(url, "admin", ui_stack.admin_ui_password)
    assert status == 200 and "<title>Socket.IO Admin UI</title>" in body
    status, _, headers = _get(ui_stack.url + "/admin-ui")
    assert status == 301 and headers["Location"] == "/admin-ui/"
    # The app itself never serves the UI's files (they are not under app/static).
    assert _get(f"http://127.0.0.1:{ui_stack.app_ports[0]}/admin-ui/", "admin", ui_stack.admin_ui_password)[0] == 404


def test_the_namespace_refuses_bad_credentials(ui_stack: LocalStack) -> None:
    client = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(
            ui_stack.url, namespaces=[NAMESPACE], auth={"username": "admin", "password": "wrong"}, wait_timeout=10
        )
    client.disconnect()


def test_stats_of_every_instance_reach_one_admin(ui_stack: LocalStack) -> None:
    """One admin socket (on one instance) hears server_stats from both: relayed by Redis."""
    stats: dict[str, dict[str, Any]] = {}
    client = socketio.Client(reconnection=False)
    client.on("server_stats", lambda s: stats.__setitem__(s["serverId"], s), namespace=NAMESPACE)
    others = [socketio.Client(reconnection=False) for _ in range(2)]
    try:
        # Sockets on the other instance too (hash_remote_addr spreads 127.0.0.x; least_conn websockets).
        for other in others:
            other.connect(ui_stack.url, transports=["websocket"], wait_timeout=10)
        client.connect(
            ui_stack.url,
            namespaces=[NAMESPACE],
            auth={"username": "admin", "password": ui_stack.admin_ui_password},
            transports=["websocket"],
            wait_timeout=10,
        )
        # Aggregates, as in production mode; the counts add up to the sockets open here (every
        # instance reports every 2 s: a socket closed by an earlier test is gone by then).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if len(stats) == 2 and sum(s["clientsCount"] for s in stats.values()) == 3:
                break
            time.sleep(0.2)
        assert len(stats) == 2, stats
        assert sum(s["clientsCount"] for s in stats.values()) == 3, stats
        assert {n["name"] for s in stats.values() for n in s["namespaces"]} >= {"/", NAMESPACE}
    finally:
        for c in [client, *others]:
            c.disconnect()


def test_chromium_logs_in_and_sees_the_connected_clients(ui_stack: LocalStack) -> None:
    clients = [socketio.Client(reconnection=False) for _ in range(ROOT_CLIENTS)]
    try:
        for c in clients:
            c.connect(ui_stack.url, transports=["websocket"], wait_timeout=10)
        with chromium(window="1280,900") as driver:
            wait = log_in(driver, ui_stack.url, "admin", ui_stack.admin_ui_password)
            # The dashboard: clients by transport, summed over both instances' server_stats. The root
            # clients (websocket) plus the UI's own socket, and any socket the UI's first, refused
            # connect left open until its ping timeout: at least ROOT_CLIENTS + 1.
            wait.until(lambda d: dashboard_clients(d) >= ROOT_CLIENTS + 1)
            # Namespaces are exact: the root clients on "/", the UI alone on its namespace.
            wait.until(lambda d: namespace_sockets(d, "/") == ROOT_CLIENTS and namespace_sockets(d, NAMESPACE) == 1)
            REPORTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(REPORTS / "admin-ui-dashboard.png"))
            # The Servers page, reached inside the app (a reload would log the UI out: python-socketio's
            # admin side keeps no session): one row per instance, relayed through Redis.
            driver.execute_script("location.hash = '#/servers/'")
            wait.until(lambda d: len(servers_clients(d)) == 2 and sum(servers_clients(d)) >= ROOT_CLIENTS + 1)
            driver.save_screenshot(str(REPORTS / "admin-ui-servers.png"))
            assert Path(REPORTS / "admin-ui-dashboard.png").stat().st_size > 10_000
    finally:
        for c in clients:
            c.disconnect()
