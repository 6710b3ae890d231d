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
from pathlib import Path

import pytest

from ._netns import run_in_netns

pytestmark = pytest.mark.integration

RANGE = 100  # _reconnect_storm.PORTS


def test_reconnect_storm_fits_the_planned_ports_and_runs_out_past_them(tmp_path: Path) -> None:
    result = run_in_netns("_reconnect_storm.py", tmp_path / "storm.json", timeout=180)
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
