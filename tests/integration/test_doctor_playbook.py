"""`ansible-playbook doctor.yml` runs the same doctor as `siokit doctor --url URL --inventory INV`.

Both run against an inventory whose groups have no host and a URL where nothing listens, so every check
fails the same way on any machine, with no cluster: the reports must be the same text, the playbook must
fail, and the host-side checks must be there (the playbook passed its -i through). The healthy cluster
case is tests/infra/test_95_doctor.py::test_doctor_playbook_reports_what_the_command_reports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUN_TASK = "Run siokit doctor against every host of the inventory"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when this returns: connections are refused


def playbook_report(inventory: Path, url: str) -> tuple[int, dict[str, dict[str, object]]]:
    """The playbook's exit status and its tasks' results on localhost, by task name (json callback)."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(ROOT / "ansible" / "doctor.yml")]
    r = subprocess.run([*cmd, "-e", f"siokit_doctor_url={url}"], capture_output=True, text=True, env=env, timeout=300)
    # ansible.cfg's task timers print lines around the JSON document: decode from its first brace.
    start = r.stdout.find("{\n")
    assert start >= 0, f"no JSON report from ansible-playbook (exit {r.returncode}): {r.stderr[-2000:]}"
    doc, _ = json.JSONDecoder().raw_decode(r.stdout, start)
    tasks = {t["task"]["name"]: t["hosts"]["localhost"] for play in doc["plays"] for t in play["tasks"]}
    return r.returncode, tasks


def test_doctor_playbook_is_the_command(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    groups = {g: {"hosts": {}} for g in ("lb", "app", "redis", "loadgen")}
    inventory.write_text(json.dumps({"all": {"children": groups}}))  # JSON is YAML
    url = f"http://127.0.0.1:{closed_port()}"

    command = subprocess.run(
        [sys.executable, "-m", "siokit.cli", "doctor", "--url", url, "--inventory", str(inventory)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert command.returncode == 1, command.stderr
    names = {line.split("  ")[1].strip() for line in command.stdout.splitlines()[:-1] if not line.startswith(" ")}
    # The host-side checks ran (and failed: no host), so the inventory reached doctor.
    assert {"upstream spread", "message queue subscribers", "open-file limits"} <= names, command.stdout

    rc, tasks = playbook_report(inventory, url)
    ran = tasks[RUN_TASK]
    assert "cmd" in ran, f"the playbook did not run doctor: {ran.get('msg')}"
    assert ran["cmd"][-4:] == ["--url", url, "--inventory", str(inventory)], ran["cmd"]
    assert ran["stdout"] == command.stdout.rstrip("\n"), "the playbook's report differs from the command's"
    assert rc == 2 and tasks["Fail when a check failed"].get("failed") is True, tasks
