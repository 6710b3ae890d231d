"""scripts/vagrant-box.sh refuses bad input naming the variable, and its --check passes here.

--check builds nothing: it checks the variables, the mirror and the tools (make vagrant-validate
installs them), so `make check` covers the box script without the minutes a box takes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "vagrant-box.sh"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, **env},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SIOKIT_BOX_DISK_GB": "big"}, "SIOKIT_BOX_DISK_GB must be a whole number of GiB >= 3, got 'big'"),
        ({"SIOKIT_BOX_DISK_GB": "2"}, "SIOKIT_BOX_DISK_GB must be a whole number of GiB >= 3, got '2'"),
        ({"SIOKIT_VAGRANT_BOX": "no-slash"}, "SIOKIT_VAGRANT_BOX must look like owner/name, got 'no-slash'"),
        ({"SIOKIT_EXTRA_CA_DIR": "/nonexistent/ca"}, "SIOKIT_EXTRA_CA_DIR=/nonexistent/ca is not a directory"),
        ({"SIOKIT_DEBIAN_MIRROR": "ftp.example.org/debian"}, "SIOKIT_DEBIAN_MIRROR must be an http(s) URL"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_bad_input_is_named(env: dict[str, str], message: str) -> None:
    r = run("--check", **env)
    assert r.returncode != 0, r.stderr
    assert message in r.stderr, r.stderr


def test_unknown_argument_is_refused() -> None:
    r = run("--rebuild")
    assert r.returncode != 0
    assert "unknown argument '--rebuild'" in r.stderr, r.stderr


def test_check_passes_with_the_defaults() -> None:
    r = run("--check")
    assert r.returncode == 0, r.stderr
    assert "ok: mirror http" in r.stderr, r.stderr
