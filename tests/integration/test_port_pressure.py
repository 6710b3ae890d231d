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
from pathlib import Path

import pytest

from ._netns import run_in_netns

pytestmark = pytest.mark.integration

FAIL_TIMEOUT_S = 10  # ansible/roles/nginx/defaults/main.yml nginx_upstream_fail_timeout


def test_port_shortage_is_bounded_by_fail_timeout(tmp_path: Path) -> None:
    result = run_in_netns("_port_pressure.py", tmp_path / "ports.json", timeout=300)
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
