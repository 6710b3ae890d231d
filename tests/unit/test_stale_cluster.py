"""The kit's commands under stale state, with a fake `docker` (no daemon needed): `make verify`,
`make bench` and `make drills` without a running cluster say what to run in one line, and `up`
removes a half-present cluster and Molecule's stale state before creating it again.

The same cases against the real Docker daemon are in RELIABILITY.md (commands and output)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ["lb", "app1", "app2", "redis", "loadgen", "monitor"]

FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case "$1" in
  info) exit "${FAKE_INFO_RC:-0}" ;;
  ps) [ "${FAKE_INFO_RC:-0}" = 0 ] || exit 1; for n in $FAKE_RUNNING; do echo "$n"; done ;;
  container) for n in $FAKE_PRESENT; do [ "$n" = "$3" ] && exit 0; done; exit 1 ;;
  rm|network) exit 0 ;;
  *) echo "fake docker: unexpected $*" >&2; exit 3 ;;
esac
"""


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, str]:
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    state = tmp_path / "state"
    return {
        **os.environ,
        "DOCKER": str(docker),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "MOLECULE": "/bin/true",
        "SIOKIT_STATE_DIR": str(state),
        "FAKE_RUNNING": "",
        "FAKE_PRESENT": "",
    }


def _calls(env: dict[str, str]) -> list[str]:
    log = Path(env["FAKE_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def _cluster(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "cluster.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("running", "info_rc", "missing"),
    [
        ("", "0", "lb app1 app2 redis loadgen monitor missing"),
        ("redis loadgen monitor", "0", "lb app1 app2 missing"),
        ("", "1", "no Docker daemon answers"),
    ],
)
def test_verify_without_a_cluster_is_one_line(fake: dict[str, str], running: str, info_rc: str, missing: str) -> None:
    fake.update(FAKE_RUNNING=running, FAKE_INFO_RC=info_rc)
    proc = _cluster(fake, "verify")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("make verify: ") and missing in lines[0] and "run `make up` first" in lines[0]


def test_require_passes_when_all_six_run(fake: dict[str, str]) -> None:
    fake["FAKE_RUNNING"] = " ".join(HOSTS)
    proc = _cluster(fake, "require", "make drills")
    assert proc.returncode == 0 and proc.stderr == ""


def test_reconcile_removes_a_half_cluster_and_molecules_state(fake: dict[str, str]) -> None:
    state = Path(fake["SIOKIT_STATE_DIR"]) / "molecule" / "cluster"
    state.mkdir(parents=True)
    (state / "state.yml").write_text("created: true\nconverged: true\n")
    # lb was removed behind Molecule's back; app2 exists but is stopped (a daemon restart)
    fake.update(FAKE_RUNNING="app1 redis loadgen monitor", FAKE_PRESENT="app1 app2 redis loadgen monitor")
    proc = _cluster(fake, "reconcile")
    assert proc.returncode == 0, proc.stderr
    assert "stale cluster: not running: lb app2" in proc.stderr
    assert "rm -f app1 app2 redis loadgen monitor" in _calls(fake)
    assert "network rm siokit-cluster" in _calls(fake)
    assert not state.exists()


def test_reconcile_leaves_a_running_cluster_alone(fake: dict[str, str]) -> None:
    state = Path(fake["SIOKIT_STATE_DIR"]) / "molecule" / "cluster"
    state.mkdir(parents=True)
    fake.update(FAKE_RUNNING=" ".join(HOSTS), FAKE_PRESENT=" ".join(HOSTS))
    proc = _cluster(fake, "reconcile")
    assert proc.returncode == 0 and proc.stderr == ""
    assert not any(c.startswith("rm ") for c in _calls(fake))
    assert state.exists()


@pytest.mark.parametrize(
    ("module", "args", "what"),
    [("siokit.drills", [], "make drills"), ("siokit.cli", ["bench", "--target", "cluster"], "make bench")],
)
def test_drills_and_bench_without_a_cluster_are_one_line(
    fake: dict[str, str], module: str, args: list[str], what: str
) -> None:
    fake["FAKE_RUNNING"] = "redis"
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], env=fake, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"{what}: the local cluster is not running (lb, app1, app2, loadgen missing): run `make up` first"
    ], proc.stderr


def test_converge_keeps_the_secrets_of_the_state_dir(fake: dict[str, str], tmp_path: Path) -> None:
    """A converge from another checkout (SIOKIT_STATE_DIR pointing at the one that deployed the
    cluster) uses that state's credentials: it must not generate new ones in its own .siokit."""
    molecule = tmp_path / "molecule"
    molecule.write_text('#!/bin/sh\necho "molecule $*" >> "$FAKE_LOG"\n')
    molecule.chmod(0o755)
    fake.update(FAKE_RUNNING=" ".join(HOSTS), MOLECULE=str(molecule))
    _cluster(fake, "converge", "--tags", "app")  # health then fails: no lb answers here
    runs = [c for c in _calls(fake) if c.startswith("molecule converge")]
    creds = Path(fake["SIOKIT_STATE_DIR"]) / "credentials"
    assert runs == [f"molecule converge -s cluster -- -e plan_credentials_dir={creds} --tags app"], _calls(fake)
