#!/usr/bin/env python3
"""Add up the JUnit XML reports of every `make test` stage into one closing line.

`make test` runs pytest several times (unit, loopback integration, converge, testinfra under
Molecule); each prints its own summary in the middle of the log. CI reads the last lines, so this
prints the totals there, one line per stage and one per failed test above it, also after a stage
failed and stopped the run. Exits 1 when a report is missing or names
a failure, so a stage that wrote nothing cannot pass unnoticed, and when a test was skipped for a
reason not listed in ALLOWED_SKIPS: under `make test` a missing prerequisite is a failure.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

# The only skips `make test` accepts, each a limit of where the test runs, not a missing tool.
ALLOWED_SKIPS = (
    # A container cannot set every planned sysctl (tests/infra/test_40_sysctl.py lists which and why;
    # the Vagrant VMs set them all).
    re.compile(r"sysctl\(s\) from .+ cannot be set on "),
    # A CPU measurement, run on purpose on a quiet machine (tests/integration/test_app_uwsgi.py).
    re.compile(r"set SIOKIT_MEASURE_IDLE_CPU=1"),
)


@dataclass(frozen=True)
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    def plus(self, other: Counts) -> Counts:
        return Counts(self.passed + other.passed, self.failed + other.failed, self.skipped + other.skipped)

    def line(self, label: str) -> str:
        return f"{label}: {self.passed} passed, {self.failed} failed, {self.skipped} skipped"


def read(report: Path) -> Counts:
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = failed = skipped = 0
    for suite in suites:
        total += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return Counts(total - failed - skipped, failed, skipped)


def unexpected_skips(report: Path) -> list[str]:
    """`classname::name: reason` of each skip whose reason no ALLOWED_SKIPS pattern accepts."""
    found = []
    for case in ET.parse(report).getroot().iter("testcase"):
        for skip in case.iter("skipped"):
            reason = skip.get("message") or skip.text or ""
            if not any(p.search(reason) for p in ALLOWED_SKIPS):
                found.append(f"{case.get('classname')}::{case.get('name')}: {reason.strip()[:200]}")
    return found


def failures(report: Path) -> list[str]:
    """`classname::name: first line of the message` of each failed or erroring test."""
    found = []
    for case in ET.parse(report).getroot().iter("testcase"):
        for bad in (*case.iter("failure"), *case.iter("error")):
            message = (bad.get("message") or bad.text or "").strip().splitlines()
            found.append(f"{case.get('classname')}::{case.get('name')}: {message[0][:300] if message else ''}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: test-summary.py REPORT_DIR STAGE [STAGE ...]", file=sys.stderr)
        return 2
    directory, stages = Path(argv[0]), argv[1:]
    total, missing, skips, failed = Counts(), [], [], []
    for stage in stages:
        report = directory / f"{stage}.xml"
        if not report.is_file():
            missing.append(stage)
            continue
        counts = read(report)
        print(counts.line(f"  {stage}"))
        total = total.plus(counts)
        skips += [f"{stage}: {s}" for s in unexpected_skips(report)]
        failed += [f"{stage}: {f}" for f in failures(report)]
    for stage in missing:
        print(f"  {stage}: no report at {directory / (stage + '.xml')}", file=sys.stderr)
    for skip in skips:
        print(f"  skipped, not allowed: {skip}", file=sys.stderr)
    for failure in failed:
        print(f"  failed: {failure}", file=sys.stderr)
    print(total.line("test") + (f" ({len(skips)} skips not allowed)" if skips else ""))
    return 1 if missing or skips or total.failed or not total.passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
