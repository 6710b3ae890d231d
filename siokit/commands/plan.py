"""`siokit plan`: size a deployment for a target number of sockets on this host's (or given) facts."""

from __future__ import annotations

import argparse
import json
import sys

from siokit import planner
from siokit.facts import HostFacts, local_host_facts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siokit plan", description=__doc__)
    p.add_argument("--sockets", type=int, help="target concurrent sockets (required unless --schema/--kit-defaults)")
    p.add_argument(
        "--kit-defaults",
        action="store_true",
        help="target and source IPs from the kit's defaults (siokit_target_sockets, siokit_loadgen_source_ips)",
    )
    p.add_argument("--cores", type=int, help="cores per host (default: this machine's)")
    p.add_argument("--memory-gib", type=float, help="memory per host (default: this machine's)")
    p.add_argument("--nofile-hard", type=int, help="hard RLIMIT_NOFILE (default: this machine's)")
    p.add_argument("--somaxconn", type=int, help="net.core.somaxconn (default: this machine's)")
    p.add_argument("--source-ips", type=int, help="source IPs on the load generator (default 1)")
    p.add_argument("--lb-source-ips", type=int, help="local addresses nginx binds toward upstreams")
    p.add_argument("--app-hosts", type=int, default=1)
    p.add_argument("--ping-interval", type=int, help="Engine.IO ping interval (default: planned)")
    p.add_argument("--ping-timeout", type=int, help="Engine.IO ping timeout (default: planned, >= 20 s)")
    p.add_argument("--uwsgi-instances", type=int, help="uWSGI instances per app host (default: planned)")
    p.add_argument("--async-cores", type=int, help="gevent async cores per instance (default: planned)")
    p.add_argument("--nginx-workers", type=int, help="nginx worker processes (default: planned)")
    p.add_argument("--loadgen-workers", type=int, help="load generator processes per source IP (default: planned)")
    p.add_argument("--colocated", action="store_true", help="every group on this one host")
    p.add_argument("--json", action="store_true", help="the plan document (siokit/plan.schema.json)")
    p.add_argument("--schema", action="store_true", help="print the plan document's JSON Schema and exit")
    p.add_argument(
        "--container-sysctls",
        action="store_true",
        help="print only the planned sysctls a container is created with, as JSON (scripts/cluster.sh)",
    )
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.schema:
        from siokit.plan_schema import schema_text

        print(schema_text(), end="")
        return 0
    if args.kit_defaults:
        from siokit.render import load_defaults

        defaults = load_defaults()
        args.sockets = args.sockets or int(defaults["siokit_target_sockets"])
        args.source_ips = args.source_ips or int(defaults["siokit_loadgen_source_ips"])
    if args.sockets is None:
        parser.error("--sockets is required")
    here = local_host_facts()
    host = HostFacts(
        cores=args.cores or here.cores,
        memory_gib=args.memory_gib or here.memory_gib,
        nofile_hard=args.nofile_hard or here.nofile_hard,
        somaxconn=args.somaxconn or here.somaxconn,
    )
    target = planner.Target(
        sockets=args.sockets,
        app_hosts=args.app_hosts,
        source_ips=args.source_ips or 1,
        lb_source_ips=args.lb_source_ips,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        colocated=args.colocated,
        uwsgi_instances_per_host=args.uwsgi_instances,
        async_cores=args.async_cores,
        nginx_workers=args.nginx_workers,
        loadgen_workers_per_source_ip=args.loadgen_workers,
    )
    try:
        result = planner.plan(target, host)
    except planner.PlanError as exc:
        print(f"siokit plan: impossible target: {exc}", file=sys.stderr)
        return 2
    if args.container_sysctls:
        from siokit.sysctls import container_settable

        print(json.dumps(container_settable(result.sysctls)))
    elif args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(planner.format_plan(result, host))
    return 0
