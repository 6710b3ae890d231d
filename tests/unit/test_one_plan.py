"""Grep-level: sizing is decided in siokit/planner.py only, and everything else reads the plan.

Each check names the copy it guards against (issue 12): Jinja arithmetic on planned values (the old
proxy_read_timeout), a role default an inventory could use to change a planned value, a second
load generator sizing, a second facts shape, a second reader of the port range.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from siokit.render import refused_variables

ROOT = Path(__file__).resolve().parents[2]


def files(*globs: str) -> list[Path]:
    return sorted(p for g in globs for p in ROOT.glob(g) if p.is_file())


def hits(pattern: str, paths: list[Path]) -> list[str]:
    rx = re.compile(pattern)
    return [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
            for p in paths for n, line in enumerate(p.read_text().splitlines(), 1) if rx.search(line)]  # fmt: skip


def test_no_arithmetic_on_planned_values_in_roles_or_templates() -> None:
    paths = files("ansible/**/*.yml", "templates/**/*.j2")
    assert hits(r"siokit_plan\.[\w.]+\s*(\|\s*int\s*)?[-+*/]\s*[\w(]", paths) == []


def test_every_role_default_read_from_the_plan_is_refused_from_the_inventory() -> None:
    """A default like x: '{{ siokit_plan.y }}' could be overridden behind the planner's back."""
    refused = refused_variables()
    from_plan = set()
    for path in files("ansible/roles/*/defaults/main.yml"):
        for name, value in (yaml.safe_load(path.read_text()) or {}).items():
            if "siokit_plan." in str(value):
                from_plan.add(name)
    assert from_plan, "the check found nothing to check"
    assert from_plan <= set(refused), f"not refused: {sorted(from_plan - set(refused))}"


def test_one_load_generator_sizing() -> None:
    paths = [p for p in files("siokit/**/*.py", "bench/**/*.py", "scripts/*.py") if p.name != "planner.py"]
    assert hits(r"fds_needed|FD_OVERHEAD|FD_RESERVE\s*=|PORT_FRACTION\s*=", paths) == []


def test_one_facts_shape_and_one_port_range_reader() -> None:
    python = files("siokit/**/*.py", "ansible/filter_plugins/*.py", "bench/**/*.py", "scripts/*.py")
    assert [h.split(":")[0] for h in hits(r"^class HostFacts\b", python)] == ["siokit/facts.py"]
    assert [h.split(":")[0] for h in hits(r"DEFAULT_SOMAXCONN\s*=|somaxconn.*\bor\s+\d", python)] == ["siokit/facts.py"]
    readers = hits(r"proc/sys/net/ipv4/ip_local_port_range", python)
    assert [h.split(":")[0] for h in readers] == ["siokit/facts.py"], readers


def test_no_scenario_inventory_or_vagrantfile_sets_a_refused_variable() -> None:
    """They would fail the plan role's check: the local cluster, the VMs and the example inventories."""
    paths = files("molecule/*/*.yml", "Vagrantfile", "ansible/inventories/**/*.yml", "ansible/inventories/**/*.ini")
    assert paths
    names = "|".join(map(re.escape, refused_variables()))
    assert hits(rf"(^|[\s\"'{{,])({names})[\"']?\s*(:|=>|=)", paths) == []
