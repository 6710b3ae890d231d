"""Rendered configuration passes the real tools: nginx -t and systemd-analyze verify."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from siokit.render import render_all

pytestmark = pytest.mark.integration

NGINX = shutil.which("nginx", path="/usr/sbin:/usr/bin") or "nginx"
ANALYZE = shutil.which("systemd-analyze", path="/usr/bin:/bin")


def deployment_vars(tmp: Path, **extra: Any) -> dict[str, Any]:
    """Deployment-shaped variables with the paths nginx/systemd check moved into tmp."""
    return {
        "siokit_redis_password": "pw",
        "siokit_admin_secret": "adm",
        "siokit_redis_host": "10.0.0.5",
        "nginx_upstream_servers": ["10.0.0.2:8001", "10.0.0.3:8001"],
        "nginx_pid_file": str(tmp / "nginx.pid"),
        "nginx_error_log": str(tmp / "error.log"),
        "nginx_access_log": str(tmp / "access.log"),
        "nginx_upstream_error_log": str(tmp / "upstream-errors.log"),
        "nginx_site_path": str(tmp / "nginx" / "siokit.conf"),
        "app_uwsgi_binary": str(Path(sys.prefix) / "bin" / "uwsgi"),
        "loadgen_siokit_binary": str(Path(sys.prefix) / "bin" / "python"),
        "siokit_plan_input": {
            "sockets": 160000,
            "app_hosts": 2,
            "source_ips": 4,
            "app": {"cores": 2, "memory_gib": 24, "nofile_hard": 20000},
        },
        **extra,
    }


def self_signed(tmp: Path) -> tuple[Path, Path]:
    crt, key = tmp / "t.crt", tmp / "t.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=siokit-test",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"nginx_balance": "hash_remote_addr", "nginx_proxy_bind_addresses": ["127.0.0.1", "127.0.0.2"]},
        {"nginx_balance": "least_conn", "nginx_proxy_bind_addresses": ["127.0.0.1"], "nginx_status_listen": ""},
        {"nginx_tls_enabled": True},
        {"siokit_admin_ui_enabled": True, "siokit_admin_ui_password": "pw", "siokit_admin_ui_salt": "salt"},
    ],
    ids=["ip_hash", "hash+split_clients", "least_conn+bind", "tls", "admin_ui"],
)
def test_nginx_accepts_rendered_config(tmp_path: Path, extra: dict[str, Any]) -> None:
    if extra.get("nginx_tls_enabled"):
        crt, key = self_signed(tmp_path)
        extra = {**extra, "nginx_tls_certificate": str(crt), "nginx_tls_certificate_key": str(key)}
    render_all(deployment_vars(tmp_path, **extra), tmp_path)
    result = nginx_t(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_nginx_rejects_a_broken_render(tmp_path: Path) -> None:
    """The check can fail: a config nginx does not accept is caught."""
    render_all(deployment_vars(tmp_path, nginx_proxy_buffer_size="many"), tmp_path)
    result = nginx_t(tmp_path)
    assert result.returncode != 0


def nginx_t(tmp: Path) -> subprocess.CompletedProcess[str]:
    conf = tmp / "nginx" / "nginx.conf"
    return subprocess.run(
        [NGINX, "-t", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)], capture_output=True, text=True
    )


def analyze(unit_dir: Path, *units: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE, "systemd-analyze missing: make deps installs systemd"  # a failure, never a skip
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", *(str(unit_dir / u) for u in units)],
        capture_output=True,
        text=True,
        cwd=unit_dir,
    )


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    render_all(deployment_vars(tmp_path), tmp_path)
    units = tmp_path / "systemd"
    result = analyze(
        units, "siokit-uwsgi@8001.service", "siokit.target", "siokit-load.service", "siokit-nginx-errors.service"
    )
    # verify exits 0 on unknown keys, so its warnings count as failures too.
    problems = [
        line
        for line in result.stderr.splitlines()
        if "siokit" in line and ("Unknown" in line or "rror" in line or "not executable" in line)
    ]
    assert result.returncode == 0, result.stderr
    assert not problems, result.stderr


def test_systemd_analyze_catches_a_bad_unit(tmp_path: Path) -> None:
    (tmp_path / "bad.service").write_text("[Service]\nLimitNOFILEE=5\nExecStart=/bin/true\n")
    result = analyze(tmp_path, "bad.service")
    assert "Unknown key" in result.stderr
