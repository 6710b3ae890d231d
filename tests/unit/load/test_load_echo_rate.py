"""--echo-rate: a total echo rate spread over every client."""

from __future__ import annotations

import pytest


def test_echo_rate_spreads_a_total_rate_over_all_clients() -> None:
    from siokit.load.options import build_parser, make_plan

    args = build_parser().parse_args(["--url", "http://127.0.0.1:1", "--connections", "1000", "--echo-rate", "50"])
    plan = make_plan(args, nofile=(20000, 20000))
    assert all(p.echo_every == 20.0 for p in plan.plans)  # 1000 clients / 50 per s


def test_echo_rate_and_echo_every_exclude_each_other() -> None:
    from siokit.load.options import UsageError, build_parser, make_plan

    args = build_parser().parse_args(
        ["--url", "http://127.0.0.1:1", "--connections", "10", "--echo-rate", "5", "--echo-every", "1"]
    )
    with pytest.raises(UsageError, match="not both"):
        make_plan(args, nofile=(20000, 20000))
