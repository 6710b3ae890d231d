"""The process_* metrics of prometheus_client's ProcessCollector, with open fds counted by the kernel.

Why our own: the stock collector (prometheus_client 0.26.0) counts open fds as
``len(os.listdir("/proc/self/fd"))`` on every scrape. With 16,000 sockets on a uWSGI worker that
listing took 16-17 ms of CPU (local cluster, 2026-12-06), during which the gevent hub serves nobody.
In a 160k quiet hold, with bench reading every instance's /metrics once a second, it was 43% of a
worker's busy samples in py-spy; without it the ten instances took 0.285 cores, not 0.396. Since
Linux 6.2, stat() of /proc/PID/fd gives the count as the directory's size (0.03 ms at 16,000); older
kernels give 0, and then the listing is used, as the stock collector does. Names, help texts and
values are the stock's.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["ProcessMetrics", "open_fds"]


def open_fds(fd_dir: str = "/proc/self/fd") -> int:
    """Open file descriptors of the process whose fd directory this is."""
    n = os.stat(fd_dir).st_size
    # 0 is what a kernel before 6.2 says; a process with no fd at all also lists in no time
    return n if n > 0 else len(os.listdir(fd_dir))


class ProcessMetrics(Collector):
    """process_virtual_memory_bytes, _resident_memory_bytes, _start_time_seconds, _cpu_seconds_total,
    _open_fds and _max_fds of this process, read from /proc at each scrape."""

    def __init__(self, registry: CollectorRegistry, proc: str = "/proc") -> None:
        self._proc = proc
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._pagesize = resource.getpagesize()
        self._btime = 0.0
        try:
            with open(os.path.join(proc, "stat"), "rb") as f:
                self._btime = next(float(line.split()[1]) for line in f if line.startswith(b"btime "))
        except (OSError, StopIteration):
            pass  # no /proc: nothing to export, as the stock collector
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        if not self._btime:
            return []
        me = os.path.join(self._proc, "self")
        out: list[Metric] = []
        try:
            with open(os.path.join(me, "stat"), "rb") as f:
                parts = f.read().split(b")")[-1].split()
            ticks = self._ticks
            out += [
                GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.", float(parts[20])),
                GaugeMetricFamily(
                    "process_resident_memory_bytes", "Resident memory size in bytes.", float(parts[21]) * self._pagesize
                ),
                GaugeMetricFamily(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    float(parts[19]) / ticks + self._btime,
                ),
                CounterMetricFamily(
                    "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                    float(parts[11]) / ticks + float(parts[12]) / ticks,  # as the stock sums them
                ),
            ]
        except OSError:
            pass
        with contextlib.suppress(OSError):
            fds = open_fds(os.path.join(me, "fd"))
            out.append(GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", fds))
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            out.append(GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors.", float(soft)))
        return out
