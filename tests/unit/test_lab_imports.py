"""Lab and kit code never imports test helpers: what it needs lives in the kit (siokit/lab/)."""

from __future__ import annotations

import ast
import re
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


def test_one_uwsgi_command_line(tmp_path: Path) -> None:
    """Tests and lab runs start uWSGI the way the hosts' unit does, from the rendered ini."""
    from siokit.lab.servers import UWSGI, uwsgi_args, uwsgi_ini

    ini = uwsgi_ini(tmp_path, gevent_cores=1234, variables={"app_websockets_ping_freq": 1})
    text = ini.read_text()
    cores = re.search(r"^gevent = (\d+)$", text, re.M)
    assert cores and int(cores.group(1)) >= 1234, text  # every socket asked for holds an async core
    assert "http-socket = 127.0.0.1:%(port)" in text, text
    assert "websockets-ping-freq = 1\n" in text and "die-on-term = true" in text
    assert uwsgi_args(8001, ini) == [str(UWSGI), "--set-ph", "port=8001", "--ini", str(ini)]
    unit = (ROOT / "templates/systemd/siokit-uwsgi@.service.j2").read_text()
    assert "ExecStart={{ app_uwsgi_binary }} --set-ph port=%i --ini {{ app_ini_file }}" in unit
    # No restated option list in Python: only the template spells out uWSGI's options. bench/compare.py's
    # `uwsgi` and `uwsgi-doc` targets are the plain, documented command lines the kit is compared
    # against, on purpose.
    baselines = {ROOT / "bench" / "compare.py"}
    needle = '"--http-' + 'websockets"'  # split, so this file does not match itself
    for path in [p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py")] + list((ROOT / "tests").rglob("*.py")):
        if path in baselines:
            continue
        assert needle not in path.read_text(), f"{path.relative_to(ROOT)} restates uWSGI's options"


def test_one_layout_of_a_deployed_host() -> None:
    """siokit doctor and tests/infra read where things are from the roles' defaults, read once."""
    from siokit.lab.deployment import layout
    from siokit.render import ROOT as KIT_ROOT
    from siokit.render import TEMPLATES

    where = layout()
    assert where is layout()  # read once
    defaults = {
        **yaml.safe_load((ROOT / "ansible/roles/app/defaults/main.yml").read_text()),
        **yaml.safe_load((ROOT / "ansible/roles/redis/defaults/main.yml").read_text()),
        **yaml.safe_load((ROOT / "ansible/roles/nginx/defaults/main.yml").read_text()),
    }
    assert (where.app_env_file, where.app_ini_file) == (defaults["app_env_file"], defaults["app_ini_file"])
    assert (where.redis_service, where.nginx_site) == (defaults["redis_service"], defaults["nginx_site_path"])
    # The unit names are the app role's templates' (the file a template renders is the unit).
    outputs = {Path(t.output).name for t in TEMPLATES}
    assert where.uwsgi_unit.format(port="") in outputs and where.app_target in outputs
    assert where.uwsgi_ports("Wants=siokit-uwsgi@8002.service siokit-uwsgi@8001.service") == [8001, 8002]
    assert KIT_ROOT == ROOT


def test_doctor_and_infra_tests_keep_no_copy_of_the_layout() -> None:
    """The literals layout() reads must not reappear in siokit/doctor or tests/infra."""
    from siokit.lab.deployment import layout

    where = layout()
    literals = [where.plan_file, where.app_env_file, where.app_ini_file, where.app_virtualenv, where.nginx_site]
    literals += [where.load_env_file, where.redis_conf, where.nginx_access_log, where.uwsgi_unit.split("@")[0] + "@"]
    literals += [f'"{where.redis_service}"', f'"{where.redis_package}"', where.app_target + '"']
    files = sorted((ROOT / "siokit/doctor").glob("*.py")) + sorted((ROOT / "tests/infra").glob("*.py"))
    assert len(files) > 10, files
    found = []
    for path in files:
        # Docstrings and comments may name the paths; code may not.
        code = re.sub(r'""".*?"""|#[^\n]*', "", path.read_text(), flags=re.S)
        found += [f"{path.relative_to(ROOT)}: {lit}" for lit in literals if lit in code]
    assert not found, "a deployment path or unit name copied instead of read from layout():\n" + "\n".join(found)
