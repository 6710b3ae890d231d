"""`siokit` command line: plan, render, local (loopback stack), load (load generator)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from siokit import planner
from siokit.facts import local_facts


def _cmd_plan(args: argparse.Namespace) -> int:
    facts = local_facts()
    host = planner.HostFacts(
        cores=args.cores or facts["cores"],
        memory_gib=args.memory_gib or facts["memory_gib"],
        nofile_hard=args.nofile_hard or facts["nofile_hard"],
        somaxconn=args.somaxconn or facts["somaxconn"],
    )
    target = planner.Target(
        sockets=args.sockets,
        app_hosts=args.app_hosts,
        source_ips=args.source_ips,
        lb_source_ips=args.lb_source_ips,
        ping_interval=args.ping_interval,
        colocated=args.colocated,
    )
    try:
        result = planner.plan(target, host)
    except planner.PlanError as exc:
        print(f"siokit plan: impossible target: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(planner.format_plan(result, host))
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from siokit.render import RenderError, render_all

    user_vars = yaml.safe_load(Path(args.vars).read_text()) or {}
    if not isinstance(user_vars, dict):
        print(f"siokit render: {args.vars} must hold a mapping of variables", file=sys.stderr)
        return 2
    try:
        written = render_all(user_vars, Path(args.outdir))
    except (RenderError, planner.PlanError) as exc:
        print(f"siokit render: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def _cmd_local(args: argparse.Namespace) -> int:
    from siokit import local

    return local.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siokit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="size a deployment for a target number of sockets")
    p.add_argument("--sockets", type=int, required=True)
    p.add_argument("--cores", type=int, help="cores per host (default: this machine's)")
    p.add_argument("--memory-gib", type=float, help="memory per host (default: this machine's)")
    p.add_argument("--nofile-hard", type=int, help="hard RLIMIT_NOFILE (default: this machine's)")
    p.add_argument("--somaxconn", type=int, help="net.core.somaxconn (default: this machine's)")
    p.add_argument("--source-ips", type=int, default=1, help="source IPs on the load generator")
    p.add_argument("--lb-source-ips", type=int, help="local addresses nginx binds toward upstreams")
    p.add_argument("--app-hosts", type=int, default=1)
    p.add_argument("--ping-interval", type=int, help="Engine.IO ping interval (default: planned)")
    p.add_argument("--colocated", action="store_true", help="every group on this one host")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plan)

    r = sub.add_parser("render", help="render every template as Ansible would")
    r.add_argument("vars", help="YAML file of variables (role defaults fill the rest)")
    r.add_argument("outdir")
    r.set_defaults(func=_cmd_render)

    loc = sub.add_parser("local", help="the loopback stack: Redis, uWSGI instances, nginx")
    loc.add_argument("action", choices=["up", "down", "status"])
    loc.add_argument("--instances", type=int, default=2)
    loc.add_argument("--port", type=int, default=8080, help="nginx port on 127.0.0.1")
    loc.add_argument("--balance", default="ip_hash", choices=["ip_hash", "hash_remote_addr", "least_conn"])
    loc.add_argument("--state-dir", default=".siokit/local")
    loc.add_argument("--sockets", type=int, default=2000, help="target sockets to size for")
    loc.set_defaults(func=_cmd_local)

    sub.add_parser("load", help="the load generator (siokit load --help)", add_help=False)
    sub.add_parser("bench", help="load + per-component measurements (siokit bench --help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "load":
        from siokit.load.cli import main as load_main

        return load_main(argv[1:])
    if argv and argv[0] == "bench":
        from siokit.bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
