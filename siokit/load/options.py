"""Command line of ``siokit load``: parsing, validation and the per-process plan."""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import resource
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .worker import WorkerPlan, fds_needed, split_evenly

DESCRIPTION = """\
Open many Socket.IO clients (exactly one TCP connection each) against a server, hold them,
optionally drive echo round-trips and admin broadcasts, and report connect latency, failures by
reason, connections held over time, echo and broadcast fan-out latency (JSON + HTML).

Shape of the original load client: --bind A,B,C,D --workers 2 --batch-size 500 --batch-round 10
starts 2 processes per source address, each opening 500 connections per round for 10 rounds
(40,000 clients). --connections N sets the total instead and splits it evenly.
"""

EPILOG = """\
examples:
  siokit load --url http://127.0.0.1:8080 --connections 5000 --concurrency 200 --hold 30
  siokit load --url http://127.0.0.1:8080 --bind 127.0.0.2,127.0.0.3 --workers 2 \\
      --batch-size 500 --batch-round 10 --echo-every 10 --broadcast-every 5 --admin-token-file token.txt \\
      --report load.json
"""

FD_OVERHEAD = 64


class UsageError(ValueError):
    """A command-line problem, reported as one clear message (exit status 2)."""


@dataclass(frozen=True)
class Plan:
    url: str
    binds: list[str | None]
    workers_per_bind: int
    total: int
    plans: list[WorkerPlan]
    hold: float
    ramp_timeout: float | None
    report: str | None
    html: str | None
    progress: bool
    nofile_hard: int


def _json_object(text: str) -> dict[str, Any]:
    try:
        v = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return v


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return v


def _positive_float(text: str) -> float:
    v = _non_negative_float(text)
    if v == 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return v


def build_parser(prog: str = "siokit load") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    tgt = ap.add_argument_group("target")
    tgt.add_argument("--url", help="server base URL, e.g. http://127.0.0.1:8080 (Engine.IO path /socket.io/)")
    tgt.add_argument("--port", type=_positive_int, help="shorthand for --url http://127.0.0.1:PORT (old tool)")
    tgt.add_argument("--namespace", default="/", help="namespace the clients connect to (default /)")
    tgt.add_argument("--transport", choices=("websocket", "polling"), default="websocket")
    tgt.add_argument(
        "--auth",
        type=_json_object,
        default=None,
        help='JSON object sent with each namespace connect, e.g. \'{"nickname": "load"}\'',
    )
    scale = ap.add_argument_group("scale")
    scale.add_argument("--bind", default="", help="comma-separated source IPs (e.g. 127.0.0.2,127.0.0.3)")
    scale.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="processes per source IP (default: the fewest that fit RLIMIT_NOFILE)",
    )
    scale.add_argument(
        "--connections",
        type=_positive_int,
        default=None,
        help="total clients (default: batch-size x batch-round x processes)",
    )
    scale.add_argument(
        "--batch-size", type=_positive_int, default=500, help="clients per round per process (default 500)"
    )
    scale.add_argument(
        "--batch-round", type=_positive_int, default=None, help="rounds per process (default 1); not with --connections"
    )
    scale.add_argument(
        "--batch-pause", type=_non_negative_float, default=0.0, help="seconds to wait between rounds (default 0)"
    )
    scale.add_argument(
        "--concurrency",
        type=_positive_int,
        default=200,
        help="handshakes in flight, all processes together (default 200)",
    )
    run = ap.add_argument_group("run")
    run.add_argument(
        "--hold",
        type=_non_negative_float,
        default=10.0,
        help="seconds to hold the connections once all are open (default 10)",
    )
    run.add_argument(
        "--ramp-timeout", type=_positive_float, default=None, help="stop waiting for the ramp after this many seconds"
    )
    run.add_argument("--connect-timeout", type=_positive_float, default=20.0, help="per handshake (default 20)")
    run.add_argument("--no-reconnect", action="store_true", help="do not reconnect dropped clients")
    run.add_argument(
        "--reconnect-min",
        type=_positive_float,
        default=0.5,
        help="first reconnect backoff in seconds, doubled per failure, with jitter (default 0.5)",
    )
    run.add_argument(
        "--reconnect-max", type=_positive_float, default=30.0, help="backoff ceiling in seconds (default 30)"
    )
    run.add_argument(
        "--echo-every",
        type=_positive_float,
        default=None,
        help="each client emits 'echo' (with ack) every N seconds during the hold",
    )
    run.add_argument(
        "--echo-rate",
        type=_positive_float,
        default=None,
        help="echoes per second from all clients together, spread over them (not with --echo-every): "
        "at 160k clients a per-client interval would make the probe the load",
    )
    run.add_argument(
        "--broadcast-every",
        type=_positive_float,
        default=None,
        help="an extra admin client emits 'broadcast' every N seconds during the hold",
    )
    run.add_argument(
        "--admin-token",
        default=os.environ.get("SIOKIT_ADMIN_TOKEN"),
        help="auth token of the admin namespace (default $SIOKIT_ADMIN_TOKEN); on a shared host prefer "
        "the variable or --admin-token-file: `ps` shows command lines to every user",
    )
    run.add_argument(
        "--admin-token-file",
        type=_read_token_file,
        default=None,
        help="read the admin token from this file (first line); overrides --admin-token",
    )
    run.add_argument("--admin-namespace", default="/admin")
    out = ap.add_argument_group("output")
    out.add_argument("--report", default=None, help="write the JSON report here")
    out.add_argument("--html", default=None, help="write the HTML report here (default: --report with .html)")
    out.add_argument("--no-progress", action="store_true", help="no live progress line on stderr")
    return ap


