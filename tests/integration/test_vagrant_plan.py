"""The Vagrantfile's defaults pass the capacity planner; a target too large for its VMs does not.

No VM boots: `vagrant validate` loads the Vagrantfile, which writes the provisioner's groups and
variables (SIOKIT_VAGRANT_INVENTORY_OUT); site.yml then runs its checks and the plan only (`--check`,
a tag no task carries: the `always` plays) on throwaway local hosts in those groups, with the VMs'
facts given to the planner (siokit_plan_input) instead of this machine's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
# MemTotal of the locally built box's VMs over the memory they were given: 983,724 kB of 1 GiB
# (0.938) and 468,396 kB of 512 MiB, measured on the VMs; the planner rounds GiB to 0.1.
MEMTOTAL_RATIO = 0.93
VM_NOFILE_HARD = 1_048_576  # fs.nr_open of a Debian 12 VM: what the plan role's probe reads there
VM_SOMAXCONN = 4096  # Linux 6.1's default


def vagrant_spec(tmp_path: Path, **env: str) -> dict[str, Any]:
    vagrant = shutil.which("vagrant")
    assert vagrant, "vagrant is not installed: run scripts/vagrant-setup.sh --packages (make vagrant-validate)"
    out = tmp_path / "vagrant.json"
    r = subprocess.run(
        [vagrant, "validate"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env, "SIOKIT_VAGRANT_INVENTORY_OUT": str(out), "VAGRANT_DEFAULT_PROVIDER": "libvirt"},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text())


def vm_facts(spec: dict[str, Any], group: str) -> dict[str, Any]:
    """What the plan role would gather on the weakest VM of the group."""
    mib = min(spec["memory_mib"][host] for host in spec["groups"][group])
    return {
        "cores": spec["cpus"],
        "memory_gib": round(mib * MEMTOTAL_RATIO / 1024, 1),
        "nofile_hard": VM_NOFILE_HARD,
        "somaxconn": VM_SOMAXCONN,
    }


def plan_run(tmp_path: Path, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    local = {"ansible_connection": "local", "ansible_python_interpreter": str(BIN / "python")}
    hosts = {name: {**local, **spec["host_vars"].get(name, {})} for names in spec["groups"].values() for name in names}
    inventory = {
        "all": {
            "hosts": hosts,
            "children": {group: {"hosts": {name: {} for name in names}} for group, names in spec["groups"].items()},
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    extra = {
        **spec["extra_vars"],
        "siokit_plan_input": {g: vm_facts(spec, g) for g in ("app", "lb", "loadgen")},
        "plan_credentials_dir": str(tmp_path / "credentials"),
    }
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg")}
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'extra.json'}",
         "ansible/site.yml", "--check", "--tags", "siokit-preflight"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize("app_hosts", ["1", "2"])
def test_defaults_pass_the_planner_with_limits_above_containers(tmp_path: Path, app_hosts: str) -> None:
    """`vagrant up` with no variables (2 app hosts) and the make targets' 1: planned, nofile > 20,000."""
    spec = vagrant_spec(tmp_path, SIOKIT_APP_HOSTS=app_hosts)
    assert len(spec["groups"]["app"]) == int(app_hosts)
    assert set(spec["groups"]) == {"lb", "app", "redis", "loadgen"}  # the production inventory's groups
    r = plan_run(tmp_path, spec)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert re.search(r"changed=[1-9]", out) is None, out
    m = re.search(rf"{spec['extra_vars']['siokit_target_sockets']} sockets over {app_hosts} app host", out)
    assert m, out
    uwsgi = re.search(r"LimitNOFILE=(\d+) each", out)
    nginx = re.search(r"worker_rlimit_nofile (\d+)", out)
    assert uwsgi and nginx, out
    # What the VMs are for: limits the containers (capped at 20,000) cannot have.
    assert int(uwsgi.group(1)) > 20_000, uwsgi.group(0)
    assert int(nginx.group(1)) > 20_000, nginx.group(0)


def test_target_too_large_for_the_vms_fails_with_the_arithmetic(tmp_path: Path) -> None:
    """160,000 sockets on the make targets' one 2 GiB app VM (the lb and loadgen VMs grow with the target)."""
    spec = vagrant_spec(tmp_path, SIOKIT_APP_HOSTS="1", SIOKIT_TARGET_SOCKETS="160000")
    assert spec["extra_vars"]["siokit_target_sockets"] == 160_000
    r = plan_run(tmp_path, spec)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "siokit_plan: impossible target" in out, out
    assert re.search(r"160000 sockets do not fit in memory on each app host: needs [\d.]+ GiB .* budget", out), out


def test_host_variables_survive_vagrants_ini_inventory(tmp_path: Path) -> None:
    """Vagrant writes host variables as unquoted `key=value` on the host's INI line; Ansible must
    read back the Vagrantfile's values with their types (the loadgen's source addresses a list)."""
    spec = vagrant_spec(tmp_path, SIOKIT_APP_HOSTS="1")
    # The line as vagrant 2.3.4 writes it (plugins/provisioners/ansible/provisioner/base.rb,
    # get_inventory_host_vars_string): values with a space are single-quoted, nothing else is.
    lines = []
    for name, host_vars in spec["ini_host_vars"].items():
        pairs = []
        for key, value in host_vars.items():
            value = str(value)
            if " " in value and not re.fullmatch(r"""('|")[^'"]+('|")""", value):
                value = f"'{value}'"
            pairs.append(f"{key}={value}")
        lines.append(f"{name} ansible_host=192.0.2.1 ansible_user='vagrant' {' '.join(pairs)}")
    groups = [f"[{group}]\n" + "\n".join(names) for group, names in spec["groups"].items()]
    inventory = tmp_path / "vagrant_ansible_inventory"
    inventory.write_text("# Generated by Vagrant\n\n" + "\n".join(lines) + "\n\n" + "\n\n".join(groups) + "\n")
    for name, want in spec["host_vars"].items():
        r = subprocess.run(
            [str(BIN / "ansible-inventory"), "-i", str(inventory), "--host", name],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        got = json.loads(r.stdout)
        assert {k: got.get(k) for k in want} == want, f"{name}: {r.stdout}"
    assert isinstance(spec["host_vars"]["loadgen"]["tuning_loadgen_source_addresses"], list)
