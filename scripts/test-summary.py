#!/usr/bin/env python3
"""Add up the JUnit XML reports of every `make test` stage into one closing line.

`make test` runs pytest several times (unit, loopback integration, converge, testinfra under
Molecule); each prints its own summary in the middle of the log. CI reads the last line, so this
prints the totals there, one line per stage above it. Exits 1 when a report is missing or names
a failure, so a stage that wrote nothing cannot pass unnoticed.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


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


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: test-summary.py REPORT_DIR STAGE [STAGE ...]", file=sys.stderr)
        return 2
    directory, stages = Path(argv[0]), argv[1:]
    total, missing = Counts(), []
    for stage in stages:
        report = directory / f"{stage}.xml"
        if not report.is_file():
            missing.append(stage)
            continue
        counts = read(report)
        print(counts.line(f"  {stage}"))
        total = total.plus(counts)
    for stage in missing:
        print(f"  {stage}: no report at {directory / (stage + '.xml')}", file=sys.stderr)
    print(total.line("test"))
    return 1 if missing or total.failed or not total.passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
