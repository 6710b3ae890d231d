"""The monitoring role's files as `siokit render` writes them: Prometheus on the private address, the
scrape jobs of siokit/scrape.py, a configuration promtool accepts with the kit's alert rules, the
exporters bound to the private address, the Redis exporter's password quoted and off the command line.

Fails (never skips) without promtool: scripts/deps.sh installs Debian's `prometheus` package.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from siokit import scrape
from siokit.render import COPIED, render_all

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "templates" / "prometheus" / "siokit-alerts.yml"
ADDRESSES = {"lb": "10.0.0.10", "app1": "10.0.0.11", "app2": "10.0.0.12", "redis": "10.0.0.13", "mon": "10.0.0.15"}
GROUPS = {"lb": ["lb"], "app": ["app1", "app2"], "redis": ["redis"], "loadgen": [], "monitor": ["mon"]}
JOBS = scrape.scrape_jobs(ADDRESSES, GROUPS, {"app1": [8001, 8002], "app2": [8001, 8002]}, scrape.ExporterPorts())
BASE: dict[str, Any] = {
    "siokit_redis_password": "pw",
    "siokit_admin_secret": "adm",
    "siokit_redis_exporter_password": 'x"y\\z',
    "siokit_redis_host": "10.0.0.13",
    "siokit_host_address": "10.0.0.15",
    "siokit_in_container": True,
    "siokit_nofile_hard": 20000,
    "monitoring_scrape_jobs": JOBS,
    # the repository's rules file, so promtool can read what rule_files names
    "monitoring_rules_file": str(RULES),
    "siokit_plan_input": {"sockets": 4000, "app_hosts": 2, "source_ips": 1,
                          "app": {"cores": 2, "memory_gib": 4, "nofile_hard": 20000}},
}  # fmt: skip


def _render(tmp_path: Path, **extra: Any) -> Path:
    render_all({**BASE, **extra}, tmp_path)
    return tmp_path


def test_prometheus_config_is_the_scrape_jobs_and_promtool_accepts_it(tmp_path: Path) -> None:
    out = _render(tmp_path)
    config = yaml.safe_load((out / "prometheus/prometheus.yml").read_text())
    assert config["scrape_configs"] == JOBS
    assert config["rule_files"] == [str(RULES)]
    targets = scrape.targets_by_job(config["scrape_configs"])
    assert targets["siokit"] == {"10.0.0.11:8001", "10.0.0.11:8002", "10.0.0.12:8001", "10.0.0.12:8002"}
    assert targets["node"] == {f"{a}:9100" for a in ADDRESSES.values()}
    assert targets["nginx"] == {"10.0.0.10:9113"} and targets["redis"] == {"10.0.0.13:9121"}
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run scripts/deps.sh (Debian package 'prometheus')"
    r = subprocess.run([promtool, "check", "config", str(out / "prometheus/prometheus.yml")],
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_promtool_refuses_a_config_whose_rules_are_missing(tmp_path: Path) -> None:
    """What the role's handler relies on: a broken reference fails the check before any reload."""
    out = _render(tmp_path, monitoring_rules_file=str(tmp_path / "absent.yml"))
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run scripts/deps.sh (Debian package 'prometheus')"
    r = subprocess.run([promtool, "check", "config", str(out / "prometheus/prometheus.yml")],
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode != 0, r.stdout + r.stderr


def test_everything_listens_on_the_private_address(tmp_path: Path) -> None:
    out = _render(tmp_path)
    assert "--web.listen-address=10.0.0.15:9090 " in (out / "default/prometheus").read_text()
    assert "--web.listen-address=10.0.0.15:9100 " in (out / "default/prometheus-node-exporter").read_text()
    nginx = (out / "default/prometheus-nginx-exporter").read_text()
    assert "-nginx.scrape-uri=http://127.0.0.1:8081/nginx_status " in nginx
    assert "-web.listen-address=10.0.0.15:9113" in nginx
    # a private stub_status address, or a bare port
    private = _render(tmp_path / "p", nginx_status_listen="10.0.0.10:8081")
    assert "http://10.0.0.10:8081/nginx_status" in (private / "default/prometheus-nginx-exporter").read_text()
    port = _render(tmp_path / "q", nginx_status_listen="8082")
    assert "http://127.0.0.1:8082/nginx_status" in (port / "default/prometheus-nginx-exporter").read_text()


def test_redis_exporter_password_quoted_and_off_the_command_line(tmp_path: Path) -> None:
    out = _render(tmp_path)
    env = (out / "default/prometheus-redis-exporter").read_text()
    assert 'REDIS_USER="siokit-exporter"' in env
    assert 'REDIS_PASSWORD="x\\"y\\\\z"' in env
    args = next(line for line in env.splitlines() if line.startswith("ARGS="))
    assert 'x\\"y' not in args and "password" not in args.lower()
    conf = (out / "redis/redis.conf").read_text()
    assert 'user siokit-exporter on resetpass ">x\\"y\\\\z" resetkeys resetchannels -@all +ping +info' in conf
    assert "+publish" not in conf.split("user siokit-exporter", 1)[1].splitlines()[0]


def test_prometheus_limits_capped_and_container_dropin(tmp_path: Path) -> None:
    out = _render(tmp_path)
    dropin = (out / "systemd/prometheus.service.d/siokit-limits.conf").read_text()
    assert "LimitNOFILE=20000" in dropin and "PrivateUsers=false" in dropin
    vm = _render(tmp_path / "vm", siokit_in_container=False, siokit_nofile_hard=1048576)
    dropin = (vm / "systemd/prometheus.service.d/siokit-limits.conf").read_text()
    assert "LimitNOFILE=32768" in dropin and "PrivateUsers" not in dropin


def test_siokit_render_writes_the_alert_rules_as_they_are(tmp_path: Path) -> None:
    """The rules file is copied, not rendered (its {{ $labels }} are Prometheus'): siokit render gives
    the same bytes the role's copy task installs."""
    out = _render(tmp_path)
    assert [spec.source for spec in COPIED] == ["prometheus/siokit-alerts.yml"]
    assert (out / "prometheus/rules/siokit-alerts.yml").read_bytes() == RULES.read_bytes()
    assert "{{ $labels.instance }}" in RULES.read_text()
