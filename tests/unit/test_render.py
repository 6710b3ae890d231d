"""The renderer: every template renders from the role defaults, selections show up, errors name things."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from siokit import planner
from siokit.render import ROOT, TEMPLATES, RenderError, render_all

BASE: dict[str, Any] = {
    "siokit_redis_password": "pw",
    "siokit_admin_secret": "adm",
    "siokit_redis_exporter_password": "xpw",
    "siokit_redis_host": "10.0.0.5",
    "nginx_upstream_servers": ["10.0.0.2:8001", "10.0.0.2:8002", "10.0.0.3:8001"],
    "siokit_plan_input": {
        "sockets": 160000,
        "app_hosts": 2,
        "source_ips": 4,
        "app": {"cores": 2, "memory_gib": 24, "nofile_hard": 20000},
    },
}


def render(tmp_path: Path, **extra: Any) -> dict[str, str]:
    render_all({**BASE, **extra}, tmp_path)
    return {spec.output: (tmp_path / spec.output).read_text() for spec in TEMPLATES}


def test_every_template_renders_from_defaults(tmp_path: Path) -> None:
    out = render(tmp_path)
    assert set(out) == {spec.output for spec in TEMPLATES}
    for name, text in out.items():
        assert text.endswith("\n"), name
        assert "{{" not in text and "{%" not in text, name
        if not name.endswith(".json"):  # JSON has no comments: the plan document says what it is itself
            assert "Managed by siokit" in text, name


def test_the_plan_file_is_the_plan_document(tmp_path: Path) -> None:
    """/etc/siokit/plan.json comes from templates/ like every other managed file: the plan, as JSON."""
    document = json.loads(render(tmp_path)["siokit/plan.json"])
    assert document["schema_version"] == planner.SCHEMA_VERSION
    expected = planner.plan_from_mapping(BASE["siokit_plan_input"])
    assert planner.Plan.from_dict(document) == planner.Plan.from_dict(expected)


def role_tasks() -> list[tuple[Path, dict[str, Any]]]:
    """Every task of every role, blocks included."""

    def walk(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for task in items or []:
            out.append(task)
            for key in ("block", "rescue", "always"):
                out += walk(task.get(key) or [])
        return out

    files = sorted((ROOT / "ansible" / "roles").glob("*/tasks/*.yml"))
    return [(f, t) for f in files for t in walk(yaml.safe_load(f.read_text()))]


def test_roles_write_no_file_inline() -> None:
    """Every file a role manages comes from templates/ (so siokit render and the byte-identity test
    cover it); only the operator's own TLS certificate and key are written from a variable."""
    tasks = role_tasks()
    assert len(tasks) > 50, f"only {len(tasks)} role tasks found: the scan looks in the wrong place"
    inline, tls = [], []
    for path, task in tasks:
        copy = task.get("ansible.builtin.copy") or task.get("copy") or {}
        if not isinstance(copy, dict) or "content" not in copy:
            continue
        sources = {str(i.get("content")) for i in task.get("loop") or [] if isinstance(i, dict)}
        if copy["content"] == "{{ item.content }}" and sources == {
            "{{ nginx_tls_certificate_content }}",
            "{{ nginx_tls_certificate_key_content }}",
        }:
            tls.append(path)
        else:
            inline.append(f"{path.relative_to(ROOT)}: {task.get('name')}")
    assert not inline, "files written with copy: content: instead of a template:\n" + "\n".join(inline)
    assert len(tls) == 1, tls  # the one exception is still what this test thinks it is


def test_nginx_defaults(tmp_path: Path) -> None:
    out = render(tmp_path)
    site = out["nginx/siokit.conf"]
    assert "map $http_upgrade $connection_upgrade" in site
    assert "ip_hash;" in site
    assert site.count("server 10.0.0.") == 6  # the sticky upstream and the websocket one
    assert "location /socket.io" in site
    main = out["nginx/nginx.conf"]
    assert "worker_processes 21;" in main  # 2 x 160k x 1.25 fds / 19488 per worker
    assert "worker_rlimit_nofile 19560;" in main


@pytest.mark.parametrize(
    ("balance", "directive"),
    [("ip_hash", "ip_hash;"), ("hash_remote_addr", "hash $remote_addr consistent;"), ("least_conn", "least_conn;")],
)
def test_balance_selection(tmp_path: Path, balance: str, directive: str) -> None:
    site = render(tmp_path, nginx_balance=balance)["nginx/siokit.conf"]
    sticky = site.split("upstream siokit_app {", 1)[1].split("}", 1)[0]
    assert directive in sticky
    others = {"ip_hash;", "hash $remote_addr consistent;", "least_conn;"} - {directive}
    assert not any(o in sticky for o in others)


