"""Argument validation and the per-process plan of ``siokit load``."""

from __future__ import annotations

import pytest

from siokit.load.options import UsageError, build_parser, make_plan

LIMIT = (1024, 20_000)


def plan(*argv: str, nofile: tuple[int, int] = LIMIT):
    return make_plan(build_parser().parse_args(list(argv)), nofile=nofile)


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


def test_auto_workers_fit_the_open_file_limit() -> None:
    p = plan("--url", "http://127.0.0.1:8080", "--connections", "50000", "--bind", "127.0.0.2,127.0.0.3")
    assert p.workers_per_bind == 2  # 25,000 per IP > ~19,740 per process
    for w in p.plans:
        assert w.nofile <= 20_000
        assert w.connections + 64 <= w.nofile


def test_refuses_too_few_workers_with_a_clear_message() -> None:
    with pytest.raises(UsageError, match=r"RLIMIT_NOFILE=20000: use --workers 2"):
        plan("--url", "http://127.0.0.1:8080", "--connections", "25000", "--workers", "1")


def test_refuses_more_clients_per_ip_than_ports() -> None:
    with pytest.raises(UsageError, match="--bind addresses"):
        plan("--url", "http://127.0.0.1:8080", "--connections", "160000", nofile=(1024, 1 << 20))


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
        make_plan(build_parser().parse_args(list(argv)), nofile=LIMIT)


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
