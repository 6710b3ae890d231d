"""The files Ansible's `template` module writes are byte-identical to `siokit render`'s.

Both render the same templates/ with the same variables: the roles' defaults, the kit-wide
group_vars, and one vars file (with a plan computed by the planner through the filter plugin's
own entry point). Ansible runs a play on localhost (connection local) that templates every file
of siokit.render.TEMPLATES into a temp dir; `siokit render` writes the same list into another.
Several variable sets exercise the templates' branches (TLS, proxy_bind, balancing modes).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
sys.path.insert(0, str(ROOT))

from siokit import render  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "siokit_filter_plugin", ROOT / "ansible" / "filter_plugins" / "siokit.py"
)
assert _spec and _spec.loader
_plugin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_plugin)
siokit_plan = _plugin.siokit_plan

FACTS = {"cores": 2, "memory_gib": 23.4, "nofile_hard": 20000, "somaxconn": 4096}
BASE = {
    # '@', ':', '/' and '"' in the password: percent-encoding and redis.conf quoting must agree too
    "siokit_redis_password": 's3cret@Redis:pw/"x',
    "siokit_admin_secret": "admin-s3cret",
    "siokit_redis_exporter_password": 'exp0rter"pw\\',
    "siokit_admin_ui_password": "admin-ui-pw",
    "siokit_admin_ui_salt": "admin-ui-salt",
    "siokit_redis_host": "10.0.0.13",
    "siokit_host_address": "10.0.0.11",
    # inventory_hostname differs between the two sides (Ansible: localhost; siokit: this machine)
    "nginx_server_name": "lb1.example.net 10.0.0.11 localhost 127.0.0.1",
    # What the plan role measures on a host (set_fact), given to both sides alike.
    "siokit_nofile_hard": 20000,
    "siokit_in_container": True,
}
# Rendered once per item of a loop (the tuning role's drop-ins for other units): the loop variable
# is given to both sides.
ITEM_TEMPLATES = {
    "systemd/unit-limits.conf.j2": {"tuning_dropin": {"unit": "memcached.service", "limit": 65536}},
}
CASES = {
    "defaults": {},
    "tls_bind_least_conn": {
        "nginx_tls_enabled": True,
        "nginx_tls_redirect_http": True,
        "nginx_hsts_max_age": 31536000,
        "nginx_public_ports": [8080],
        "nginx_tls_public_port": "8443",
        "nginx_monitoring_cidrs": ["10.0.0.0/24"],
        "nginx_balance": "least_conn",
        "nginx_proxy_bind_addresses": ["10.0.0.10", "10.0.0.20", "10.0.0.30"],
        "nginx_upstream_servers": ["10.0.0.11:8001", "10.0.0.11:8002", "10.0.0.12:8001"],
        "nginx_access_log": "",
        "nginx_temp_dir": "/var/cache/nginx/siokit",
        "app_request_logging": True,
        "app_systemd_hardening": False,
        "redis_bind_addresses": ["127.0.0.1", "10.0.0.13"],
        # What the monitoring role derives with siokit_scrape_jobs (siokit/scrape.py).
        "monitoring_scrape_jobs": [
            {
                "job_name": "siokit",
                "static_configs": [{"targets": ["10.0.0.11:8001", "10.0.0.11:8002"], "labels": {"host": "app1"}}],
            },
            {
                "job_name": "node",
                "static_configs": [
                    {"targets": ["10.0.0.10:9100"], "labels": {"host": "lb1"}},
                    {"targets": ["10.0.0.11:9100"], "labels": {"host": "app1"}},
                ],
            },
        ],
        "nginx_status_listen": "10.0.0.10:8081",
        "monitoring_retention": "30d",
        "siokit_admin_ui_enabled": True,
    },
    "hash_one_bind_no_status": {
        "siokit_in_container": False,
        "tuning_loadgen_source_addresses": ["10.0.1.10/32", "10.0.2.10/32"],
        "tuning_source_ip_interface": "ens3",
        "loadgen_target_url": "http://lb.example.net:8080",
        "nginx_balance": "hash_remote_addr",
        "nginx_proxy_bind_addresses": ["10.0.0.10"],
        "nginx_upstream_servers": ["10.0.0.11:8001"],
        "nginx_status_listen": "",
        "nginx_user": "",
        "kit_virtualenv": "",
        "app_cors_origins": "*",
    },
}


def _plan(case: str) -> dict:
    sockets = {"defaults": 160000, "tls_bind_least_conn": 40000, "hash_one_bind_no_status": 2000}[case]
    return siokit_plan(
        {"sockets": sockets, "app_hosts": 2, "source_ips": 4, "app": FACTS, "lb": FACTS, "loadgen": FACTS}
    )


def _play(case: str, vars_file: Path, outdir: Path) -> dict:
    vars_files = sorted(str(p) for p in (ROOT / "ansible" / "group_vars" / "all").glob("*.yml"))
    vars_files += sorted(str(p) for p in (ROOT / "ansible").glob("roles/*/defaults/main.yml"))
    vars_files.append(str(vars_file))
    items = [{"src": str(render.TEMPLATES_DIR / s.source), "dest": str(outdir / s.output)} for s in render.TEMPLATES]
    per_item = [
        {
            "name": f"Template {source} for one loop item",
            "ansible.builtin.template": {
                "src": str(render.TEMPLATES_DIR / source),
                "dest": str(outdir / "items" / source.removesuffix(".j2")),
                "mode": "0644",
            },
            "vars": item_vars,
        }
        for source, item_vars in ITEM_TEMPLATES.items()
    ]
    return {
        "name": f"Render every template with Ansible's template module ({case})",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": vars_files,
        "tasks": [
            {
                "name": "Create the output directories",
                "ansible.builtin.file": {"path": "{{ item.dest | dirname }}", "state": "directory", "mode": "0755"},
                "loop": items,
            },
            {
                "name": "Create the directories of the per-item files",
                "ansible.builtin.file": {"path": str(outdir / "items/systemd"), "state": "directory", "mode": "0755"},
            },
            {
                "name": "Template",
                "ansible.builtin.template": {"src": "{{ item.src }}", "dest": "{{ item.dest }}", "mode": "0644"},
                "loop": items,
            },
            *per_item,
        ],
    }


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every case rendered by Ansible (one ansible-playbook run) and by `siokit render`."""
    tmp = tmp_path_factory.mktemp("render-identity")
    plays = []
    for case in sorted(CASES):
        variables = {**BASE, **CASES[case], "siokit_plan": _plan(case)}
        vars_file = tmp / case / "vars.yml"
        vars_file.parent.mkdir()
        vars_file.write_text(yaml.safe_dump(variables))
        plays.append(_play(case, vars_file, tmp / case / "ansible"))
        run = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "siokit.cli", "render", str(vars_file), str(tmp / case / "siokit")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        for source, item_vars in ITEM_TEMPLATES.items():
            out = tmp / case / "siokit" / "items" / source.removesuffix(".j2")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(render.render_template(source, render.build_vars({**variables, **item_vars})))
    playbook = tmp / "render.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={VENV_BIN / 'python'}",
            str(playbook),
        ],
        cwd=ROOT / "ansible",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return tmp