def test_direct_websocket_connects_get_their_own_upstream(tmp_path: Path) -> None:
    site = render(tmp_path, nginx_upstream_check="")["nginx/siokit.conf"]
    ws = site.split("upstream siokit_websocket {", 1)[1].split("}", 1)[0]
    assert "least_conn;" in ws and ws.count("server 10.0.0.") == 3
    assert '"websocket:"  siokit_websocket;' in site
    # With the check on (the default), new websockets go through @siokit_websocket, which checks the
    # upstream first.
    site = render(tmp_path)["nginx/siokit.conf"]
    assert 'if ($siokit_socketio_upstream = "siokit_websocket") {' in site
    named = site.split("location @siokit_websocket {", 1)[1].split("\n    }", 1)[0]
    assert "auth_request /siokit-upstream-check;" in named and "proxy_pass http://siokit_websocket;" in named
    assert "proxy_set_header Upgrade $http_upgrade;" in named and "limit_conn siokit_conn" in named
    check = site.split("location = /siokit-upstream-check {", 1)[1].split("\n    }", 1)[0]
    assert "internal;" in check and "proxy_pass http://siokit_websocket/livez;" in check
    assert "proxy_pass_request_headers off;" in check
    # The check's failed attempts reach the upstream-error log (a subrequest is not logged by default).
    # Under a map of its own: the subrequest shares the request's (cached) variables.
    assert "log_subrequest on;" in check and "siokit_upstream if=$siokit_check_failed;" in check
    unchecked = render(tmp_path, nginx_upstream_check="")["nginx/siokit.conf"]  # turned off
    assert "proxy_pass http://$siokit_socketio_upstream;" in unchecked and "auth_request" not in unchecked
    off = render(tmp_path, nginx_websocket_balance="")["nginx/siokit.conf"]
    assert "siokit_websocket" not in off and "proxy_pass http://siokit_app;" in off


def test_ping_settings_come_from_the_plan_and_nginx_outwaits_them(tmp_path: Path) -> None:
    plan_input = {**BASE["siokit_plan_input"], "ping_interval": 60, "ping_timeout": 25}
    out = render(tmp_path, siokit_plan_input=plan_input)
    assert "proxy_read_timeout 115s;" in out["nginx/siokit.conf"]
    assert "SIOKIT_PING_INTERVAL=60\nSIOKIT_PING_TIMEOUT=25\n" in out["uwsgi/siokit.env"]


def test_proxy_bind_spread_over_lb_addresses(tmp_path: Path) -> None:
    site = render(tmp_path, nginx_proxy_bind_addresses=["10.1.0.1", "10.1.0.2"])["nginx/siokit.conf"]
    assert 'split_clients "$remote_addr$remote_port" $siokit_proxy_source' in site
    assert "50.00%  10.1.0.1;" in site and "*  10.1.0.2;" in site
    assert "proxy_bind $siokit_proxy_source;" in site


def test_tls_optional(tmp_path: Path) -> None:
    assert "ssl_certificate" not in render(tmp_path)["nginx/siokit.conf"]
    site = render(tmp_path, nginx_tls_enabled=True)["nginx/siokit.conf"]
    assert "listen 443 ssl" in site


def test_units_carry_the_plan(tmp_path: Path) -> None:
    out = render(tmp_path)
    unit = out["systemd/siokit-uwsgi@.service"]
    assert "LimitNOFILE=18112" in unit
    assert "--set-ph port=%i" in unit
    assert "TimeoutStopSec=" in unit and "KillSignal=SIGTERM" in unit
    assert out["systemd/siokit.target"].count("Wants=siokit-uwsgi@") == 5
    assert "LimitNOFILE=20000" in out["systemd/nginx.service.d/siokit-limits.conf"]
    ini = out["uwsgi/siokit.ini"]
    assert "gevent = 17600" in ini and "processes = 1" in ini and "http-websockets = true" in ini


def test_missing_variable_is_named(tmp_path: Path) -> None:
    broken = {k: v for k, v in BASE.items() if k != "siokit_redis_password"}
    with pytest.raises(RenderError, match="siokit_redis_password"):
        render_all(broken, tmp_path)


