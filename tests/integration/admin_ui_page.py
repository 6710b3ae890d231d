"""The Socket.IO Admin UI's pages as Chromium shows them: log in, read the counts.

Shared by the loopback test (tests/integration/test_admin_ui_browser.py) and the cluster's
(tests/infra/test_87_admin_ui.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

NAMESPACE = "/admin-ui"


def log_in(driver: Any, url: str, user: str, password: str, timeout: float = 20) -> Any:
    """Open the UI at `url`/admin-ui/ through nginx's basic auth and log in to the app's namespace;
    returns a WebDriverWait once the app bar says CONNECTED."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    parts = urlsplit(url)
    page = f"{parts.scheme}://{user}:{password}@{parts.netloc}/admin-ui/"
    # Basic auth for the static files: credentials in the URL of the top-level page.
    driver.get(page)
    # The UI keeps its connection settings in localStorage: server URL and namespace.
    driver.execute_script(
        "localStorage.setItem('server_url', arguments[0]); localStorage.setItem('namespace', arguments[1]);",
        url,
        NAMESPACE,
    )
    driver.get(page)
    # The UI re-renders its tables on every stats update: a row read between find and use is stale,
    # which only means "read again" (seen on the cluster: test_87 failed once on it).
    wait = WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda d: _field(d, "Username").is_displayed())
    _field(driver, "Username").send_keys(user)
    _field(driver, "Password").send_keys(password)
    driver.find_element(By.XPATH, "//button[normalize-space()='Connect']").click()
    # The app bar's status line: CONNECTED (the login succeeded), not DISCONNECTED.
    wait.until(lambda d: "CONNECTED" in d.find_element(By.TAG_NAME, "header").text.split())
    return wait


def _field(driver: Any, label: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, f"//label[normalize-space()='{label}']/following-sibling::input")


def servers_clients(driver: Any) -> list[int]:
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


def dashboard_clients(driver: Any) -> int:
    """WebSocket + HTTP long-polling clients on the UI's dashboard ("Clients" card), or 0."""
    from selenium.webdriver.common.by import By

    lines = [x.strip() for x in driver.find_element(By.TAG_NAME, "body").text.splitlines()]
    total = 0
    for label in ("WebSocket", "HTTP long-polling"):
        if label in lines and lines.index(label) + 1 < len(lines) and lines[lines.index(label) + 1].isdigit():
            total += int(lines[lines.index(label) + 1])
    return total


def namespace_sockets(driver: Any, namespace: str) -> int | None:
    """The "# of sockets" of a namespace on the dashboard's Namespaces card."""
    from selenium.webdriver.common.by import By

    for row in driver.find_elements(By.CSS_SELECTOR, "table tr"):
        cells = [c.text.strip() for c in row.find_elements(By.TAG_NAME, "td")]
        if len(cells) == 2 and cells[0] == namespace and cells[1].isdigit():
            return int(cells[1])
    return None
