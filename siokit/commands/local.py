"""`siokit local up|down|status`: the loopback stack (Redis, uWSGI instances, nginx on 127.0.0.1)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siokit local", description=__doc__)
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--instances", type=int, default=2, help="uWSGI instances, a planner input it checks")
    p.add_argument("--port", type=int, default=8080, help="nginx port on 127.0.0.1")
    p.add_argument("--balance", default="ip_hash", choices=["ip_hash", "hash_remote_addr", "least_conn"])
    p.add_argument("--state-dir", default=".siokit/local")
    p.add_argument("--sockets", type=int, default=2000, help="target sockets to size for")
    p.add_argument("--admin-ui", action="store_true", help="serve the Socket.IO Admin UI at /admin-ui/")
    return p


def main(argv: list[str]) -> int:
    from siokit.lab import local

    return local.main(build_parser().parse_args(argv))
