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

from siokit.lab.local import LocalStack, down, up

from .chromium import REPORTS, chromium
from .conftest import free_base_port

pytestmark = pytest.mark.integration
NAMESPACE = "/admin-ui"
ROOT_CLIENTS = 6


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    tmp = tmp_path_factory.mktemp("stack-admin-ui")
    stack = LocalStack(state_dir=tmp, port=free_base_port(), instances=2, balance="hash_remote_addr", admin_ui=True)
    try:
        up(stack)
    except Exception:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(tmp.rglob("*.log")))
        down(tmp)
        raise RuntimeError(f"loopback stack failed to start\n{logs}") from None
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


def _field(driver: Any, label: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, f"//label[normalize-space()='{label}']/following-sibling::input")


def _servers_clients(driver: Any) -> list[int]:
    """The "# of clients" column of the UI's Servers page."""
    from selenium.webdriver.common.by import By

    headers = [h.text.strip() for h in driver.find_elements(By.CSS_SELECTOR, "table thead th")]
    if "# of clients" not in headers:
        return []
    col = headers.index("# of clients")
    rows = driver.find_elements(By.CSS_SELECTOR, "table tbody tr")
    out = []
    for row in rows:
        cells = row.find_elements(By.TAG_NAME, "td")
        if len(cells) > col and cells[col].text.strip().isdigit():
            out.append(int(cells[col].text.strip()))
    return out


def _dashboard_clients(driver: Any) -> int:
    """WebSocket + HTTP long-polling clients on the UI's dashboard ("Clients" card), or 0."""
    from selenium.webdriver.common.by import By

    lines = [x.strip() for x in driver.find_element(By.TAG_NAME, "body").text.splitlines()]
    total = 0
    for label in ("WebSocket", "HTTP long-polling"):
        if label in lines and lines.index(label) + 1 < len(lines) and lines[lines.index(label) + 1].isdigit():
            total += int(lines[lines.index(label) + 1])
    return total


def _namespace_sockets(driver: Any, namespace: str) -> int | None:
    """The "# of sockets" of a namespace on the dashboard's Namespaces card."""
    from selenium.webdriver.common.by import By

    for row in driver.find_elements(By.CSS_SELECTOR, "table tr"):
        cells = [c.text.strip() for c in row.find_elements(By.TAG_NAME, "td")]
        if len(cells) == 2 and cells[0] == namespace and cells[1].isdigit():
            return int(cells[1])
    return None


def test_chromium_logs_in_and_sees_the_connected_clients(ui_stack: LocalStack) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    clients = [socketio.Client(reconnection=False) for _ in range(ROOT_CLIENTS)]
    try:
        for c in clients:
            c.connect(ui_stack.url, transports=["websocket"], wait_timeout=10)
        with chromium(window="1280,900") as driver:
            password = ui_stack.admin_ui_password
            host = ui_stack.url.removeprefix("http://")
            # Basic auth for the static files: credentials in the URL of the top-level page.
            driver.get(f"http://admin:{password}@{host}/admin-ui/")
            # The UI keeps its connection settings in localStorage: server URL and namespace.
            driver.execute_script(
                "localStorage.setItem('server_url', arguments[0]); localStorage.setItem('namespace', arguments[1]);",
                ui_stack.url,
                NAMESPACE,
            )
            driver.get(f"http://admin:{password}@{host}/admin-ui/")
            wait = WebDriverWait(driver, 20)
            wait.until(lambda d: _field(d, "Username").is_displayed())
            _field(driver, "Username").send_keys("admin")
            _field(driver, "Password").send_keys(password)
            driver.find_element(By.XPATH, "//button[normalize-space()='Connect']").click()
            # The app bar's status line: CONNECTED (the login succeeded), not DISCONNECTED.
            wait.until(lambda d: "CONNECTED" in d.find_element(By.TAG_NAME, "header").text.split())
            # The dashboard: clients by transport, summed over both instances' server_stats. The root
            # clients (websocket) plus the UI's own socket, and any socket the UI's first, refused
            # connect left open until its ping timeout: at least ROOT_CLIENTS + 1.
            wait.until(lambda d: _dashboard_clients(d) >= ROOT_CLIENTS + 1)
            # Namespaces are exact: the root clients on "/", the UI alone on its namespace.
            wait.until(lambda d: _namespace_sockets(d, "/") == ROOT_CLIENTS and _namespace_sockets(d, NAMESPACE) == 1)
            REPORTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(REPORTS / "admin-ui-dashboard.png"))
            # The Servers page, reached inside the app (a reload would log the UI out: python-socketio's
            # admin side keeps no session): one row per instance, relayed through Redis.
            driver.execute_script("location.hash = '#/servers/'")
            wait.until(lambda d: len(_servers_clients(d)) == 2 and sum(_servers_clients(d)) >= ROOT_CLIENTS + 1)
            driver.save_screenshot(str(REPORTS / "admin-ui-servers.png"))
            assert Path(REPORTS / "admin-ui-dashboard.png").stat().st_size > 10_000
    finally:
        for c in clients:
            c.disconnect()
