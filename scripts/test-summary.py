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
from collections.abc import Iterator
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


def read(root: ET.Element) -> Counts:
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = failed = skipped = 0
    for suite in suites:
        total += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return Counts(total - failed - skipped, failed, skipped)


def outcomes(root: ET.Element, *tags: str) -> Iterator[tuple[str, str]]:
    """(`classname::name`, message) of each test's `skipped`, `failure` or `error` element named in tags."""
    for case in root.iter("testcase"):
        for outcome in case:
            if outcome.tag in tags:
                message = (outcome.get("message") or outcome.text or "").strip()
                yield f"{case.get('classname')}::{case.get('name')}", message


def unexpected_skips(root: ET.Element) -> list[str]:
    """`classname::name: reason` of each skip whose reason no ALLOWED_SKIPS pattern accepts."""
    return [
        f"{name}: {reason[:200]}"
        for name, reason in outcomes(root, "skipped")
        if not any(p.search(reason) for p in ALLOWED_SKIPS)
    ]


def failures(root: ET.Element) -> list[str]:
    """`classname::name: first line of the message` of each failed or erroring test."""
    return [
        f"{name}: {message.splitlines()[0][:300] if message else ''}"
        for name, message in outcomes(root, "failure", "error")
    ]


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
        root = ET.parse(report).getroot()
        counts = read(root)
        print(counts.line(f"  {stage}"))
        total = total.plus(counts)
        skips += [f"{stage}: {s}" for s in unexpected_skips(root)]
        failed += [f"{stage}: {f}" for f in failures(root)]
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
