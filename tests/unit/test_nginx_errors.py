"""siokit/nginx_errors.py: nginx's failed upstream attempts counted from its log into a textfile.

The log lines are the ones nginx 1.22 wrote on loopback with the kit's log_format siokit_upstream:
a retry that succeeded on the second instance, a connect refused, "no live upstreams" (the group's
name in $upstream_addr), an instance's own 503.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from siokit import nginx_errors
from siokit.nginx_errors import LogFollower, exposition, failed_attempts

RETRIED = '1796283642.419 200 "127.0.0.1:18991, 127.0.0.1:18992" "502, 200"'
REFUSED = '1796283642.469 502 "127.0.0.1:18991" "502"'
NO_LIVE = '1796283646.516 502 "dead" "502"'
ANSWERED_503 = '1796283642.501 503 "127.0.0.1:18992" "503"'


def test_failed_attempts() -> None:
    assert failed_attempts(RETRIED) == [("127.0.0.1:18991", "502")]
    assert failed_attempts(REFUSED) == [("127.0.0.1:18991", "502")]
    assert failed_attempts(NO_LIVE) == [("dead", "502")]
    assert failed_attempts(ANSWERED_503) == [("127.0.0.1:18992", "503")]
    # An internal redirect separates groups with " : "; IPv6 addresses hold colons too.
    assert failed_attempts('1.0 200 "[::1]:8001, [::1]:8002 : 10.0.0.1:80" "504, 502 : 200"') == [
        ("[::1]:8001", "504"),
        ("[::1]:8002", "502"),
    ]
    assert failed_attempts('1.0 101 "10.0.0.1:8001" "101"') == []
    assert failed_attempts("garbage") == []
    assert failed_attempts('1.0 502 "a, b" "502"') == []  # lists that do not pair up


def test_exposition_is_prometheus_text() -> None:
    text = exposition(Counter({("10.0.0.11:8001", "502"): 3, ('we"ird', "504"): 1}))
    assert text.splitlines() == [
        "# HELP siokit_nginx_upstream_errors_total Upstream attempts of nginx that failed with a 5xx "
        "(connect error, timeout, 5xx answer).",
        "# TYPE siokit_nginx_upstream_errors_total counter",
        'siokit_nginx_upstream_errors_total{upstream="10.0.0.11:8001",status="502"} 3',
        'siokit_nginx_upstream_errors_total{upstream="we\\"ird",status="504"} 1',
    ]


def test_follower_starts_at_the_end_and_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    log.write_text(REFUSED + "\n")
    follower = LogFollower(str(log))
    assert follower.lines() == []  # what was there before the start is not counted again
    with log.open("a") as fh:
        fh.write(NO_LIVE + "\n" + ANSWERED_503[:10])  # the last line is still being written
    assert follower.lines() == [NO_LIVE]
    with log.open("a") as fh:
        fh.write(ANSWERED_503[10:] + "\n" + RETRIED + "\n")
    # logrotate: the old file moves away (one more line reaches it first), a new one starts
    os.rename(log, tmp_path / "up.log.1")
    with (tmp_path / "up.log.1").open("a") as fh:
        fh.write(REFUSED + "\n")
    log.write_text(NO_LIVE + "\n")
    assert follower.lines() == [ANSWERED_503, RETRIED, REFUSED, NO_LIVE]
    assert follower.lines() == []


def test_follower_waits_for_the_log_to_appear(tmp_path: Path) -> None:
    follower = LogFollower(str(tmp_path / "later.log"))
    assert follower.lines() == []
    (tmp_path / "later.log").write_text(REFUSED + "\n")
    assert follower.lines() == [REFUSED]


def test_main_once_writes_the_textfile(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    log.write_text("\n".join([RETRIED, REFUSED, NO_LIVE, ANSWERED_503, REFUSED]) + "\n")
    assert nginx_errors.main(["--log", str(log), "--textfile-dir", str(tmp_path), "--once"]) == 0
    text = (tmp_path / "siokit_nginx_upstream.prom").read_text()
    assert 'siokit_nginx_upstream_errors_total{upstream="127.0.0.1:18991",status="502"} 3' in text
    assert 'siokit_nginx_upstream_errors_total{upstream="dead",status="502"} 1' in text
    assert 'siokit_nginx_upstream_errors_total{upstream="127.0.0.1:18992",status="503"} 1' in text
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run scripts/deps.sh (Debian package 'prometheus')"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_known_upstreams_are_exported_at_zero_before_any_error(tmp_path: Path) -> None:
    # increase() and rate() need two samples: a series born with its first error hides that error.
    log = tmp_path / "up.log"
    log.write_text(REFUSED + "\n")
    args = ["--log", str(log), "--textfile-dir", str(tmp_path), "--once"]
    assert nginx_errors.main([*args, "--upstream", "127.0.0.1:18991", "--upstream", "127.0.0.1:18992"]) == 0
    text = (tmp_path / "siokit_nginx_upstream.prom").read_text()
    assert 'siokit_nginx_upstream_errors_total{upstream="127.0.0.1:18991",status="502"} 1' in text
    assert 'siokit_nginx_upstream_errors_total{upstream="127.0.0.1:18991",status="504"} 0' in text
    assert 'siokit_nginx_upstream_errors_total{upstream="127.0.0.1:18992",status="502"} 0' in text
    assert 'siokit_nginx_upstream_errors_total{upstream="127.0.0.1:18992",status="504"} 0' in text