def _read_token_file(path: str) -> str:
    """The admin token from a file, so it never appears on a command line."""
    try:
        with open(path) as fh:
            token = fh.readline().strip()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read the admin token file {path}: {exc.strerror}") from None
    if not token:
        raise argparse.ArgumentTypeError(f"the admin token file {path} is empty")
    return token


def _port_range() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            lo, hi = (int(x) for x in fh.read().split())
        return hi - lo + 1
    except (OSError, ValueError):
        return 28232


def _validate_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise UsageError(f"--url must look like http://HOST:PORT, got {url!r}")
    try:
        _ = parts.port
    except ValueError:
        raise UsageError(f"--url has a bad port: {url!r}") from None
    return url


def _validate_binds(text: str) -> list[str | None]:
    if not text.strip():
        return [None]
    out: list[str | None] = []
    for item in text.split(","):
        item = item.strip()
        try:
            ip = ipaddress.ip_address(item)
        except ValueError:
            raise UsageError(f"--bind: not an IP address: {item!r}") from None
        if str(ip) in out:
            raise UsageError(f"--bind: {item} given twice")
        out.append(str(ip))
    return out


def make_plan(args: argparse.Namespace, nofile: tuple[int, int] | None = None) -> Plan:
    """Validate the arguments and split the work into per-process plans. Raises UsageError."""
    if args.url and args.port:
        raise UsageError("give --url or --port, not both")
    if not args.url and not args.port:
        raise UsageError("--url is required (or --port for http://127.0.0.1:PORT)")
    url = _validate_url(args.url or f"http://127.0.0.1:{args.port}")
    binds = _validate_binds(args.bind)
    if getattr(args, "admin_token_file", None):
        args.admin_token = args.admin_token_file
    if args.broadcast_every and args.admin_token is None:
        raise UsageError("--broadcast-every needs $SIOKIT_ADMIN_TOKEN, --admin-token-file or --admin-token")
    if args.transport == "polling" and urlsplit(url).scheme in ("https", "wss"):
        raise UsageError("--transport polling supports http:// URLs only")
    if not args.namespace.startswith("/"):
        raise UsageError("--namespace must start with '/'")

    _soft, hard = nofile or resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    max_per_proc = max(0, limit - FD_OVERHEAD) * 100 // 101  # inverse of fds_needed()
    if max_per_proc <= 0:
        raise UsageError(f"RLIMIT_NOFILE hard limit {hard} leaves no room for client sockets")

    if args.connections is not None:
        total = args.connections
        if args.batch_round is not None:
            raise UsageError(
                "--batch-round only applies without --connections "
                "(with --connections, rounds = clients per process / --batch-size)"
            )
    else:
        rounds = args.batch_round or 1
        procs_per_bind = args.workers or 1
        total = args.batch_size * rounds * procs_per_bind * len(binds)

    if args.echo_rate is not None:
        if args.echo_every is not None:
            raise UsageError("give --echo-every or --echo-rate, not both")
        args.echo_every = total / args.echo_rate  # every client once per this many s -> echo_rate/s

    per_bind = split_evenly(total, len(binds))
    ports = _port_range()
    if max(per_bind) > ports:
        need = math.ceil(total / ports)
        raise UsageError(
            f"{max(per_bind)} clients per source IP exceed the {ports} local ports of "
            f"ip_local_port_range for one destination: use at least {need} --bind addresses"
        )

    min_workers = math.ceil(max(per_bind) / max_per_proc)
    if args.workers is None:
        workers = max(1, min_workers)
    else:
        workers = args.workers
        if workers < min_workers:
            per_proc = math.ceil(max(per_bind) / workers)
            raise UsageError(
                f"{per_proc} clients per process need {fds_needed(per_proc)} open files, above the "
                f"per-process hard limit RLIMIT_NOFILE={hard}: use --workers {min_workers} or more "
                f"(or more --bind addresses)"
            )
    nprocs = workers * len(binds)
    conc = max(1, args.concurrency // nprocs)
    plans: list[WorkerPlan] = []
    for b, bind in enumerate(binds):
        for n in split_evenly(per_bind[b], workers):
            wid = len(plans)
            plans.append(
                WorkerPlan(
                    worker_id=wid,
                    url=url,
                    source_ip=bind,
                    connections=n,
                    batch_size=min(args.batch_size, max(1, n)),
                    batch_round_pause=args.batch_pause,
                    concurrency=conc,
                    namespace=args.namespace,
                    auth=args.auth,
                    transport=args.transport,
                    connect_timeout=args.connect_timeout,
                    echo_every=args.echo_every,
                    broadcast_every=args.broadcast_every if wid == 0 else None,
                    admin_namespace=args.admin_namespace,
                    admin_token=args.admin_token,
                    reconnect=not args.no_reconnect,
                    backoff_min=args.reconnect_min,
                    backoff_max=max(args.reconnect_min, args.reconnect_max),
                    hold=args.hold,
                    nofile=min(limit, fds_needed(n) + (2 if wid == 0 else 0)),
                )
            )
    html = args.html
    if html is None and args.report:
        root, _ = os.path.splitext(args.report)
        html = root + ".html"
    return Plan(
        url=url,
        binds=binds,
        workers_per_bind=workers,
        total=total,
        plans=plans,
        hold=args.hold,
        ramp_timeout=args.ramp_timeout,
        report=args.report,
        html=html,
        progress=not args.no_progress,
        nofile_hard=hard,
    )
