"""scripts/test-summary.py on JUnit reports written by pytest itself: a skip for a missing prerequisite
fails `make test`; only the skips its ALLOWED_SKIPS names pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = ROOT / "scripts" / "test-summary.py"

STAGE = """
import pytest

def test_passes():
    assert 1 + 1 == 2

def test_container_limit():
    pytest.skip("2 sysctl(s) from the plan cannot be set on app1: net.core.somaxconn (container)")
"""
MISSING_TOOL = """
import pytest

def test_needs_a_tool():
    pytest.skip("systemd-analyze missing")
"""


def junit(tmp_path: Path, stage: str, source: str, *, check: bool = True) -> None:
    test = tmp_path / f"test_{stage}.py"
    test.write_text(source)
    report = tmp_path / "reports" / f"{stage}.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", str(test)],
        cwd=tmp_path,
        capture_output=True,
        check=check,
    )


def summary(tmp_path: Path, *stages: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SUMMARY), str(tmp_path / "reports"), *stages]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_an_allowed_skip_passes(tmp_path: Path) -> None:
    junit(tmp_path, "unit", STAGE)
    r = summary(tmp_path, "unit")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "test: 1 passed, 0 failed, 1 skipped"


def test_a_skip_for_a_missing_prerequisite_fails(tmp_path: Path) -> None:
    junit(tmp_path, "unit", STAGE)
    junit(tmp_path, "integration", MISSING_TOOL)
    r = summary(tmp_path, "unit", "integration")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "integration: test_integration::test_needs_a_tool: systemd-analyze missing" in r.stderr
    assert r.stdout.splitlines()[-1] == "test: 1 passed, 0 failed, 2 skipped (1 skips not allowed)"


def test_a_missing_stage_fails(tmp_path: Path) -> None:
    junit(tmp_path, "unit", STAGE)
    r = summary(tmp_path, "unit", "converge-test")
    assert r.returncode == 1 and "converge-test: no report" in r.stderr, r.stdout + r.stderr


FAILING = """
def test_breaks():
    assert 2 + 2 == 5, "arithmetic moved"
"""


def test_a_failed_test_is_named(tmp_path: Path) -> None:
    junit(tmp_path, "cluster-test", FAILING, check=False)
    r = summary(tmp_path, "cluster-test")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed: cluster-test: test_cluster-test::test_breaks: AssertionError: arithmetic moved" in r.stderr
    assert r.stdout.splitlines()[-1] == "test: 0 passed, 1 failed, 0 skipped"
