"""The playbook parses, and ansible-lint (production profile) and yamllint pass on ansible/ and molecule/."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

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


# Files whose content is not the kit's to template: the operator's own certificate and key, and the
# plan document (the planner's JSON, written by the plan half of issue #12).
INLINE_CONTENT_ALLOWED = {
    ("nginx", "tasks/tls.yml"): "nginx_tls_certificate_content",
    ("tuning", "tasks/main.yml"): "siokit_plan | to_nice_json",
}


def test_roles_write_managed_files_from_templates() -> None:
    """Every file a role manages comes from templates/ (so `siokit render` and the byte-identity test
    cover it): no task writes a file from inline `content:`."""
    found = []
    for path in sorted((ROOT / "ansible" / "roles").glob("*/tasks/*.yml")):
        role, rel = path.parts[-3], "/".join(path.parts[-2:])
        for task in _tasks(yaml.safe_load(path.read_text()) or []):
            for module in ("ansible.builtin.copy", "copy"):
                args = task.get(module)
                if isinstance(args, dict) and "content" in args:
                    allowed = INLINE_CONTENT_ALLOWED.get((role, rel))
                    if not (allowed and allowed in str(task)):
                        found.append(f"{role}/{rel}: {task.get('name')}")
    assert not found, "inline content instead of a template under templates/:\n" + "\n".join(found)


def _tasks(items: list) -> list[dict]:
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append(item)
            for key in ("block", "rescue", "always"):
                out += _tasks(item.get(key) or [])
    return out
