"""siokit bench --source-ips: the loopback load generator's addresses, checked by the planner before
anything starts (no stack is brought up by these tests)."""

from __future__ import annotations

import pytest

from siokit.lab import local
from siokit.lab.bench import main as bench_main


def test_loopback_plan_takes_more_source_ips_than_it_needs() -> None:
    assert local.plan_loopback(40_000).loadgen.source_ips == 1
    plan = local.plan_loopback(40_000, source_ips=4)
    assert plan.loadgen.source_ips == 4 and plan.loadgen.clients_per_source_ip == 10_000


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--connections", "120000", "--source-ips", "1"], "need >= 3 source IPs"),
        (["--source-ips", "0"], "source_ips must be >= 1"),
    ],
)
def test_too_few_source_ips_fail_with_the_arithmetic(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_main(["--target", "loopback", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--source-ips: " in err and says in err, err


def test_source_ips_is_for_the_loopback_stack_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_main(["--target", "cluster", "--source-ips", "3"])
    assert exc.value.code == 2
    assert "the cluster's source addresses come from its inventory" in capsys.readouterr().err
