"""siokit doctor's client-side checks against the real loopback stack, healthy and then broken.

Each break edits the rendered nginx config the way an operator's mistake would, reloads nginx, checks
that doctor fails the right check (exit 1), and restores the config.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import pytest

from siokit.commands.doctor import main as doctor
from siokit.lab.local import LocalStack, _nginx_cmd, down

from .conftest import start_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    tmp = tmp_path_factory.mktemp("doctor-stack")
    s = start_stack(tmp, "ip_hash")
    yield s
    down(tmp)


@contextlib.contextmanager
def nginx_edited(stack: LocalStack, old: str, new: str) -> Iterator[None]:
    conf = stack.rendered / "nginx" / "siokit.conf"
    original = conf.read_text()
    assert old in original, f"{old!r} not in the rendered config"
    try:
        conf.write_text(original.replace(old, new))
        _reload(stack)
        yield
    finally:
        conf.write_text(original)
        _reload(stack)


def _reload(stack: LocalStack) -> None:
    subprocess.run([*_nginx_cmd(stack), "-s", "reload"], check=True, capture_output=True)
    time.sleep(1.5)  # old workers finish; new ones take the listening socket


def _doctor(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    rc = doctor(["--url", stack.url])
    lines = capsys.readouterr().out.splitlines()
    status = {}
    for line in lines[:-1]:
        if not line.startswith(" "):
            word, _, rest = line.partition("  ")
            status[rest.strip().split("  ")[0]] = word.strip()
    return rc, status


def test_healthy_stack_passes_every_client_check(own_stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    rc, status = _doctor(own_stack, capsys)
    assert status == {"websocket upgrade": "PASS", "sticky polling": "PASS", "allowed origins": "PASS"}
    assert rc == 0


def test_missing_upgrade_headers_are_caught(own_stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    with nginx_edited(own_stack, "proxy_set_header Upgrade $http_upgrade;", ""):
        rc, status = _doctor(own_stack, capsys)
    assert rc == 1
    assert status["websocket upgrade"] == "FAIL"


def test_a_non_sticky_upstream_is_caught(own_stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    conf = (own_stack.rendered / "nginx" / "siokit.conf").read_text()
    sticky = "ip_hash;" if "ip_hash;" in conf else "hash $remote_addr consistent;"
    with nginx_edited(own_stack, sticky, ""):  # round robin: polls alternate between the instances
        rc, status = _doctor(own_stack, capsys)
    assert rc == 1
    assert status["sticky polling"] == "FAIL"


def test_bad_url_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor(["--url", "ftp://x"]) == 2
    assert "--url must be http(s)://host[:port]" in capsys.readouterr().err
