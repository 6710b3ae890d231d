"""The loopback path plans once: the stack renders the plan it is given, nothing plans again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siokit import planner, render
from siokit.facts import HostFacts
from siokit.lab import local

HOST = HostFacts(cores=2, memory_gib=24, nofile_hard=20_000)


def test_the_stack_renders_the_plan_it_is_given_and_plans_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = planner.plan(planner.Target(sockets=30_000, source_ips=1, colocated=True), HOST)
    stack = local.LocalStack(state_dir=tmp_path, plan=plan, app_ports=[9001], redis_port=9000)

    def no_second_plan(*_: object, **__: object) -> None:
        raise AssertionError("planned a second time")

    monkeypatch.setattr(planner, "plan", no_second_plan)
    monkeypatch.setattr(planner, "plan_from_mapping", no_second_plan)
    render.render_all(stack.variables(), tmp_path / "rendered")
    assert stack.instances == plan.uwsgi.instances_per_host
    ini = (tmp_path / "rendered" / "uwsgi" / "siokit.ini").read_text()
    assert f"gevent = {plan.uwsgi.async_cores}" in ini
    nginx = (tmp_path / "rendered" / "nginx" / "nginx.conf").read_text()
    assert f"worker_processes {plan.nginx.worker_processes};" in nginx


def test_the_stack_keeps_its_plan_document_for_the_load_generator(tmp_path: Path) -> None:
    plan = planner.plan(planner.Target(sockets=3_000, colocated=True, uwsgi_instances_per_host=3), HOST)
    stack = local.LocalStack(state_dir=tmp_path, plan=plan)
    stack.save()
    assert planner.Plan.from_dict(json.loads(stack.plan_file.read_text())) == plan
    assert local.LocalStack.load(tmp_path).plan == plan


def test_without_a_plan_the_stack_plans_once_with_its_pins(tmp_path: Path) -> None:
    stack = local.LocalStack(state_dir=tmp_path, instances=3, sockets=2_000)
    assert stack.plan is not None
    assert stack.plan.uwsgi.instances_per_host == 3
    assert stack.plan.target.uwsgi_instances_per_host == 3
    assert stack.plan.target.colocated
