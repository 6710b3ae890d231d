"""Command line of ``siokit load``: parsing, validation and the per-process plan."""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import resource
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from siokit import planner
from siokit.facts import MAX_NOFILE, local_host_facts, local_port_range

from .worker import WorkerPlan, split_evenly

DESCRIPTION = """\
Open many Socket.IO clients (exactly one TCP connection each) against a server, hold them,
optionally drive echo round-trips and admin broadcasts, and report connect latency, failures by
reason, connections held over time, echo and broadcast fan-out latency (JSON + HTML).

Shape of the original load client: --bind A,B,C,D --workers 2 --batch-size 500 --batch-round 10
starts 2 processes per source address, each opening 500 connections per round for 10 rounds
(40,000 clients). --connections N sets the total instead and splits it evenly.

Processes and open files per process are the capacity planner's (siokit/planner.py plan_loadgen):
from --plan FILE (the deployment's plan document, e.g. /etc/siokit/plan.json), or planned here
for this host's cores, open-file hard limit and ip_local_port_range.
"""

EPILOG = """\
examples:
  siokit load --url http://127.0.0.1:8080 --connections 5000 --concurrency 200 --hold 30
  siokit load --url http://127.0.0.1:8080 --bind 127.0.0.2,127.0.0.3 --workers 2 \\
      --batch-size 500 --batch-round 10 --echo-every 10 --broadcast-every 5 --admin-token-file token.txt \\
      --report load.json
"""


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
        help="processes per source IP, checked by the planner (default: planned; not with --plan)",
    )
    scale.add_argument(
        "--plan",
        default=None,
        help="the plan document (siokit plan --json, /etc/siokit/plan.json): processes, clients and open "
        "files per process are its loadgen sizing; --connections defaults to its sockets",
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


def _read_plan(path: str) -> planner.Plan:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--plan {path}: cannot read the plan document: {exc}") from None
    try:
        return planner.Plan.from_dict(data)
    except planner.PlanError as exc:
        raise UsageError(f"--plan {path}: {exc}") from None


def _sizing(
    args: argparse.Namespace,
    total: int,
    sources: int,
    nofile: tuple[int, int] | None,
    cores: int | None,
    port_range: tuple[int, int] | None,
) -> planner.LoadgenPlan:
    """The planner's load generator sizing: the plan document's, or planned here for this host."""
    if args.plan:
        if args.workers is not None:
            raise UsageError(
                "--workers with --plan: the plan sizes the processes; pin loadgen_workers_per_source_ip in "
                "the planner input (siokit_plan_input) instead"
            )
        sizing = _read_plan(args.plan).loadgen
        per_ip = math.ceil(total / sources)
        if per_ip > sizing.clients_per_source_ip:
            raise UsageError(
                f"{total} clients over {sources} source IP(s) = {per_ip} per IP, but the plan ({args.plan}) "
                f"sized {sizing.clients_per_source_ip} per IP ({sizing.clients} clients / {sizing.source_ips} "
                f"source IPs): give more --bind addresses, fewer --connections, or re-plan"
            )
        return sizing
    here = local_host_facts()
    hard = (nofile or resource.getrlimit(resource.RLIMIT_NOFILE))[1]
    facts = replace(
        here,
        cores=cores or here.cores,
        nofile_hard=MAX_NOFILE if hard == resource.RLIM_INFINITY else min(hard, MAX_NOFILE),
    )
    try:
        return planner.plan_loadgen(total, sources, facts, port_range or local_port_range(), args.workers)
    except planner.PlanError as exc:
        raise UsageError(f"{exc} (--bind gives the source IPs, --workers the processes per source IP)") from None


def make_plan(
    args: argparse.Namespace,
    nofile: tuple[int, int] | None = None,
    cores: int | None = None,
    port_range: tuple[int, int] | None = None,
) -> Plan:
    """Validate the arguments and split the work into per-process plans. Raises UsageError.

    nofile (soft, hard), cores and port_range stand for this host's when given (tests).
    """
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

    if args.connections is not None:
        total = args.connections
        if args.batch_round is not None:
            raise UsageError(
                "--batch-round only applies without --connections "
                "(with --connections, rounds = clients per process / --batch-size)"
            )
    elif args.plan and args.batch_round is None:
        total = _read_plan(args.plan).loadgen.clients
    else:
        rounds = args.batch_round or 1
        procs_per_bind = args.workers or 1
        total = args.batch_size * rounds * procs_per_bind * len(binds)

    if args.echo_rate is not None:
        if args.echo_every is not None:
            raise UsageError("give --echo-every or --echo-rate, not both")
        args.echo_every = total / args.echo_rate  # every client once per this many s -> echo_rate/s

    sizing = _sizing(args, total, len(binds), nofile, cores, port_range)
    hard = (nofile or resource.getrlimit(resource.RLIMIT_NOFILE))[1]
    if hard != resource.RLIM_INFINITY and sizing.limit_nofile > hard:
        raise UsageError(
            f"the plan gives each process LimitNOFILE={sizing.limit_nofile}, above this host's hard limit "
            f"RLIMIT_NOFILE={hard}: plan for this host's facts (or run under the planned limit)"
        )
    per_bind = split_evenly(total, len(binds))
    workers = sizing.workers_per_source_ip
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
                    nofile=sizing.limit_nofile,  # clients + the planner's fd reserve (admin client too)
                )
            )
    from .report import charts_available

    html = args.html
    if html and not charts_available():
        raise UsageError("--html needs plotly (the 'report' extra: pip install 'siokit[report]')")
    # The default HTML report only where plotly is installed: the kit's hosts carry the JSON alone
    # (make bench draws the charts on the control machine).
    if html is None and args.report and charts_available():
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