def test_security_defaults(tmp_path: Path) -> None:
    out = render(tmp_path, siokit_host_address="10.0.0.2", inventory_hostname="lb1")
    ini, site = out["uwsgi/siokit.ini"], out["nginx/siokit.conf"]
    # instances on the private address, never every address
    assert "http-socket = 10.0.0.2:%(port)" in ini
    # /metrics and stub_status: loopback only unless monitoring networks are configured
    metrics = site.split("location = /metrics {", 1)[1].split("}", 1)[0]
    assert re.findall(r"allow (\S+);", metrics) == ["127.0.0.1/32", "::1/128"] and "deny all;" in metrics
    # the Host sent upstream is the validated one; other names go to a default server that closes them
    # The upstream check (on by default) adds the websocket location and the check's own.
    assert "$http_host;" not in site and site.count("proxy_set_header Host $host$siokit_host_port;") == 5
    unchecked = render(tmp_path, nginx_upstream_check="")["nginx/siokit.conf"]
    assert "$http_host;" not in unchecked
    assert unchecked.count("proxy_set_header Host $host$siokit_host_port;") == 3
    assert re.search(r"listen 80 default_server[^;]*;\s+return 444;", site)
    assert "server_name lb1 10.0.0.2 localhost 127.0.0.1;" in site
    assert '"~:80$"  ":80";' in site
    assert "siokit-hardening.conf" in str(out.keys())


def test_public_ports_and_tls_options(tmp_path: Path) -> None:
    out = render(
        tmp_path,
        nginx_tls_enabled=True,
        nginx_public_ports=[8080],
        nginx_tls_redirect_http=True,
        nginx_tls_listen="8443",
        nginx_tls_public_port="443",
        nginx_hsts_max_age=31536000,
    )
    site = out["nginx/siokit.conf"]
    assert re.findall(r'"~:(\d+)\$"', site) == ["80", "8443", "8080"]
    assert "return 301 https://$host$request_uri;" in site  # public HTTPS port 443: no port in the URL
    assert 'https    "max-age=31536000";' in site
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in site and "ssl_ciphers ECDHE-" in site
    assert ":AES128-SHA" not in site and "CBC" not in site


def test_redis_secrets_encoded_and_quoted(tmp_path: Path) -> None:
    out = render(tmp_path, siokit_redis_password='a@b:c/d "e\\f')
    env, conf = out["uwsgi/siokit.env"], out["redis/redis.conf"]
    assert "SIOKIT_MESSAGE_QUEUE=redis://siokit:a%40b%3Ac%2Fd%20%22e%5Cf@10.0.0.5:6379/0" in env
    user = 'user siokit on resetpass ">a@b:c/d \\"e\\\\f" resetkeys resetchannels &flask-socketio -@all +publish'
    assert user in conf
    assert "user default off" in conf and "requirepass" not in conf


@pytest.mark.parametrize(
    "name",
    [
        "app_instances",
        "app_async_cores",
        "nginx_worker_connections",
        "nginx_proxy_read_timeout",
        "loadgen_limit_nofile",
        "app_ping_interval",
    ],
)
def test_a_variable_behind_the_planners_back_is_refused(tmp_path: Path, name: str) -> None:
    """The plan role's list, refused by the renderer too, pointing at the planner input."""
    with pytest.raises(RenderError, match=rf"{name} is no longer a setting.*siokit_plan_input: "):
        render_all({**BASE, name: 7}, tmp_path)


def test_a_given_plan_document_is_checked_not_trusted(tmp_path: Path) -> None:
    from siokit.planner import PlanError

    doc = planner.plan_from_mapping({"sockets": 1000, "app": {"cores": 2, "memory_gib": 4, "nofile_hard": 20000}})
    out = render(tmp_path, siokit_plan=doc)
    assert f"gevent = {doc['uwsgi']['async_cores']}" in out["uwsgi/siokit.ini"]
    with pytest.raises(PlanError, match="schema_version"):
        render_all({**BASE, "siokit_plan": {**doc, "schema_version": 0}}, tmp_path)


def _notrack_ports(text: str) -> list[int]:
    m = re.search(r"elements = \{ ([^}]*) \}", text)
    assert m, text
    return [int(p) for p in m.group(1).split(", ")]


def test_the_conntrack_bypass_lists_the_kits_ports(tmp_path: Path) -> None:
    """Without an inventory: this host's listen port and the planned uWSGI ports; TLS and extras add theirs."""
    out = render(tmp_path)
    instances = json.loads(out["siokit/plan.json"])["uwsgi"]["instances_per_host"]
    assert _notrack_ports(out["siokit/notrack.nft"]) == [80, *range(8001, 8001 + instances)]
    text = render(
        tmp_path,
        nginx_listen="10.0.0.1:8080",
        nginx_tls_enabled=True,
        app_base_port=9001,
        tuning_conntrack_bypass_extra_ports=[6000, 8080],
    )["siokit/notrack.nft"]
    assert _notrack_ports(text) == [443, 6000, 8080, *range(9001, 9001 + instances)]
    # Both directions, in the raw hook (before conntrack's -200), and only the kit's own table.
    assert text.count("tcp dport @ports notrack") == 2 and text.count("tcp sport @ports notrack") == 2
    assert text.count("priority raw;") == 2 and "flush ruleset" not in text
