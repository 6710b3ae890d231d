"""Lab and kit code never imports test helpers: what it needs lives in the kit (siokit/lab/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from siokit.drills.load import LOADGEN_SIOKIT
from siokit.lab.deployment import role_path

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("siokit", "app", "bench", "scripts")


def imports_of(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_no_code_outside_tests_imports_from_tests() -> None:
    files = [p for d in CODE_DIRS for p in sorted((ROOT / d).rglob("*.py")) if "node_modules" not in p.parts]
    assert len(files) > 20, f"found only {len(files)} files: the scan is looking in the wrong place"
    helpers = {p.stem for p in (ROOT / "tests").rglob("*.py")} - {"__init__"}
    assert "conftest" in helpers, helpers
    found = []
    for path in files:
        text = path.read_text()
        bad = [m for m in imports_of(path) if m.split(".")[0] == "tests" or m.split(".")[0] in helpers]
        # Putting tests/ on sys.path and importing a helper by its bare name is the same thing.
        if bad or ('"tests"' in text and "sys.path" in text):
            found.append(f"{path.relative_to(ROOT)}: {bad or 'tests/ on sys.path'}")
    assert not found, "code outside tests/ imports test helpers:\n" + "\n".join(found)


def test_lab_code_takes_deployed_paths_from_the_roles() -> None:
    """The path lab code runs on the loadgen host is the loadgen role's default, not a copy of it."""
    loadgen = yaml.safe_load((ROOT / "ansible/roles/loadgen/defaults/main.yml").read_text())
    kit = yaml.safe_load((ROOT / "ansible/roles/kit/defaults/main.yml").read_text())
    assert loadgen["loadgen_siokit_binary"] == "{{ kit_virtualenv }}/bin/siokit"
    assert LOADGEN_SIOKIT == role_path("loadgen_siokit_binary") == kit["kit_virtualenv"] + "/bin/siokit"
    with pytest.raises(KeyError, match="app_limit_nofile"):
        role_path("app_limit_nofile")  # a templated value, not a path
