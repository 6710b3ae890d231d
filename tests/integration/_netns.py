"""Run one of this folder's scripts in a network namespace of its own (unshare -n), where it may
narrow ip_local_port_range without touching the host's; return the JSON it wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


def run_in_netns(script: str, out: Path, timeout: float) -> dict[str, Any]:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("needs root and unshare(1) for a network namespace (CI and the dev machines have both)")
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, str(HERE / script), str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=HERE.parents[1],
        # This checkout's siokit, templates and app, not wherever the venv's editable install points.
        env={**os.environ, "PYTHONPATH": str(HERE.parents[1])},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(out.read_text()))
