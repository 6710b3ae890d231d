"""Entry point of ``siokit load`` (dispatched by siokit.cli) and ``python -m siokit.load``."""

from __future__ import annotations

import contextlib
import json
import sys

from .options import UsageError, build_parser, make_plan


def main(argv: list[str] | None = None, prog: str = "siokit load") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        plan = make_plan(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2

    from .report import write_html, write_json
    from .runner import run

    report = run(plan)
    if plan.report:
        write_json(report, plan.report)
    if plan.html:
        write_html(report, plan.html)
    elif plan.report:
        print(f"{prog}: no HTML report: plotly is not installed (pip install 'siokit[report]')", file=sys.stderr)
    summary = {
        "ok": report["ok"],
        "held_at_end": report["connections"]["held_at_end"],
        "target": report["connections"]["target"],
        "connect_rate_per_s": report["connections"]["connect_rate_per_s"],
        "failures": report["failures"],
        "latency_ms": {k: {q: v.get(q) for q in ("p50", "p99", "max")} for k, v in report["latency_ms"].items()},
        "reconnects": report["connections"]["reconnects"],
        "drops": report["connections"]["drops"],
        "drop_reasons": report["connections"]["drop_reasons"],
        "reconnect_failures": report["connections"]["reconnect_failures"],
        "loop_lag_max_ms": report["loop_lag"]["max_ms"],
        "errors": report["errors"],
        "diagnosis": report["diagnosis"],
    }
    for line in report["diagnosis"]:
        print(f"{prog}: {line}", file=sys.stderr)
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps(summary, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
