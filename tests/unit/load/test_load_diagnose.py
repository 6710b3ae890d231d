"""siokit load names the source IP whose ephemeral ports ran out (issue #10, drill 9)."""

from __future__ import annotations

from siokit.load.diagnose import ports_exhausted
from siokit.load.worker import WorkerPlan


def plan(wid: int, source_ip: str | None) -> WorkerPlan:
    return WorkerPlan(wid, "http://lb:80", source_ip, 100, 100, 0.0, 10)


def test_one_line_per_source_ip_that_ran_out() -> None:
    plans = [plan(0, "10.0.0.2"), plan(1, "10.0.0.2"), plan(2, "10.0.0.3")]
    finals = {
        0: {"failures": {"addr_unavailable": 3, "timeout": 1}},
        1: {"failures": {"addr_unavailable": 2}},
        2: {"failures": {"timeout": 5}},
    }
    lines = ports_exhausted(plans, finals, (32768, 60999))
    assert len(lines) == 1
    assert lines[0].startswith("ephemeral ports exhausted on source IP 10.0.0.2: 5 connect(s) failed")
    assert "ip_local_port_range 32768-60999 gives at most 28232 ports" in lines[0]
    assert "--bind" in lines[0]


def test_nothing_to_say_without_such_failures() -> None:
    assert ports_exhausted([plan(0, None)], {0: {"failures": {"timeout": 1}}}, (1024, 65535)) == []
    assert ports_exhausted([plan(0, None)], {}, (1024, 65535)) == []
    assert "(kernel default)" in ports_exhausted([plan(0, None)], {0: {"failures": {"addr_unavailable": 1}}}, (1, 2))[0]


def test_the_line_also_names_the_other_cause() -> None:
    line = ports_exhausted([plan(0, "10.0.0.9")], {0: {"failures": {"addr_unavailable": 1}}}, (1024, 65535))[0]
    assert "10.0.0.9 is not an address of this host" in line
