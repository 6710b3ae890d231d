"""Bad variables stop ansible/site.yml before anything changes, with a message naming them.

The inventory is throwaway: one host that need not exist (connection local, never reached
for a change): the checks run in the first two plays, which only read. `--check` and a tag no
task carries (only the `always` plays run) make sure nothing could change even if they did not.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
GROUPS = ("lb", "app", "redis", "loadgen")


def preflight(
    tmp_path: Path, host_vars: dict[str, Any], groups: tuple[str, ...] = GROUPS
) -> subprocess.CompletedProcess[str]:
    """site.yml's checks only (--check, preflight tags) on one local throwaway host in `groups`."""
    host = {"ansible_connection": "local", "ansible_python_interpreter": str(BIN / "python"), **host_vars}
    inventory = {"all": {"hosts": {"throwaway": host}, "children": {g: {"hosts": {"throwaway": {}}} for g in groups}}}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg")}
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(path), "ansible/site.yml", "--check", "--tags", "siokit-preflight"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def run_site(tmp_path: Path, host_vars: dict[str, Any], groups: tuple[str, ...] = GROUPS) -> str:
    r = preflight(tmp_path, host_vars, groups)
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"site.yml accepted {host_vars} / groups {groups}:\n{out}"
    assert not re.search(r"changed=[1-9]", out), out
    return out


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"app_base_port": "eighty"}, r"app_base_port must be a port number \(1-65535\), got \"eighty\""),
        ({"siokit_redis_port": "six"}, r"argument 'siokit_redis_port' is of type str"),
        ({"nginx_listen": "eighty"}, r"nginx_listen must be PORT or ADDRESS:PORT, got \"eighty\""),
        ({"siokit_target_sockets": -160000}, r"siokit_target_sockets must be a positive whole number of sockets"),
        ({"siokit_target_sockets": "lots"}, r"argument 'siokit_target_sockets' is of type str"),
        ({"siokit_loadgen_source_ips": 0}, r"siokit_loadgen_source_ips must be a whole number >= 1"),
        ({"app_fanout_core_wait_ms": -1}, r"app_fanout_core_wait_ms must be a number of milliseconds >= 0"),
        ({"redis_maxclients": "many"}, r"argument 'redis_maxclients' is of type str"),
        ({"nginx_balance": "round_robin"}, r"nginx_balance.*(must be one of|choices)"),
        ({"app_instances": 4}, r"app_instances is no longer a setting.*input: \{uwsgi_instances_per_host: N"),
        ({"app_async_cores": 1000}, r"app_async_cores is no longer a setting.*siokit_plan_input: \{async_cores: N"),
        ({"nginx_worker_processes": 2}, r"nginx_worker_processes is no longer a setting.*\{nginx_workers: N"),
        ({"nginx_proxy_read_timeout": 60}, r"nginx_proxy_read_timeout is no longer a setting.*\{ping_interval: N"),
        ({"loadgen_limit_nofile": 1024}, r"loadgen_limit_nofile is no longer a setting.*loadgen_workers_per_source_ip"),
        ({"tuning_sysctls": {"net.core.somaxconn": 128}}, r"tuning_sysctls is no longer a setting"),
        (
            {"tuning_sysctls_extra": {"net.core.somaxconn": 128}},
            r"tuning_sysctls_extra sets net.core.somaxconn, which the plan sets",
        ),
        (
            {"siokit_plan_input": {"nginx_workers": 1}},
            r"impossible target: nginx_workers 1 is too few: 160000 clients x 2 connections x 1.25 spread = 400000",
        ),
        ({"siokit_plan_input": {"async_cores": 10}}, r"impossible target: async_cores 10 is too few"),
        ({"siokit_plan_input": {"pingInterval": 60}}, r"unknown planner input \['pingInterval'\]"),
        ({"app_ping_interval": 10}, r"app_ping_interval is no longer a setting.*siokit_plan_input: \{ping_interval: N"),
        ({"siokit_ping_timeout": 120}, r"siokit_ping_timeout is no longer a setting"),
        ({"app_virtualenv": "/srv/venv"}, r"app_virtualenv was renamed: set kit_virtualenv instead"),
        (
            {"siokit_plan_input": {"ping_timeout": 1, "ping_interval": 600}},
            r"siokit_plan: impossible target: ping_timeout 1 s is shorter than a broadcast",
        ),
        ({"nginx_server_name": "_"}, r"nginx_server_name must list the host names clients use"),
        ({"nginx_public_ports": ["http"]}, r"nginx_public_ports must hold port numbers, got \"http\""),
        ({"nginx_tls_public_port": "https"}, r"nginx_tls_public_port must be empty or a port number"),
        ({"nginx_monitoring_cidrs": ["everyone"]}, r"nginx_monitoring_cidrs must hold addresses or CIDRs"),
        ({"nginx_worker_shutdown_timeout": 0}, r"nginx_worker_shutdown_timeout must be a whole number of seconds >= 1"),
        ({"nginx_hsts_max_age": "a year"}, r"argument 'nginx_hsts_max_age' is of type str"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_bad_variable_is_named(tmp_path: Path, variables: dict[str, Any], message: str) -> None:
    out = run_site(tmp_path, variables)
    assert re.search(message, out), out


@pytest.mark.parametrize("missing", GROUPS)
def test_missing_group_is_named(tmp_path: Path, missing: str) -> None:
    out = run_site(tmp_path, {}, tuple(g for g in GROUPS if g != missing))
    assert f"inventory group '{missing}' is missing or empty" in out, out
    # the first play stops the run: no host was even contacted
    assert "Gather hardware" not in out


def test_good_variables_pass_the_same_checks(tmp_path: Path) -> None:
    """The control: the same run with valid variables gets through the checks."""
    r = preflight(tmp_path, {"siokit_target_sockets": 20000})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "changed=0" in r.stdout