@pytest.mark.parametrize("case", sorted(CASES))
def test_ansible_template_equals_siokit_render(rendered: Path, case: str) -> None:
    for spec in render.TEMPLATES:
        a = (rendered / case / "ansible" / spec.output).read_bytes()
        s = (rendered / case / "siokit" / spec.output).read_bytes()
        assert a == s, f"{spec.source}: Ansible and siokit render differ ({len(a)} vs {len(s)} bytes)"
        assert a.strip(), f"{spec.source} rendered empty"
    for source in ITEM_TEMPLATES:
        out = Path("items") / source.removesuffix(".j2")
        a, s = (rendered / case / "ansible" / out).read_bytes(), (rendered / case / "siokit" / out).read_bytes()
        assert a == s, f"{source}: Ansible and siokit render differ ({len(a)} vs {len(s)} bytes)"
        assert b"LimitNOFILE=20000" in a, a  # 65536 capped at the host's hard limit


def test_cases_exercise_the_branches(rendered: Path) -> None:
    site = {case: (rendered / case / "siokit" / "nginx" / "siokit.conf").read_text() for case in CASES}
    assert "ip_hash;" in site["defaults"]
    assert "split_clients" in site["tls_bind_least_conn"] and "ssl_certificate" in site["tls_bind_least_conn"]
    assert "hash $remote_addr consistent;" in site["hash_one_bind_no_status"]
    assert "proxy_bind 10.0.0.10;" in site["hash_one_bind_no_status"]
    assert "stub_status" not in site["hash_one_bind_no_status"]
    # The files the roles used to write inline: their branches and the values they carry.
    redis = {case: (rendered / case / "siokit" / "systemd/redis-server.service.d/siokit-limits.conf").read_text()
             for case in CASES}  # fmt: skip
    assert "PrivateUsers=false" in redis["defaults"] and "PrivateUsers" not in redis["hash_one_bind_no_status"]
    assert "LimitNOFILE=10032" in redis["defaults"]  # redis_maxclients + 32, under the hard limit
    ips = (rendered / "hash_one_bind_no_status" / "siokit" / "systemd/siokit-source-ips.service").read_text()
    assert "ExecStart=/usr/sbin/ip address replace 10.0.2.10/32 dev ens3" in ips
    load = (rendered / "hash_one_bind_no_status" / "siokit" / "systemd/siokit-load.env").read_text()
    assert "--url http://lb.example.net:8080 --bind 10.0.1.10,10.0.2.10 --plan /etc/siokit/plan.json " in load
    prometheus = (rendered / "tls_bind_least_conn" / "siokit" / "prometheus/prometheus.yml").read_text()
    assert '- "10.0.0.11:8002"' in prometheus and 'host: "lb1"' in prometheus
    assert "  []" in (rendered / "defaults" / "siokit" / "prometheus/prometheus.yml").read_text()
    nginx_exporter = (rendered / "tls_bind_least_conn" / "siokit" / "default/prometheus-nginx-exporter").read_text()
    assert "http://10.0.0.10:8081/nginx_status" in nginx_exporter
    limits = {case: (rendered / case / "siokit" / "systemd/prometheus.service.d/siokit-limits.conf").read_text()
              for case in CASES}  # fmt: skip
    assert "PrivateUsers=false" in limits["defaults"] and "PrivateUsers" not in limits["hash_one_bind_no_status"]
    default_load = (rendered / "defaults" / "siokit" / "systemd/siokit-load.env").read_text()
    assert "--url http://10.0.0.11:80 --bind 10.0.0.11 --plan /etc/siokit/plan.json " in default_load
