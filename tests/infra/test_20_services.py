"""Services active and enabled, every planned uWSGI instance running and listening."""

from __future__ import annotations

import json

import pytest
from conftest import (
    APP_TARGET,
    PATHS,
    REDIS_SERVICE,
    UWSGI_UNIT,
    planned_uwsgi_ports,
    read_plan,
    unit_prop,
    uwsgi_bind_address,
    uwsgi_client_address,
)


def assert_unit_up(host, unit: str) -> None:
    svc = host.service(unit)
    assert svc.is_running, f"{unit} is not active on {host.siokit_name}: {unit_prop(host, unit, 'ActiveState')}"
    assert svc.is_enabled, f"{unit} is not enabled on {host.siokit_name}"


@pytest.mark.group("lb")
def test_nginx_service(node):
    assert_unit_up(node, "nginx")


@pytest.mark.group("redis")
def test_redis_service(node):
    assert_unit_up(node, REDIS_SERVICE)


@pytest.mark.group("app")
def test_app_target(node):
    assert_unit_up(node, APP_TARGET)


@pytest.mark.group("app")
def test_planned_instances(node):
    ports = planned_uwsgi_ports(node)
    assert ports, "siokit.target wants no uWSGI instance"
    plan = read_plan(node)
    if plan is not None:
        assert len(ports) == plan["uwsgi"]["instances_per_host"]
    # no instance runs that the plan does not want (left over from a bigger plan)
    pattern = UWSGI_UNIT.format(port="*")
    running = node.run(f"systemctl list-units --plain --no-legend --state=active '{pattern}'").stdout
    extra = [
        line.split()[0]
        for line in running.splitlines()
        if line.split() and line.split()[0] not in {UWSGI_UNIT.format(port=p) for p in ports}
    ]
    assert not extra, f"instances running that siokit.target does not want: {extra}"


def check_instance(host, port: int) -> None:
    """One uWSGI instance: unit active and enabled, uwsgi listening on its port at the configured address."""
    unit = UWSGI_UNIT.format(port=port)
    assert_unit_up(host, unit)
    bind = uwsgi_bind_address(host)
    sock = host.socket(f"tcp://{bind}:{port}")
    assert sock.is_listening, f"nothing listens on {bind}:{port} on {host.siokit_name}"
    pid = unit_prop(host, unit, "MainPID")
    assert pid not in ("", "0"), f"{unit} has no main process"
    # the listener on this port is this instance: SIOKIT_INSTANCE_ID=%H:%i in the unit (ss -p may not
    # show process names in containers, /healthz does)
    r = host.run(f"curl -fsS -m 5 http://{uwsgi_client_address(host)}:{port}/healthz")
    assert r.rc == 0, f"instance {port}: /healthz failed: {r.stderr.strip()}"
    instance = json.loads(r.stdout).get("instance", "")
    assert instance.endswith(f":{port}"), f"port {port} answered as instance {instance!r}"


@pytest.mark.group("app")
def test_every_instance_listening(node):
    failures = []
    for port in planned_uwsgi_ports(node):
        try:
            check_instance(node, port)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


@pytest.mark.group("app")
def test_instances_answer_healthz(node):
    address = uwsgi_client_address(node)
    for port in planned_uwsgi_ports(node):
        r = node.run(f"curl -fsS -m 5 http://{address}:{port}/healthz")
        assert r.rc == 0, f"instance {port}: /healthz failed: {r.stderr}"
        assert '"status":"ok"' in r.stdout.replace(" ", ""), r.stdout
        # under uWSGI the app must run in gevent_uwsgi mode (Flask-SocketIO #1487, #1058)
        assert "gevent_uwsgi" in r.stdout, f"instance {port} not in gevent_uwsgi mode: {r.stdout}"
        assert '"message_queue":true' in r.stdout.replace(" ", ""), f"instance {port} has no message queue"


@pytest.mark.group("app")
def test_one_worker_per_instance(node):
    """Several uWSGI processes behind one port break Socket.IO sessions (Flask-SocketIO #439, #948)."""
    ini = node.file(PATHS["app_ini"]).content_string
    assert "processes = 1" in ini or "workers = 1" in ini, "uWSGI ini must run one worker per instance"
    assert "http-websockets = true" in ini


@pytest.mark.group("app")
def test_instances_not_on_every_address(node):
    """Only nginx may reach the instances: they listen on the private address, never on every one."""
    bind = uwsgi_bind_address(node)
    assert bind not in ("0.0.0.0", "::", "*"), f"{PATHS['app_ini']} binds every address ({bind})"
    for port in planned_uwsgi_ports(node):
        out = node.run(f"ss -Hltn 'sport = :{port}'").stdout
        listeners = [line.split()[3] for line in out.splitlines() if line.strip()]
        assert listeners, f"nothing listens on port {port}"
        wild = [x for x in listeners if x.rsplit(":", 1)[0] in ("*", "0.0.0.0", "[::]")]
        assert not wild, f"port {port} listens on every address: {listeners}"
