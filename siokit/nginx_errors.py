"""Count nginx's failed upstream attempts for Prometheus, through node exporter's textfile collector.

nginx (open source) has no counter of upstream errors: stub_status, all prometheus-nginx-exporter
reads, counts connections and requests only. The kit's nginx logs one line per request on which an
upstream attempt failed with a 5xx, in a log of its own (templates/nginx/nginx.conf.j2, log_format
siokit_upstream, `if=$siokit_upstream_failed`: nothing is written for healthy traffic, whatever
the 160k sockets do). This program follows that log and rewrites, every --interval seconds,

    TEXTFILE_DIR/siokit_nginx_upstream.prom
        siokit_nginx_upstream_errors_total{upstream="10.0.0.11:8001",status="502"} 3

which Debian's prometheus-node-exporter, already scraped on every host, exports with the host's
metrics. One count per failed attempt: a request that failed on one instance and was retried on
another (proxy_next_upstream) counts once for the first; "no live upstreams" counts under the
upstream group's name (e.g. upstream="siokit_app"). Why not mtail (Debian's log-to-metrics tool): it
is one more daemon and one more scrape target; this is stdlib Python on the lb, started by systemd
(templates/systemd/siokit-nginx-errors.service.j2), copied there alone by the nginx role.

Every upstream of the rendered config (--upstream) is exported from the start with 0 for the
statuses nginx gives a failed attempt (502 refused/reset, 504 timed out): a counter that only
appears with its first error hides that error from increase() and rate(), which need two samples,
and from a dashboard until then. Other statuses appear when first seen.

The counters start at zero when the program starts (read from the end of the log, so that old lines
are not counted again); Prometheus' rate() takes the reset. A rotated log (new inode, or shorter than
what was read) is read to its end, then the new one from its start.

Stdlib only, no siokit imports: the lb has no kit virtualenv.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter
from typing import IO

METRIC = "siokit_nginx_upstream_errors_total"
# What nginx logs for an attempt that could not connect or was reset (502) or timed out (504).
PRESET_STATUSES = ("502", "504")
PROM_FILE = "siokit_nginx_upstream.prom"
# log_format siokit_upstream '$msec $status "$upstream_addr" "$upstream_status"'
LINE = re.compile(r'^(?P<msec>\d+(?:\.\d+)?) (?P<status>\d{3}) "(?P<addrs>[^"]*)" "(?P<statuses>[^"]*)"$')


def failed_attempts(line: str) -> list[tuple[str, str]]:
    """(upstream, status) of every attempt of one log line that ended in a 5xx.

    nginx lists the attempts of a request as "A, B" ($upstream_addr) and "502, 101"
    ($upstream_status), and the groups of an internal redirect as "A : B"; addresses hold ':' too.
    """
    m = LINE.match(line.strip())
    if not m:
        return []
    addrs = [a for group in m["addrs"].split(" : ") for a in group.split(", ")]
    statuses = [s for group in m["statuses"].split(" : ") for s in group.split(", ")]
    if len(addrs) != len(statuses):
        return []
    return [(a.strip(), s.strip()) for a, s in zip(addrs, statuses, strict=True) if s.strip().startswith("5")]


def preset(upstreams: list[str]) -> dict[tuple[str, str], int]:
    """Zero for every known upstream and failed status, so that each series exists before its first error."""
    return {(u, s): 0 for u in upstreams for s in PRESET_STATUSES}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(counts: Counter[tuple[str, str]]) -> str:
    """The textfile: HELP, TYPE, and one sample per (upstream, status) seen."""
    lines = [
        f"# HELP {METRIC} Upstream attempts of nginx that failed with a 5xx (connect error, timeout, 5xx answer).",
        f"# TYPE {METRIC} counter",
    ]
    for (upstream, status), n in sorted(counts.items()):
        lines.append(f'{METRIC}{{upstream="{_escape(upstream)}",status="{_escape(status)}"}} {n}')
    return "\n".join(lines) + "\n"


def write_atomically(directory: str, text: str) -> None:
    # The temporary name does not end in .prom: node exporter never reads a half-written file.
    tmp = os.path.join(directory, f".{PROM_FILE}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(directory, PROM_FILE))


class LogFollower:
    """Reads the lines appended to a log, across rotations."""

    def __init__(self, path: str, from_start: bool = False) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self._inode: int | None = None
        self._partial = ""
        self._open(at_end=not from_start)

    def _open(self, at_end: bool) -> None:
        try:
            fh = open(self.path, errors="replace")  # noqa: SIM115 (kept open across calls)
        except FileNotFoundError:
            self._fh, self._inode = None, None
            return
        self._fh = fh
        self._inode = os.fstat(fh.fileno()).st_ino
        if at_end:
            fh.seek(0, os.SEEK_END)

    def _read(self) -> list[str]:
        if self._fh is None:
            return []
        data = self._partial + self._fh.read()
        lines = data.split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for its newline
        return lines

    def lines(self) -> list[str]:
        if self._fh is None:
            self._open(at_end=False)  # created since: read it whole
            return self._read()
        out = self._read()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return out  # rotated away, not yet recreated: keep the old handle
        if st.st_ino != self._inode or st.st_size < self._fh.tell():
            out += self._read()
            self._fh.close()
            self._partial = ""
            self._open(at_end=False)
            out += self._read()
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, help="the nginx log written with log_format siokit_upstream")
    ap.add_argument("--textfile-dir", required=True, help="node exporter's --collector.textfile.directory")
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument(
        "--upstream", action="append", default=[], help="an upstream server (ip:port), exported from the start"
    )
    ap.add_argument("--once", action="store_true", help="read the whole log once, write the file, exit")
    args = ap.parse_args(argv)
    counts: Counter[tuple[str, str]] = Counter(preset(args.upstream))
    follower = LogFollower(args.log, from_start=args.once)
    while True:
        for line in follower.lines():
            counts.update(failed_attempts(line))
        write_atomically(args.textfile_dir, exposition(counts))
        if args.once:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
