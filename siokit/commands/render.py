"""`siokit render`: every managed file, rendered from templates/ exactly as Ansible renders it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from siokit import planner


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siokit render", description=__doc__)
    p.add_argument("vars", help="YAML file of variables (role defaults fill the rest)")
    p.add_argument("outdir")
    return p


def main(argv: list[str]) -> int:
    from siokit.render import RenderError, render_all

    args = build_parser().parse_args(argv)
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
