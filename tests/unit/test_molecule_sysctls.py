"""The Molecule scenarios create their containers with the planner's sysctls, not hand copies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from molecule.interpolation import Interpolator, TemplateWithDefaults

from siokit import sysctls
from siokit.commands import plan as plan_command

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "molecule").glob("*/molecule.yml"))


def container_sysctls(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """What scripts/cluster.sh exports: `siokit plan --kit-defaults --colocated --container-sysctls`."""
    assert plan_command.main(["--kit-defaults", "--colocated", "--container-sysctls"]) == 0
    out: dict[str, str] = json.loads(capsys.readouterr().out)
    return out


def test_cluster_script_exports_the_planners_container_sysctls() -> None:
    script = (ROOT / "scripts" / "cluster.sh").read_text()
    assert "plan --kit-defaults --colocated --container-sysctls)" in script
    assert "export SIOKIT_CONTAINER_SYSCTLS" in script


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.parent.name)
def test_scenario_takes_its_sysctls_from_the_planner(scenario: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = scenario.read_text()
    planned = container_sysctls(capsys)
    for key in sysctls.CONTAINER_SETTABLE:
        assert key not in text, f"{scenario}: {key} copied by hand"
    env = {**os.environ, "SIOKIT_CONTAINER_SYSCTLS": json.dumps(planned)}
    config = yaml.safe_load(Interpolator(TemplateWithDefaults, env).interpolate(text))
    for platform in config["platforms"]:
        assert platform["sysctls"] == planned, platform["name"]


def test_container_sysctls_are_the_namespaced_part_of_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    planned = container_sysctls(capsys)
    assert set(planned) == sysctls.CONTAINER_SETTABLE
    assert planned["net.ipv4.ip_local_port_range"] == "1024 65535"
    # Host-wide keys would make `docker run --sysctl` fail: never handed to a container.
    assert not {"fs.file-max", "net.ipv4.tcp_mem", "net.netfilter.nf_conntrack_max"} & set(planned)
