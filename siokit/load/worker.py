"""One load worker process: an asyncio loop holding its share of virtual clients.

Protocol with the parent (multiprocessing, fork):
  - the worker puts ``("stats", worker_id, WorkerStats.to_dict())`` on ``out`` every second,
    ``("ramped", worker_id, None)`` when its share is connected (or has failed), and a last
    ``("final", worker_id, dict)`` before it exits; ``("error", worker_id, text)`` on a crash;
  - the parent sets ``hold`` once every worker ramped (echo/broadcast traffic starts) and ``stop``
    when the hold time is over (clients close, bounded in concurrency).
Histograms are cumulative and small (stats.py), so no raw samples cross the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .client import ClientConfig, VirtualClient
from .stats import WorkerStats, process_cpu_ms, process_rss_kb


@dataclass(frozen=True)
class WorkerPlan:
    worker_id: int
    url: str
    source_ip: str | None
    connections: int
    batch_size: int
    batch_round_pause: float
    concurrency: int
    namespace: str = "/"
    auth: Any = None
    transport: str = "websocket"
    connect_timeout: float = 20.0
    echo_every: float | None = None
    broadcast_every: float | None = None  # only set on worker 0: it runs the admin client
    admin_namespace: str = "/admin"
    admin_token: str | None = None
    reconnect: bool = True
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    hold: float | None = None  # seconds; None = until the parent says stop
    nofile: int = 0  # soft RLIMIT_NOFILE to set in the worker


DRAIN_MAX = 3.0
# Teardown bounds scale with the clients of a worker: a fixed 60 s let 160k clients over 11
# workers overrun it (issue #9), and the report then said "ok": false for a run that held.
CLOSE_BASE_S = 30.0
CLOSE_PER_CLIENT_S = 0.002  # closes are a frame write + TCP close; 500/s leaves room for a busy host
PARENT_SLACK_S = 30.0  # the final snapshot, process exit, a loaded host
SWEEP_EVERY = 1.0  # dead-peer check over all clients; ~2 ms per 10k clients
# Loop-lag probe period: 20 wake-ups a second cost nothing next to the clients, and a stall that
# makes the server see a client late (pongs, reads) is far longer than 50 ms.
LAG_TICK = 0.05


def close_deadline_s(connections: int) -> float:
    """How long a worker may spend closing ``connections`` clients before it exits anyway."""
    return CLOSE_BASE_S + CLOSE_PER_CLIENT_S * connections


def stop_grace_s(connections_per_worker: int) -> float:
    """How long the parent waits for the workers after stop: their close deadline plus slack."""
    return close_deadline_s(connections_per_worker) + PARENT_SLACK_S


class Worker:
    def __init__(self, plan: WorkerPlan, out: Any, hold: Any, stop: Any) -> None:
        self.plan = plan
        self.out = out
        self.hold_evt = hold
        self.stop_evt = stop
        self.stats = WorkerStats()
        self.clients: list[VirtualClient] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.hold_started = 0.0

    def _sending(self) -> bool:
        """Echo/broadcast traffic stops DRAIN s before the hold ends, so that the last messages
        arrive before the clients close (and each broadcast's receiver count is complete)."""
        if self.plan.hold is None:
            return True
        drain = min(DRAIN_MAX, self.plan.hold * 0.2)
        return time.monotonic() < self.hold_started + self.plan.hold - drain

    def _send(self, kind: str, payload: Any) -> None:
        self.out.put((kind, self.plan.worker_id, payload))

    async def _wait_evt(self, evt: Any, poll: float = 0.1) -> None:
        while not evt.is_set():
            await asyncio.sleep(poll)

    async def _reporter(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.stats.rss_kb = process_rss_kb()
            self.stats.cpu_ms = process_cpu_ms()
            self._send("stats", self.stats.to_dict())

    async def _sweep(self) -> None:
        """Dead-peer detection for every client, once a second (no timer per client)."""
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = time.monotonic()
            for c in self.clients:
                c.check_alive(now)

    async def _lag_monitor(self) -> None:
        """How late this loop runs a timer: while it is late, no client of this worker reads,
        answers a ping or writes. A drop that follows a long stall is the load generator's doing."""
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(LAG_TICK)
            self.stats.on_loop_lag(max(0.0, loop.time() - t0 - LAG_TICK), time.time())

    async def _ramp(self) -> None:
        p = self.plan
        loop = asyncio.get_running_loop()
        cfg = ClientConfig(
            url=p.url,
            namespace=p.namespace,
            transport=p.transport,
            source_ip=p.source_ip,
            auth=p.auth,
            connect_timeout=p.connect_timeout,
            reconnect=p.reconnect,
            backoff_min=p.backoff_min,
            backoff_max=p.backoff_max,
        )
        # one gate for every handshake of this worker, first connects and reconnects alike: a
        # server that drops everyone must not see 20k simultaneous reconnect handshakes
        gate = asyncio.Semaphore(max(1, p.concurrency))

        async def start_one() -> None:
            if self.stop_evt.is_set():
                return
            c = VirtualClient(cfg, self.stats, gate)
            first: asyncio.Future[bool] = loop.create_future()
            self.clients.append(c)
            self.tasks.append(loop.create_task(c.run(first)))
            await first

        remaining = p.connections
        while remaining > 0 and not self.stop_evt.is_set():
            n = min(p.batch_size, remaining)
            await asyncio.gather(*(start_one() for _ in range(n)))
            remaining -= n
            if remaining > 0 and p.batch_round_pause > 0:
                await asyncio.sleep(p.batch_round_pause)

    async def _echo_loop(self) -> None:
        """Each client echoes every ``echo_every`` s; sends are spread evenly in 100 ms ticks."""
        every = self.plan.echo_every
        if not every:
            return
        tick = 0.1
        idx = 0
        carry = 0.0
        while not self.stop_evt.is_set() and self._sending():
            n = len(self.clients)
            carry += n * tick / every
            todo = int(carry)
            carry -= todo
            for _ in range(min(todo, n)):
                c = self.clients[idx % n]
                idx += 1
                await c.send_echo({"t": time.time()})
            await asyncio.sleep(tick)

    async def _admin_loop(self) -> None:
        """One extra, uncounted client on the admin namespace triggering broadcasts."""
        p = self.plan
        if not p.broadcast_every:
            return
        admin_stats = WorkerStats()
        cfg = ClientConfig(
            url=p.url,
            namespace=p.admin_namespace,
            transport="websocket",
            source_ip=p.source_ip,
            auth={"token": p.admin_token} if p.admin_token is not None else None,
            connect_timeout=p.connect_timeout,
            counted=False,
        )
        admin = VirtualClient(cfg, admin_stats)
        loop = asyncio.get_running_loop()
        first: asyncio.Future[bool] = loop.create_future()
        task = loop.create_task(admin.run(first))
        try:
            if not await first:
                for reason, n in admin_stats.failures.items():
                    self.stats.failures[f"admin_{reason}"] += n
                return
            seq = 0
            while not self.stop_evt.is_set() and self._sending():
                seq += 1
                sent_at = time.time()
                if await admin.emit("broadcast", {"seq": seq, "text": f"siokit load #{seq}"}, ack=True):
                    self.stats.broadcasts_sent += 1
                    self.stats.broadcast_sent_at[seq] = sent_at
                await asyncio.sleep(p.broadcast_every)
        finally:
            await admin.close()
            task.cancel()

    async def _close_all(self) -> None:
        sem = asyncio.Semaphore(max(1, self.plan.concurrency))

        async def close_one(c: VirtualClient) -> None:
            async with sem:
                await c.close()

        for c in self.clients:
            c.stopping = True
        # closing is bounded like connecting (a close storm hurts the server too), and bounded in
        # time: whatever is still open after CLOSE_DEADLINE goes away with the process
        closing = asyncio.gather(*(close_one(c) for c in self.clients))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing, close_deadline_s(len(self.clients)))
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def main(self) -> None:
        reporter = asyncio.get_running_loop().create_task(self._reporter())
        sweeper = asyncio.get_running_loop().create_task(self._sweep())
        lagger = asyncio.get_running_loop().create_task(self._lag_monitor())
        ramp = asyncio.get_running_loop().create_task(self._ramp())
        stopped = asyncio.ensure_future(self._wait_evt(self.stop_evt))
        await asyncio.wait([ramp, stopped], return_when=asyncio.FIRST_COMPLETED)
        for t in (ramp, stopped):
            t.cancel()
        self._send("ramped", None)
        await self._wait_evt(self.hold_evt)
        self.hold_started = time.monotonic()
        for c in self.clients:  # "held with pings running" counts the pings of the hold only
            c.pings = 0
        # The clients live until the end: keep the cyclic GC from re-walking them (~20 objects
        # each) on every full collection while messages arrive (docs/loadgen.md, CPU per message).
        gc.collect()
        gc.freeze()
        side = [asyncio.ensure_future(self._echo_loop()), asyncio.ensure_future(self._admin_loop())]
        await self._wait_evt(self.stop_evt)
        await asyncio.sleep(0.2)  # let the last broadcast arrive before tearing down
        for t in side:
            t.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        self.stats.rss_kb = process_rss_kb()
        self.stats.cpu_ms = process_cpu_ms()
        sweeper.cancel()
        lagger.cancel()
        self.stats.pings_held = Counter(c.pings for c in self.clients if c.ns_ok)
        # The final report goes before the teardown: closing 16,000 clients on two busy cores can
        # outlast the parent's grace (the 160k run of 2026-12-02), and a worker terminated mid-close
        # must not take its measurements with it.
        self._send("final", self.stats.to_dict())  # gauges before teardown = connections held at the end
        reporter.cancel()
        await self._close_all()
        self._send("closed", None)


def run_worker(plan: WorkerPlan, out: Any, hold: Any, stop: Any) -> None:
    """Process entry point."""
    try:
        if plan.nofile:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = plan.nofile if hard == resource.RLIM_INFINITY else min(plan.nofile, hard)
            if want > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        with contextlib.suppress(OSError):
            os.nice(0)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(Worker(plan, out, hold, stop).main())
    except KeyboardInterrupt:
        pass
    except BaseException:
        out.put(("error", plan.worker_id, traceback.format_exc()))
        raise


def _loop_factory() -> Any:
    """uvloop when installed (a pinned dependency): its C socket transports cut the per-message
    read overhead that asyncio's selector loop spends in Python (docs/loadgen.md)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def split_evenly(total: int, parts: int) -> list[int]:
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]
