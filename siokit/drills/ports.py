"""Drill 9, ephemeral ports exhausted on one loadgen source IP: sockets bound in the loadgen
container hold all but a few of that address's ports, then a load from that address alone must
fail the rest with EADDRNOTAVAIL and say so in words; the same load over the planned source IPs
must pass, and the deployed plan must keep each source IP under its usable ports."""

from __future__ import annotations

import time

from siokit import facts
from siokit.drills import cluster
from siokit.drills.base import Context, Fault, wait_until
from siokit.drills.load import LoadRun, Sampler, loadgen_binds

LEAVE_FREE = 200  # ports left on the exhausted address
CLIENTS = 600  # the small load that meets the shortage
PER_HOLDER = 15_000  # sockets per holder process, under the 20,000 open files of a container
HOLD_MAX_S = 300  # the holders exit by themselves after this, whatever happens to the drill
TAG = "/tmp/siokit-drill-ports"
# A previous drill's load leaves its ports in TIME_WAIT on the load generator (it closes first) for
# 60 s. bind() cannot take them, but connect() can again (tcp_tw_reuse=1), so with them about the
# holders leave more than LEAVE_FREE ports to connect(): seen after host-loss in the same run, 63,072
# held, 0 EADDRNOTAVAIL. The drill waits for them to expire first.
TIME_WAIT_MAX_S = 75
# Binds (ip, port) for every port in [first, last), says how many it holds (and the first error
# other than a port in use, e.g. the open-files limit), then sleeps; bounded in count and time.
HOLDER = (
    "import errno, os, socket, sys, time\n"
    "ip, first, last, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]\n"
    "out = open(tag + '.tmp', 'w')  # opened first: the sockets may take every descriptor left\n"
    "held, error = [], ''\n"
    "for port in range(first, last):\n"
    "    try:\n"
    "        s = socket.socket()\n"
    "    except OSError as exc:\n"
    "        error = repr(exc); break\n"
    "    try:\n"
    "        s.bind((ip, port))\n"
    "    except OSError as exc:\n"
    "        s.close()\n"
    "        if exc.errno != errno.EADDRINUSE:\n"
    "            error = error or repr(exc)\n"
    "        continue\n"
    "    held.append(s)\n"
    "out.write(str(len(held)) + ' ' + error); out.close(); os.rename(tag + '.tmp', tag)\n"
    f"time.sleep({HOLD_MAX_S})\n"
)


def holder_plan(low: int, high: int, leave: int, per: int) -> list[tuple[int, int]]:
    """[first, last) port slices, one per holder process, covering low..high except the top `leave`."""
    end = max(low, high + 1 - leave)
    return [(first, min(first + per, end)) for first in range(low, end, per)]


def ports_exhausted(ctx: Context, sampler: Sampler) -> Fault:
    binds = loadgen_binds()
    ip = binds[-1]
    low, high = facts.parse_port_range(cluster.run("loadgen", f"cat {facts.PORT_RANGE_PATH}"))
    plan = cluster.deployed_plan()["loadgen"]
    cluster.run("loadgen", f"rm -f {TAG}.*; cat > {TAG}.py <<'EOF'\n{HOLDER}EOF")
    counts = holder_plan(low, high, LEAVE_FREE, PER_HOLDER)

    def time_wait() -> int:
        out = cluster.run("loadgen", f"ss -Htan state time-wait src {ip} | wc -l", check=False)
        return int(out.strip() or 0)

    time_wait_at_start = time_wait()
    wait_until(lambda: time_wait() == 0, TIME_WAIT_MAX_S, 2)
    time_wait_at_holders = time_wait()
    start = time.time()
    try:
        for i, (first, last) in enumerate(counts):
            cluster.run(
                "loadgen",
                f"nohup python3 {TAG}.py {ip} {first} {last} {TAG}.{i}.held >/dev/null 2>&1 & echo $! > {TAG}.{i}.pid",
            )
        ready = wait_until(
            lambda: cluster.run("loadgen", f"ls {TAG}.*.held 2>/dev/null | wc -l").strip() == str(len(counts)), 120, 1
        )
        said_by_holders = cluster.run("loadgen", f"for f in {TAG}.*.held; do cat $f; echo; done 2>/dev/null")
        held = sum(int(line.split()[0]) for line in said_by_holders.splitlines() if line.split())
        holder_errors = sorted({line.split(" ", 1)[1] for line in said_by_holders.splitlines() if " " in line.strip()})
        short = LoadRun("ports-one-ip", CLIENTS, 5, None, ctx.token, ["--bind", ip, "--no-reconnect"])
        short.start(ctx.out / "ports-one-ip.log")
        one = short.wait(300)
        said = (ctx.out / "ports-one-ip.log").read_text()
    finally:
        cluster.run("loadgen", f"for f in {TAG}.*.pid; do kill $(cat $f) 2>/dev/null; done; rm -f {TAG}.*", check=False)
    end = time.time()
    spread = LoadRun("ports-spread", CLIENTS, 5, None, ctx.token, ["--no-reconnect"])
    spread.start(ctx.out / "ports-spread.log")
    many = spread.wait(300)
    left = cluster.run("loadgen", f"ls {TAG}.* 2>/dev/null | wc -l", check=False).strip()
    return Fault(
        start,
        end,
        time.time(),
        {
            "source_ip": ip,
            "port_range": f"{low}-{high}",
            "ports_held": held,
            "time_wait_on_ip_at_start": time_wait_at_start,
            "time_wait_on_ip_at_holders": time_wait_at_holders,
            "holders_ready": ready is not None,
            "holder_errors": holder_errors,
            "one_ip_connected": int(one["connections"]["peak_held"]),
            "one_ip_addr_unavailable": int(one.get("failures", {}).get("addr_unavailable", 0)),
            "one_ip_other_failures": sum(v for k, v in one.get("failures", {}).items() if k != "addr_unavailable"),
            "diagnosis_names_the_ip": f"ephemeral ports exhausted on source IP {ip}" in said,
            "spread_source_ips": len(binds),
            "spread_connected": int(many["connections"]["peak_held"]),
            "spread_failures": sum(many.get("failures", {}).values()),
            "plan_clients_per_source_ip": int(plan["clients_per_source_ip"]),
            "plan_usable_ports_per_source_ip": int(plan["usable_ports_per_source_ip"]),
            "holders_left": int(left or 0),
        },
    )
