"""A reconnect storm on the lb's ports (drill 6 on loopback): the stack in its own network namespace
with 100 ports in ip_local_port_range, nginx restarted under its websockets, a real
`siokit load` client set coming back with its jittered backoff
(tests/integration/_reconnect_storm.py).

- with the most clients the planner's storm arithmetic fits (planner.storm_ports_needed: the dropped
  websockets' ports in TIME_WAIT + a websocket and a check per client back within CHECK_PORT_HOLD_S,
  per upstream with SPREAD_HEADROOM) every client is back within the watch, with no errno 99, no
  failed check and no reconnect failure, although the dropped ports were still in TIME_WAIT while
  they came back;
- past it (135% of the ports), connect() runs out toward an upstream: errno 99 in nginx's log.
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
RANGE = 100  # _reconnect_storm.PORTS


def test_reconnect_storm_fits_the_planned_ports_and_runs_out_past_them(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("needs root and unshare(1) for a network namespace (CI and the dev machines have both)")
    out = tmp_path / "storm.json"
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, str(HERE / "_reconnect_storm.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=HERE.parents[1],
        # This checkout's siokit, templates and app, not wherever the venv's editable install points.
        env={**os.environ, "PYTHONPATH": str(HERE.parents[1])},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    planned, past = result["runs"]
    for run in (planned, past):
        print(json.dumps({k: v for k, v in run.items() if k not in ("timeline", "before")}))
    assert planned["clients"] == result["planned"] and past["clients"] == result["past"]

    # The storm overlapped the dropped ports: clients back on an upstream while the ports of the
    # websockets it held were in TIME_WAIT (the restart took tens of ms; tcp_tw_reuse frees them ~1 s on).
    held = [state.get("ESTAB", 0) for state in planned["before"].values()]
    overlapped = [est > 0 and tw >= n for _, ups in planned["timeline"] for (est, tw), n in zip(ups, held, strict=True)]
    assert any(overlapped), planned["timeline"]
    assert planned["all_back_after_s"] is not None, planned
    assert planned["load"]["reconnects"] == planned["clients"]
    assert planned["load"]["reconnect_failures"] == {}
    assert (planned["cannot_assign_address"], planned["no_live_upstreams"], planned["auth_502"]) == (0, 0, 0)

    assert past["cannot_assign_address"] > 0, past
    assert max(past["peak_ports_used"]) == RANGE
