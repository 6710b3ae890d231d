"""Shared fixtures: the loopback stack (real nginx, uWSGI, Redis) started once per session."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from siokit.lab.local import LocalStack, down, up


def free_base_port() -> int:
    for base in range(18080, 19000, 40):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base))
            except OSError:
                continue
            return base
    raise RuntimeError("no free port")


def start_stack(tmp: Path, balance: str, **options: bool) -> LocalStack:
    """Two instances on a free port; `options` go to LocalStack (e.g. admin_ui=True)."""
    stack = LocalStack(state_dir=tmp, port=free_base_port(), instances=2, balance=balance, sockets=2000, **options)
    try:
        up(stack)
    except Exception:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(tmp.rglob("*.log")))
        down(tmp)
        raise RuntimeError(f"loopback stack failed to start\n{logs}") from None
    return stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    tmp = tmp_path_factory.mktemp("stack-ip-hash")
    s = start_stack(tmp, "ip_hash")
    yield s
    down(tmp)
