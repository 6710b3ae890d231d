"""`siokit plan` and `siokit render` as an operator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from siokit.cli import main
from siokit.commands import commands_dict
from siokit.render import COPIED, TEMPLATES


def test_plan_prints_the_sizing(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "plan",
            "--sockets",
            "160000",
            "--cores",
            "2",
            "--memory-gib",
            "32",
            "--nofile-hard",
            "20000",
            "--source-ips",
            "4",
            "--app-hosts",
            "2",
            "--colocated",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "5 instances per app host" in out
    assert "worker_processes 21" in out
    assert "net.ipv4.ip_local_port_range = 1024 65535" in out


def test_plan_refuses_with_the_arithmetic(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "plan",
            "--sockets",
            "160000",
            "--cores",
            "2",
            "--memory-gib",
            "24",
            "--nofile-hard",
            "20000",
            "--source-ips",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "impossible target" in err and "2 x 54835 = 109670 < 160000" in err


def test_render_writes_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text(
        yaml.safe_dump(
            {
                "siokit_redis_password": "pw",
                "siokit_admin_secret": "a",
                "siokit_redis_host": "10.0.0.5",
                "nginx_upstream_servers": ["10.0.0.2:8001"],
                "siokit_plan_input": {"sockets": 1000, "app": {"cores": 2, "memory_gib": 4, "nofile_hard": 20000}},
            }
        )
    )
    assert main(["render", str(vars_file), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "nginx" / "nginx.conf").exists()
    assert len(capsys.readouterr().out.splitlines()) == len(TEMPLATES) + len(COPIED)


def test_render_names_a_missing_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("nginx_upstream_servers: []\n")
    assert main(["render", str(vars_file), str(tmp_path / "out")]) == 2
    assert "siokit_" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(commands_dict))
def test_every_registered_command_has_a_parser_with_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_unknown_command_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'nope'" in err
    assert all(name in err for name in ("plan", "render", "local", "load", "bench"))
