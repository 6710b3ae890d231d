"""The kit's Prometheus alert rules: promtool checks them and every rule fires in `promtool test rules`.

Fails (never skips) without promtool: scripts/deps.sh installs Debian's `prometheus` package.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "templates" / "prometheus" / "siokit-alerts.yml"
RULE_TESTS = Path(__file__).resolve().parent / "alerts" / "siokit-alerts.test.yml"


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: run scripts/deps.sh (Debian package 'prometheus')"
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120, check=False)


def _alert_names() -> list[str]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return [rule["alert"] for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alert_names())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = _run("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_case() -> None:
    doc: dict[str, Any] = yaml.safe_load(RULE_TESTS.read_text())
    firing = {
        case["alertname"] for test in doc["tests"] for case in test.get("alert_rule_test", []) if case.get("exp_alerts")
    }
    names = _alert_names()
    assert len(names) >= 7
    assert set(names) <= firing, f"alerts never seen firing: {sorted(set(names) - firing)}"
