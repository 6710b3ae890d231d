"""app/process_metrics.py: the stock process_* metrics, open fds counted without listing /proc/self/fd."""

from __future__ import annotations

import os
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from app import process_metrics
from app.process_metrics import ProcessMetrics, open_fds


def _lines(registry: CollectorRegistry) -> dict[str, str]:
    """Exposition lines keyed by their sample name (or '# HELP name' / '# TYPE name')."""
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        key = " ".join(line.split(" ")[:3]) if line.startswith("#") else line.split(" ")[0]
        out[key] = line
    return out


def test_the_stock_collectors_names_help_and_values() -> None:
    stock, ours = CollectorRegistry(), CollectorRegistry()
    ProcessCollector(registry=stock)
    ProcessMetrics(ours)
    a, b = _lines(stock), _lines(ours)
    assert set(a) == set(b)
    assert {k: v for k, v in a.items() if k.startswith("#")} == {k: v for k, v in b.items() if k.startswith("#")}

    def value(lines: dict[str, str], name: str) -> float:
        return float(lines[name].split()[1])

    for name in ("process_start_time_seconds", "process_max_fds"):
        assert value(a, name) == value(b, name), name
    # the stock count includes the fd its own listing holds open
    assert value(a, "process_open_fds") == value(b, "process_open_fds") + 1
    # these move between the two reads: the interpreter allocates and runs in between
    for name in ("process_virtual_memory_bytes", "process_resident_memory_bytes"):
        assert abs(value(a, name) - value(b, name)) <= 16 * 2**20, name
    assert 0 <= value(b, "process_cpu_seconds_total") - value(a, "process_cpu_seconds_total") < 1


def test_open_fds_follows_the_process(tmp_path: Any) -> None:
    before = open_fds()
    files = [open(tmp_path / f"f{i}", "w") for i in range(50)]  # noqa: SIM115
    try:
        assert open_fds() == before + 50
    finally:
        for f in files:
            f.close()
    assert open_fds() == before


def test_the_kernels_count_is_used_where_it_gives_one(monkeypatch: pytest.MonkeyPatch) -> None:
    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: str) -> list[str]:
        listed.append(path)
        return real_listdir(path)

    monkeypatch.setattr(process_metrics.os, "listdir", listdir)
    n = open_fds()
    if os.stat("/proc/self/fd").st_size > 0:  # Linux >= 6.2
        assert listed == [] and n == os.stat("/proc/self/fd").st_size
    else:
        assert listed == ["/proc/self/fd"]


def test_a_kernel_that_gives_no_count_gets_the_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoSize:
        st_size = 0

    monkeypatch.setattr(process_metrics.os, "stat", lambda path: NoSize())
    # the listing's own fd is in it, as in the stock collector's count
    assert open_fds() == len(os.listdir("/proc/self/fd"))
    assert open_fds() > 0
