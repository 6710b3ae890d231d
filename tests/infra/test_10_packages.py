"""Packages and the app's virtualenv: what the roles install, on the hosts that need it."""

from __future__ import annotations

import json
import re

import pytest
from conftest import PATHS, REDIS_PACKAGE


@pytest.mark.group("lb", "app", "redis", "loadgen")
@pytest.mark.parametrize("package", ["systemd", "python3", "sudo"])
def test_base_packages(node, package):
    assert node.package(package).is_installed, f"{package} missing on {node.siokit_name}"


@pytest.mark.group("lb")
def test_nginx_installed(node):
    # nginx (bookworm) or nginx-light/nginx-core: the nginx binary from a Debian package
    assert any(node.package(p).is_installed for p in ("nginx", "nginx-light", "nginx-core")), "no nginx package"
    version = node.run("nginx -v 2>&1").stdout
    m = re.search(r"nginx/(\d+)\.(\d+)", version)
    assert m and (int(m.group(1)), int(m.group(2))) >= (1, 4), f"nginx >= 1.4 needed for websockets: {version}"


@pytest.mark.group("redis")
def test_redis_installed(node):
    assert node.package(REDIS_PACKAGE).is_installed


@pytest.mark.group("app", "loadgen")
def test_virtualenv_has_the_kit(node):
    py = f"{PATHS['app_venv']}/bin/python"
    assert node.file(py).exists, f"{py} missing"
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({p: m.version(p) for p in "
        "['flask', 'flask-socketio', 'python-socketio', 'python-engineio', 'gevent', 'gevent-websocket']}))"
    )
    r = node.run(f"{py} -c {code!r}")
    assert r.rc == 0, f"packages missing from the virtualenv: {r.stderr}"
    versions = json.loads(r.stdout)
    engineio = tuple(int(x) for x in re.findall(r"\d+", versions["python-engineio"])[:3])
    # python-engineio < 4.2.1 stalls near 1024 sockets under gevent_uwsgi (select())
    assert engineio >= (4, 2, 1), f"python-engineio {versions['python-engineio']} < 4.2.1"


@pytest.mark.group("app")
def test_uwsgi_built_with_ssl(node):
    """Without SSL uWSGI cannot do the websocket handshake and clients stay on long-polling (unbit/uwsgi #744)."""
    uwsgi = f"{PATHS['app_venv']}/bin/uwsgi"
    assert node.file(uwsgi).exists, f"{uwsgi} missing"
    linked = node.run(f"ldd {uwsgi}").stdout
    assert "libssl" in linked, f"{uwsgi} is not linked against libssl:\n{linked}"
