"""Argument validation and the per-process plan of ``siokit load``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siokit import planner
from siokit.facts import HostFacts
from siokit.load.options import UsageError, build_parser, make_plan

LIMIT = (1024, 20_000)


def plan(*argv: str, nofile: tuple[int, int] = LIMIT, cores: int = 2):
    """make_plan on a 2-core host with the kit's port range, whatever this machine has."""
    return make_plan(build_parser().parse_args(list(argv)), nofile=nofile, cores=cores, port_range=(1024, 65535))


def test_original_tool_shape() -> None:
    p = plan(
        "--port",
        "12307",
        "--bind",
        "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5",
        "--batch-round",
        "10",
        "--batch-size",
        "500",
        "--workers",
        "2",
    )
    assert p.url == "http://127.0.0.1:12307"
    assert p.total == 40_000
    assert len(p.plans) == 8
    assert {w.source_ip for w in p.plans} == {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
    assert all(w.connections == 5000 and w.batch_size == 500 for w in p.plans)
    assert sum(w.connections for w in p.plans) == 40_000


def test_connections_split_and_concurrency() -> None:
    p = plan(
        "--url",
        "http://127.0.0.1:8080",
        "--connections",
        "1001",
        "--bind",
        "127.0.0.2,127.0.0.3",
        "--workers",
        "2",
        "--concurrency",
        "100",
    )
    assert [w.connections for w in p.plans] == [251, 250, 250, 250]
    assert all(w.concurrency == 25 for w in p.plans)
    assert [w.worker_id for w in p.plans] == [0, 1, 2, 3]


def test_auto_workers_are_the_planners() -> None:
    p = plan("--url", "http://127.0.0.1:8080", "--connections", "50000", "--bind", "127.0.0.2,127.0.0.3")
    assert p.workers_per_bind == 2  # 25,000 per IP > 20,000 - 512 reserved per process
    sizing = planner.plan_loadgen(50_000, 2, HostFacts(cores=2, memory_gib=1, nofile_hard=20_000))
    assert p.workers_per_bind == sizing.workers_per_source_ip
    for w in p.plans:
        assert w.nofile == sizing.limit_nofile <= 20_000
        assert w.connections + planner.FD_RESERVE <= w.nofile


def test_one_process_per_core_at_least() -> None:
    p = plan("--url", "http://127.0.0.1:8080", "--connections", "100", cores=4)
    assert p.workers_per_bind == 4 and sum(w.connections for w in p.plans) == 100


def test_refuses_too_few_workers_with_the_arithmetic() -> None:
    with pytest.raises(
        UsageError,
        match=r"nofile_hard 20000 - reserve 512 = 19488; need >= ceil\(25000 / 19488\) = 2 "
        r"workers per source IP.*--workers the processes per source IP",
    ):
        plan("--url", "http://127.0.0.1:8080", "--connections", "25000", "--workers", "1")


def test_refuses_more_clients_per_ip_than_ports() -> None:
    with pytest.raises(UsageError, match=r"source_ips 1 is too few for 160000 sockets.*--bind gives the source IPs"):
        plan("--url", "http://127.0.0.1:8080", "--connections", "160000", nofile=(1024, 1 << 20))


def _plan_file(tmp_path: Path, **target: int) -> Path:
    doc = planner.plan(planner.Target(**target), HostFacts(cores=2, memory_gib=24, nofile_hard=20_000))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc.to_dict()))
    return path


def test_a_plan_document_sizes_the_run(tmp_path: Path) -> None:
    """--plan: the deployment's loadgen sizing is used as is, not re-derived here."""
    path = _plan_file(tmp_path, sockets=60_000, source_ips=2, colocated=True, loadgen_workers_per_source_ip=3)
    binds = "127.0.0.2,127.0.0.3"
    p = plan("--url", "http://127.0.0.1:8080", "--plan", str(path), "--bind", binds, cores=16)
    assert p.total == 60_000  # the plan's sockets
    assert p.workers_per_bind == 3 and len(p.plans) == 6
    assert {w.connections for w in p.plans} == {10_000}
    assert {w.nofile for w in p.plans} == {10_000 + planner.FD_RESERVE}
    smaller = plan("--url", "http://127.0.0.1:8080", "--plan", str(path), "--bind", binds, "--connections", "600")
    assert smaller.workers_per_bind == 3 and sum(w.connections for w in smaller.plans) == 600


