"""The lb -> upstream port-pressure case with the passive health checks on (shared zone,
max_fails=3, fail_timeout=10s): the loopback stack in its own network namespace with 100 ports
in ip_local_port_range (tests/integration/_port_pressure.py).

- at the planned scale (75 sockets per upstream, opened at the rate the spare ports carry with
  nginx_upstream_check on: planner.check_connects_per_second) no handshake fails;
- past the ports the shortage is real (errno 99 in nginx's log, handshakes refused);
- back under them, new handshakes succeed again within fail_timeout: a local port shortage
  costs at most fail_timeout of refusals afterwards, never a lasting "no live upstreams".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
FAIL_TIMEOUT_S = 10  # ansible/roles/nginx/defaults/main.yml nginx_upstream_fail_timeout


def test_port_shortage_is_bounded_by_fail_timeout(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("needs root and unshare(1) for a network namespace (CI and the dev machines have both)")
    out = tmp_path / "ports.json"
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, str(HERE / "_port_pressure.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=HERE.parents[1],
        # This checkout's siokit, templates and app, not wherever the venv's editable install points.
        env={**os.environ, "PYTHONPATH": str(HERE.parents[1])},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    print(
        json.dumps({k: v for k, v in result.items() if k != "back_under_the_ports"}),
        "recovered after",
        result["back_under_the_ports"]["recovered_after_s"],
        "s",
    )
    assert result["upstream_check"], "the role default turns nginx_upstream_check on"
    assert result["planned_150"] == {"ok": 150, "failed": 0}
    assert result["past_the_ports_80_more"]["failed"] > 0
    assert result["nginx_errors"]["cannot_assign_address"] > 0
    recovered = result["back_under_the_ports"]["recovered_after_s"]
    assert recovered is not None and recovered <= FAIL_TIMEOUT_S + 2
