"""A person's view: the demo page in a real headless Chromium, two users chatting through nginx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver  # requirements-dev.txt: missing is an error, never a skip
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from siokit.lab.local import LocalStack

from .chromium import REPORTS, chromium

pytestmark = pytest.mark.integration


@pytest.fixture
def browsers() -> Iterator[list[webdriver.Chrome]]:
    with chromium() as alice, chromium() as bob:
        yield [alice, bob]


def _text(driver: webdriver.Chrome, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def _connect(driver: webdriver.Chrome, url: str, nickname: str) -> None:
    driver.get(url)
    driver.find_element(By.ID, "nickname").send_keys(nickname)
    driver.find_element(By.CSS_SELECTOR, "#connect-form button").click()
    WebDriverWait(driver, 15).until(lambda d: _text(d, "state") == "connected")
    # The JS client starts on long-polling and upgrades: the page must end on websocket.
    WebDriverWait(driver, 15).until(lambda d: _text(d, "transport") == "websocket")
    WebDriverWait(driver, 15).until(lambda d: _text(d, "instance").startswith("local:"))


def _join(driver: webdriver.Chrome, room: str) -> None:
    driver.find_element(By.ID, "room").send_keys(room)
    driver.find_element(By.CSS_SELECTOR, "#room-form button").click()
    WebDriverWait(driver, 10).until(
        lambda d: room in [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#target option")]
    )


def test_two_people_chat_in_a_room_through_nginx(stack: LocalStack, browsers: list[webdriver.Chrome]) -> None:
    alice, bob = browsers
    _connect(alice, stack.url + "/", "alice")
    _connect(bob, stack.url + "/", "bob")
    # The JS client is served by the kit itself, not a CDN.
    scripts = [s.get_attribute("src") for s in alice.find_elements(By.TAG_NAME, "script")]
    assert any(s.startswith(stack.url + "/static/vendor/socket.io") for s in scripts), scripts
    _join(alice, "lobby")
    _join(bob, "lobby")
    alice.find_element(By.ID, "target").send_keys("lobby")
    alice.find_element(By.ID, "text").send_keys("hello from alice")
    alice.find_element(By.CSS_SELECTOR, "#chat-form button").click()
    WebDriverWait(bob, 10).until(lambda d: "hello from alice" in _text(d, "log"))
    REPORTS.mkdir(exist_ok=True)
    bob.save_screenshot(str(REPORTS / "demo-bob.png"))
    errors = [e for e in bob.get_log("browser") if e.get("level") == "SEVERE" and "favicon.ico" not in e["message"]]
    assert not errors, errors
