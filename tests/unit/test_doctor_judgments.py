"""siokit doctor: each judgment fails on the broken value and passes on the healthy one."""

from __future__ import annotations

from pathlib import Path

from siokit.doctor import FAIL, INFO, PASS, Check, format_json, format_text
from siokit.doctor import hosts as hs

HEALTH = {"async_mode": "gevent_uwsgi", "websocket_driver": "EventDrivenUWSGIWebSocket", "monkey_patched": True}
PINS = {
    "python-engineio": "4.15.1",
    "python-socketio": "5.18.1",
    "flask-socketio": "5.6.0",
    "uwsgi": "2.0.31",
    "gevent": "25.9.1",
}


def test_spread_flags_an_instance_above_twice_the_mean() -> None:
    assert hs.judge_spread({"a:1": 100, "b:1": 110, "c:1": 90}).status == PASS
    bad = hs.judge_spread({"a:1": 900, "b:1": 50, "c:1": 50})
    assert bad.status == FAIL and "a:1 900" in bad.measured and "hash_remote_addr" in bad.fix
    assert hs.judge_spread({"a:1": 1, "b:1": 0}).status == INFO
    assert hs.judge_spread({}).status == FAIL


def test_subscribers_must_equal_running_instances() -> None:
    assert hs.judge_subscribers(10, 10).status == PASS
    assert hs.judge_subscribers(9, 10).status == FAIL
    assert hs.judge_subscribers(0, 0).status == FAIL  # nothing running is not healthy
    down = hs.judge_subscribers(None, 10, "redis.exceptions.ConnectionError: Connection refused.")
    assert down.status == FAIL and "Connection refused" in down.measured and "start Redis" in down.fix


def test_versions() -> None:
    assert hs.judge_versions(PINS, PINS, HEALTH, uwsgi_ssl=True).status == PASS
    old = hs.judge_versions({**PINS, "python-engineio": "4.2.0"}, PINS, HEALTH, uwsgi_ssl=True)
    assert old.status == FAIL and "4.2.1" in old.measured
    assert hs.judge_versions(PINS, PINS, HEALTH, uwsgi_ssl=False).status == FAIL
    assert hs.judge_versions(PINS, PINS, {**HEALTH, "async_mode": "gevent"}, uwsgi_ssl=True).status == FAIL
    assert hs.judge_versions(PINS, PINS, {**HEALTH, "monkey_patched": False}, uwsgi_ssl=True).status == FAIL
    drift = hs.judge_versions({**PINS, "python-socketio": "5.19.0"}, PINS, HEALTH, uwsgi_ssl=True)
    assert drift.status == FAIL and "5.19.0 is not the pinned 5.18.1" in drift.measured


def test_pinned_versions_read_constraints(tmp_path: Path) -> None:
    f = tmp_path / "c.txt"
    f.write_text("# pins\npython-engineio==4.15.1\nFlask_SocketIO==5.6.0 ; python_version>'3'\n")
    assert hs.pinned_versions(f) == {"python-engineio": "4.15.1", "flask-socketio": "5.6.0"}


def test_sysctls_raise_only_range_and_exact() -> None:
    planned = {
        "net.core.somaxconn": "65535",
        "net.ipv4.ip_local_port_range": "1024 65535",
        "net.ipv4.tcp_fin_timeout": "15",
    }
    ok = {
        "net.core.somaxconn": "131072",
        "net.ipv4.ip_local_port_range": "1024 65535",
        "net.ipv4.tcp_fin_timeout": "15",
    }
    writable = dict.fromkeys(planned, True)
    assert [c.status for c in hs.judge_sysctls("h", planned, ok, writable)] == [PASS]
    low = {**ok, "net.core.somaxconn": "4096", "net.ipv4.ip_local_port_range": "32768 60999"}
    (bad,) = hs.judge_sysctls("h", planned, low, writable)
    assert bad.status == FAIL and "somaxconn 4096" in bad.measured and "32768 60999" in bad.measured
    # In a container /proc/sys is read-only: a per-namespace key was set at creation and must hold...
    ro = {**writable, "net.core.somaxconn": False}
    (bad_ro,) = hs.judge_sysctls("h", planned, {**ok, "net.core.somaxconn": "4096"}, ro)
    assert bad_ro.status == FAIL and "somaxconn 4096" in bad_ro.measured and "container-sysctls" in bad_ro.fix
    # ...a host-wide key is the host kernel's, measured but not judged.
    host_wide = {**planned, "net.core.netdev_max_backlog": "65536"}
    live = {**ok, "net.core.netdev_max_backlog": "1000"}
    info = hs.judge_sysctls("h", host_wide, live, {**writable, "net.core.netdev_max_backlog": False})
    assert [c.status for c in info] == [PASS, INFO] and "netdev_max_backlog 1000" in info[1].measured


def test_nginx_timeouts_and_body_size() -> None:
    conf = "http {\n client_max_body_size 1m;\n location /socket.io {\n  proxy_read_timeout 300s;\n }\n}"
    assert hs.nginx_timeouts(conf, 120, 120, 100_000).status == PASS
    short = hs.nginx_timeouts(conf.replace("300s", "200s"), 120, 120, 100_000)
    assert short.status == FAIL and "proxy_read_timeout 200 s vs ping interval + timeout 240 s" in short.measured
    assert "ping settings" in short.fix and "client_max_body_size" not in short.fix
    big = hs.nginx_timeouts(conf, 25, 20, 2 * 1024**2)
    assert big.status == FAIL and "client_max_body_size 1048576 B vs max message 2097152 B" in big.measured
    assert "client_max_body_size >= 2097152" in big.fix and "proxy_read_timeout" not in big.fix


def test_report_formats() -> None:
    results = [Check("a", PASS, "fine"), Check("b", FAIL, "broken", "do this")]
    text = format_text(results)
    assert "fix: do this" in text and text.endswith("1 of 2 checks passed, 1 failed")
    assert '"ok": false' in format_json(results)
