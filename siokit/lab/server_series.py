"""Server-side series of a bench run, from Prometheus on the deployment's `monitor` host.

What each uWSGI instance held and spent while the load ran, as Prometheus scraped it from the
instance's own /metrics (job `siokit`, templates/prometheus/prometheus.yml.j2):

    sockets     siokit_connected_sockets, every namespace (the dashboard's "Sockets per instance")
    cpu_cores   rate(process_cpu_seconds_total): prometheus_client's process collector
    rss_mib     process_resident_memory_bytes, in MiB

One query_range per series over the run's window. The step is sized to the run (at least the scrape
interval; at most MAX_POINTS points). The rate window is Grafana's $__rate_interval
(max(step + scrape interval, 4 x scrape interval)), so every step's rate spans several scrapes.

Prometheus is reached through a `Getter` (path, params) -> the answer's `data`: plain HTTP from
this machine (`http_getter`), or, in tests/infra, curl on the monitor host itself.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

Getter = Callable[[str, Mapping[str, str]], Any]

JOB = "siokit"
MAX_POINTS = 120  # per series: enough to draw, small enough for bench/results/<name>.json
MIB = 1024 * 1024


@dataclass(frozen=True)
class Query:
    expr: str  # `{rate}`: the rate window in seconds
    title: str
    unit: str  # the y axis' title
    scale: float = 1.0


# `by (host, instance)`: the scrape config's `host` label names the inventory host in legends.
QUERIES: dict[str, Query] = {
    "sockets": Query(f'sum by (host, instance) (siokit_connected_sockets{{job="{JOB}"}})', "Sockets", "sockets"),
    "cpu_cores": Query(
        f'sum by (host, instance) (rate(process_cpu_seconds_total{{job="{JOB}"}}[{{rate}}s]))',
        "CPU",
        "CPU (cores)",
    ),
    "rss_mib": Query(
        f'sum by (host, instance) (process_resident_memory_bytes{{job="{JOB}"}})',
        "Resident memory",
        "resident memory (MiB)",
        1 / MIB,
    ),
}


class PrometheusError(RuntimeError):
    """Prometheus did not answer, or answered with an error; the message says which."""


def http_getter(base_url: str, timeout: float = 15.0) -> Getter:
    """GET base_url + path with params; the answer's `data`."""

    def get(path: str, params: Mapping[str, str]) -> Any:
        url = f"{base_url.rstrip('/')}{path}?{urllib.parse.urlencode(dict(params))}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # Prometheus' 400/422 carry the error in the body
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise PrometheusError(f"{url}: HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:
            raise PrometheusError(f"{url}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params)}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    return get


_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_s(text: str) -> float:
    """A Prometheus duration ("15s", "1m30s") in seconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


@dataclass(frozen=True)
class Window:
    start: float  # Unix time
    end: float
    step_s: int
    rate_s: int
    scrape_interval_s: float


def window_for(start: float, end: float, scrape_interval_s: float, max_points: int = MAX_POINTS) -> Window:
    """The query window of a run: a step of at least one scrape interval and at most `max_points`
    points; the rate window as Grafana's $__rate_interval."""
    if end <= start:
        raise ValueError(f"empty window: {start} .. {end}")
    step = max(math.ceil(scrape_interval_s), math.ceil((end - start) / max_points))
    rate = max(step + math.ceil(scrape_interval_s), math.ceil(4 * scrape_interval_s))
    return Window(start, end, step, rate, scrape_interval_s)


def app_targets(get: Getter) -> list[dict[str, Any]]:
    """Prometheus' active targets of the app's job."""
    data = get("/api/v1/targets", {"state": "active"})
    return [t for t in data["activeTargets"] if t["labels"].get("job") == JOB]


def scrape_interval_s(targets: list[dict[str, Any]]) -> float:
    """The app job's scrape interval, as Prometheus reports it per target."""
    found = {duration_s(t["scrapeInterval"]) for t in targets if t.get("scrapeInterval")}
    if not found:
        raise PrometheusError(f"Prometheus has no active target of job {JOB!r} (or reports no scrape interval)")
    return max(found)


def _scraped_at(target: dict[str, Any]) -> float:
    return datetime.fromisoformat(target["lastScrape"]).timestamp()


def wait_for_scrapes_after(get: Getter, at: float, timeout: float, poll: float = 1.0) -> list[dict[str, Any]]:
    """Wait (at most `timeout` s) until every app target was scraped after `at`, so the window's last
    step holds the run's end; the targets, and those still not scraped since are left as they are."""
    deadline = time.time() + timeout
    while True:
        targets = app_targets(get)
        late = [t for t in targets if t["health"] == "up" and _scraped_at(t) < at]
        if not late or time.time() >= deadline:
            return targets
        time.sleep(poll)


def to_series(result: list[dict[str, Any]], t0: float, scale: float = 1.0) -> dict[str, dict[str, Any]]:
    """query_range's matrix -> {instance: {"host", "t": [s since t0], "v": [values x scale]}}.

    NaN (a rate over a restart) and infinities are dropped with their timestamps."""
    out: dict[str, dict[str, Any]] = {}
    for row in result:
        instance = row["metric"].get("instance", "")
        ts: list[float] = []
        vs: list[float] = []
        for stamp, value in row["values"]:
            v = float(value) * scale
            if math.isfinite(v):
                ts.append(round(float(stamp) - t0, 2) + 0.0)  # + 0.0: no "-0.0"
                vs.append(round(v, 4))
        out[instance] = {"host": row["metric"].get("host", ""), "t": ts, "v": vs}
    return dict(sorted(out.items()))


def per_instance(series: Mapping[str, Mapping[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per instance: its host, peak sockets, peak RSS, mean and peak CPU over the window."""

    def stat(name: str, instance: str, fn: Callable[[list[float]], float]) -> float | None:
        values = series.get(name, {}).get(instance, {}).get("v") or []
        return round(fn(values), 3) if values else None

    def count(instance: str) -> int | None:
        peak = stat("sockets", instance, max)
        return None if peak is None else int(peak)

    hosts = {i: str(row.get("host", "")) for rows in series.values() for i, row in rows.items()}
    return {
        i: {
            "host": hosts[i],
            "sockets_peak": count(i),
            "rss_mib_peak": stat("rss_mib", i, max),
            "cpu_cores_mean": stat("cpu_cores", i, lambda v: sum(v) / len(v)),
            "cpu_cores_peak": stat("cpu_cores", i, max),
        }
        for i in sorted(hosts)
    }


def not_collected(note: str) -> dict[str, Any]:
    return {"collected": False, "note": note}


def collect(get: Getter, start: float, end: float, source: str, settle: bool = True) -> dict[str, Any]:
    """Every QUERIES series over [start, end] (Unix times), per uWSGI instance.

    settle: first wait up to two scrape intervals for the scrapes after `end`."""
    targets = app_targets(get)
    interval = scrape_interval_s(targets)
    if settle:
        targets = wait_for_scrapes_after(get, end, timeout=2 * interval + 5)
    window = window_for(start, end, interval)
    series: dict[str, dict[str, dict[str, Any]]] = {}
    exprs = {name: q.expr.replace("{rate}", str(window.rate_s)) for name, q in QUERIES.items()}
    for name, q in QUERIES.items():
        params = {
            "query": exprs[name],
            "start": f"{window.start:.3f}",
            "end": f"{window.end:.3f}",
            "step": str(window.step_s),
        }
        data = get("/api/v1/query_range", params)
        if data.get("resultType") != "matrix":
            raise PrometheusError(f"query_range {name}: a {data.get('resultType')}, not a matrix")
        series[name] = to_series(data["result"], start, q.scale)
    return {
        "collected": True,
        "source": source,
        "window": asdict(window),
        "targets": [
            {"instance": t["labels"]["instance"], "host": t["labels"].get("host", ""), "health": t["health"]}
            for t in sorted(targets, key=lambda t: str(t["labels"]["instance"]))
        ],
        "queries": {name: {"expr": exprs[name], "unit": q.unit, "title": q.title} for name, q in QUERIES.items()},
        "series": series,
        "per_instance": per_instance(series),
    }