def test_a_plan_document_is_not_overridden_or_exceeded(tmp_path: Path) -> None:
    path = _plan_file(tmp_path, sockets=60_000, source_ips=2, colocated=True)
    with pytest.raises(UsageError, match=r"--workers with --plan.*loadgen_workers_per_source_ip"):
        plan("--url", "http://x:1", "--plan", str(path), "--bind", "127.0.0.2,127.0.0.3", "--workers", "9")
    with pytest.raises(
        UsageError,
        match=r"60000 clients over 1 source IP\(s\) = 60000 per IP, but the plan .* sized "
        r"30000 per IP \(60000 clients / 2 source IPs\)",
    ):
        plan("--url", "http://x:1", "--plan", str(path))
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "schema_version": 0}))
    with pytest.raises(UsageError, match=r"--plan .*schema_version 0"):
        plan("--url", "http://x:1", "--plan", str(path), "--bind", "127.0.0.2,127.0.0.3")


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        ((), "--url is required"),
        (("--url", "ftp://x"), "--url must look like"),
        (("--url", "http://127.0.0.1:8080", "--port", "80"), "not both"),
        (("--url", "http://127.0.0.1:8080", "--bind", "127.0.0.2,nope"), "not an IP"),
        (("--url", "http://127.0.0.1:8080", "--bind", "127.0.0.2,127.0.0.2"), "twice"),
        (("--url", "http://127.0.0.1:8080", "--broadcast-every", "1"), "--admin-token"),
        (("--url", "http://127.0.0.1:8080", "--connections", "5", "--batch-round", "2"), "--batch-round"),
        (("--url", "http://127.0.0.1:8080", "--namespace", "admin"), "start with '/'"),
        (("--url", "https://127.0.0.1:8080", "--transport", "polling"), "http:// URLs only"),
    ],
)
def test_usage_errors(argv: tuple[str, ...], msg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIOKIT_ADMIN_TOKEN", raising=False)
    with pytest.raises(UsageError, match=msg):
        make_plan(build_parser().parse_args(list(argv)), nofile=LIMIT, port_range=(1024, 65535))


@pytest.mark.parametrize(
    "argv",
    [["--connections", "0"], ["--hold", "-1"], ["--concurrency", "x"], ["--transport", "tcp"], ["--echo-every", "0"]],
)
def test_parser_rejects(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--url", "http://127.0.0.1:1", *argv])


def test_broadcast_only_on_worker_zero_and_html_default() -> None:
    p = plan(
        "--url",
        "http://127.0.0.1:8080",
        "--connections",
        "10",
        "--workers",
        "2",
        "--broadcast-every",
        "2",
        "--admin-token",
        "t",
        "--report",
        "/tmp/x/r.json",
    )
    assert p.plans[0].broadcast_every == 2
    assert p.plans[1].broadcast_every is None
    assert p.html == "/tmp/x/r.html"


def test_cli_main_returns_2_on_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from siokit.load.cli import main

    assert main(["--url", "ftp://nope"]) == 2
    assert "--url must look like" in capsys.readouterr().err


def test_admin_token_from_a_file_or_the_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token never has to be on the command line, which `ps` shows to every user."""
    token = tmp_path / "token"
    token.write_text("from-file\n")
    p = plan("--url", "http://127.0.0.1:8080", "--broadcast-every", "2", "--admin-token-file", str(token))
    assert p.plans[0].admin_token == "from-file"
    monkeypatch.setenv("SIOKIT_ADMIN_TOKEN", "from-env")
    p = plan("--url", "http://127.0.0.1:8080", "--broadcast-every", "2")
    assert p.plans[0].admin_token == "from-env"
    with pytest.raises(SystemExit):
        plan("--url", "http://127.0.0.1:8080", "--admin-token-file", str(tmp_path / "missing"))
