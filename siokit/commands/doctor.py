"""`siokit doctor`: check a live deployment against its plan and the field's known pitfalls.

    siokit doctor --url http://lb.example.com                      client-side checks only
    siokit doctor --url http://lb.example.com --inventory INV      and every host of the inventory

Each check prints pass or fail, what it measured, and the fix; the exit status is 1 on any failure.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="siokit doctor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", required=True, help="the public URL clients use (nginx on the lb)")
    p.add_argument("--inventory", help="Ansible inventory of the deployment: adds the host-side checks")
    p.add_argument("--json", action="store_true", help="a JSON report instead of text")
    return p


def main(argv: list[str]) -> int:
    from siokit.doctor import format_json, format_text
    from siokit.doctor.checks import run
    from siokit.doctor.hosts import Fleet

    args = build_parser().parse_args(argv)
    try:
        fleet = Fleet.from_inventory(args.inventory) if args.inventory else None
        results = run(args.url, fleet)
    except (ValueError, RuntimeError) as exc:
        print(f"siokit doctor: {exc}", file=sys.stderr)
        return 2
    print(format_json(results) if args.json else format_text(results))
    return 1 if any(r.failed for r in results) else 0
