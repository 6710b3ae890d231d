"""The playbook parses, and ansible-lint (production profile) and yamllint pass on ansible/ and molecule/."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
ENV = {**os.environ, "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1", "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg")}


def run(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("inventory", ["ansible/inventories/production/hosts.yml"])
def test_syntax_check(inventory: str) -> None:
    r = run(str(BIN / "ansible-playbook"), "-i", inventory, "ansible/site.yml", "--syntax-check")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ansible_lint_production_profile() -> None:
    targets = ["ansible/"] + (["molecule/"] if (ROOT / "molecule").is_dir() else [])
    r = run(str(BIN / "ansible-lint"), "--profile", "production", "--nocolor", "-f", "pep8", *targets)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Profile 'production' was required, and it passed" in r.stdout + r.stderr


def test_yamllint_strict() -> None:
    targets = ["ansible"] + (["molecule"] if (ROOT / "molecule").is_dir() else [])
    r = run(str(BIN / "yamllint"), "-s", "-f", "parsable", *targets)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_role_has_its_parts() -> None:
    for role in sorted((ROOT / "ansible" / "roles").iterdir()):
        for part in ("defaults/main.yml", "meta/main.yml", "README.md"):
            assert (role / part).is_file(), f"{role.name}: {part} missing"
        if (role / "tasks").is_dir():
            assert (role / "meta" / "argument_specs.yml").is_file(), f"{role.name}: meta/argument_specs.yml missing"


def test_roles_template_the_kit_templates_only() -> None:
    """One source of truth: no role carries its own copy of the kit's templates."""
    for role in (ROOT / "ansible" / "roles").iterdir():
        assert not list(role.rglob("*.j2")), f"{role.name} has its own .j2 templates"
