"""JSON report and a self-contained HTML report (Plotly charts, the JS inlined: opens offline, no CDN)."""

from __future__ import annotations

import html
import importlib.util
import json
import os
from typing import Any

from .stats import Histogram


def write_json(report: dict[str, Any], path: str) -> None:
    _ensure_dir(path)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(report, fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)


def write_html(report: dict[str, Any], path: str, server: dict[str, Any] | None = None) -> None:
    """`server`: siokit bench's server-side series (siokit/lab/server_series.py); None: no such section."""
    _ensure_dir(path)
    with open(path, "w") as fh:
        fh.write(render_html(report, server))


def _ensure_dir(path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 100:
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 100 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def charts_available() -> bool:
    """Whether plotly (the 'report' extra) is installed: the HTML report needs it, the JSON does not."""
    return importlib.util.find_spec("plotly") is not None


# Plotly (a maintained charting library, pinned in constraints.txt) draws the charts; its JS is
# inlined once per report, so the file opens offline: no CDN, no second file.
_AXIS = {"showgrid": True, "gridcolor": "#e5e5e5", "zeroline": False, "showline": True, "linecolor": "#444"}


def _figure(title: str, xtitle: str, ytitle: str, **layout: Any) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(
        title={"text": title},
        xaxis={**_AXIS, "title": {"text": xtitle}},
        yaxis={**_AXIS, "title": {"text": ytitle}},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        template="plotly_white",
        height=360,
        margin={"l": 70, "r": 70, "t": 70, "b": 60},
        **layout,
    )
    return fig


def connections_figure(timeline: list[dict[str, Any]]) -> Any:
    """Clients held (left axis) and cumulative handshake failures (right axis) over the run."""
    import plotly.graph_objects as go

    t = [float(s["t"]) for s in timeline]
    fig = _figure(
        "Connections held and handshake failures",
        "time since start (s)",
        "clients held",
        yaxis2={
            **_AXIS,
            "title": {"text": "handshake failures (cumulative)"},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
            # No failure at all: a 0..1 axis, not one centred on zero.
            **({"range": [0, 1], "dtick": 1} if not any(s["failures"] for s in timeline) else {}),
        },
    )
    fig.update_yaxes(rangemode="tozero", selector={"title": {"text": "clients held"}})
    fig.add_trace(go.Scatter(x=t, y=[s["connected"] for s in timeline], name="clients held", mode="lines"))
    fig.add_trace(
        go.Scatter(
            x=t,
            y=[s["failures"] for s in timeline],
            name="handshake failures",
            mode="lines",
            yaxis="y2",
            line={"dash": "dot"},
        )
    )
    # The phases (ramp, hold) as shaded bands: where each one starts and ends in the timeline.
    bands: list[tuple[str, float, float]] = []
    for sample, x in zip(timeline, t, strict=True):
        phase = str(sample.get("phase", ""))
        if bands and bands[-1][0] == phase:
            bands[-1] = (phase, bands[-1][1], x)
        else:
            bands.append((phase, x, x))
    for phase, x0, x1 in bands:
        if phase == "hold" and x1 > x0:
            fig.add_vrect(x0=x0, x1=x1, fillcolor="#2ca02c", opacity=0.07, line_width=0, annotation_text="hold")
    return fig


LATENCIES = (("connect", "connect"), ("echo", "echo round trip"), ("broadcast_fanout", "broadcast fan-out"))


def latency_figure(hists: dict[str, Histogram]) -> Any:
    """The latency distributions as cumulative curves: share of samples at or below each latency."""
    import plotly.graph_objects as go

    fig = _figure("Latency distribution", "latency (ms, log scale)", "samples at or below (%)")
    fig.update_xaxes(type="log")
    fig.update_yaxes(range=[0, 100.5])
    for key, label in LATENCIES:
        hist = hists.get(key, Histogram())
        bars = hist.bars()
        if not bars:
            continue
        running, xs, ys = 0, [], []
        for edge, count in bars:
            running += count
            xs.append(edge * 1000)
            ys.append(100.0 * running / hist.count)
        fig.add_trace(go.Scatter(x=xs, y=ys, name=f"{label} ({hist.count:,} samples)", mode="lines", line_shape="hv"))
    if not fig.data:
        fig.add_annotation(text="no samples", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def broadcast_figure(per_broadcast: list[dict[str, Any]], held: int) -> Any:
    """Clients that received each broadcast, against the clients held at the end."""
    import plotly.graph_objects as go

    fig = _figure("Broadcast deliveries", "broadcast (sequence number)", "clients that received it")
    fig.add_trace(go.Bar(x=[b["seq"] for b in per_broadcast], y=[b["clients"] for b in per_broadcast], name="received"))
    if held:
        fig.add_hline(y=held, line_dash="dash", line_color="#d62728", annotation_text=f"held at end: {held:,}")
    return fig


def slo_figure(slo: dict[str, Any]) -> Any:
    """Capacity at the SLO: fan-out p95 (and p50, p99) against clients, per target, with the limit.

    `slo`: target -> siokit.lab.slo.search()'s result (bench/compare.py --slo-p95-ms).
    """
    import plotly.graph_objects as go

    limits = {float(r["slo_p95_ms"]) for r in slo.values()}
    fig = _figure("Capacity at the latency SLO", "clients", "broadcast fan-out (ms)")
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
    for i, (target, result) in enumerate(sorted(slo.items())):
        color = palette[i % len(palette)]
        steps = result["steps"]
        x = [r["clients"] for r in steps]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r["fanout_p95_ms"] for r in steps],
                name=f"{target} p95 (capacity {result['capacity']:,})",
                mode="lines+markers",
                line={"color": color},
                marker={"symbol": ["circle" if r["ok"] else "x" for r in steps], "size": 9},
                text=[r["why_not"] or "meets the SLO" for r in steps],
                hovertemplate="%{x:,} clients: p95 %{y:.1f} ms<br>%{text}<extra></extra>",
            )
        )
        for q, dash in (("fanout_p50_ms", "dot"), ("fanout_p99_ms", "dash")):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[r[q] for r in steps],
                    name=f"{target} {q.split('_')[1]}",
                    mode="lines",
                    line={"color": color, "dash": dash, "width": 1},
                )
            )
        if result["capacity"]:
            fig.add_vline(x=result["capacity"], line_color=color, line_dash="dot", opacity=0.6)
    for limit in sorted(limits):
        fig.add_hline(y=limit, line_color="#d62728", annotation_text=f"SLO: p95 <= {limit:g} ms")
    return fig


def server_figure(
    title: str, unit: str, by_instance: dict[str, dict[str, Any]], offset_s: float, hold: tuple[float, float] | None
) -> Any:
    """One server-side series (Prometheus), a line per uWSGI instance, on the load's time axis.

    offset_s: the query window's start in seconds since the load started; hold: the hold phase."""
    import plotly.graph_objects as go

    fig = _figure(f"{title} per uWSGI instance (Prometheus)", "time since start (s)", unit)
    # One entry per instance (ten on the local cluster): a column beside the plot, not over its title.
    fig.update_layout(legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1.0, "yanchor": "top"})
    fig.update_yaxes(rangemode="tozero")
    for instance, row in by_instance.items():
        name = f"{row['host']} {instance}" if row.get("host") else instance
        fig.add_trace(go.Scatter(x=[t + offset_s for t in row["t"]], y=row["v"], name=name, mode="lines+markers"))
    if not fig.data:
        fig.add_annotation(text="no series", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    if hold and hold[1] > hold[0]:
        fig.add_vrect(x0=hold[0], x1=hold[1], fillcolor="#2ca02c", opacity=0.07, line_width=0, annotation_text="hold")
    return fig


def server_figures(server: dict[str, Any], r: dict[str, Any]) -> list[Any]:
    """The figures of a collected server section, in siokit/lab/server_series.py's QUERIES order."""
    offset = float(server["window"]["start"]) - float(r.get("started_at", server["window"]["start"]))
    ramp, hold_s = float(r["duration"]["ramp_s"]), float(r["duration"]["hold_s"])
    return [
        server_figure(q["title"], q["unit"], server["series"].get(name, {}), offset, (ramp, ramp + hold_s))
        for name, q in server["queries"].items()
    ]


def _server_html(server: dict[str, Any] | None, divs: list[str]) -> str:
    if server is None:
        return ""
    head = "<h2>Server side (Prometheus on the monitor host)</h2>"
    if not server.get("collected"):
        return f"{head}<p>Not collected: {_esc(server.get('note', 'no monitor host'))}</p>"
    w = server["window"]
    labels = {
        "sockets_peak": "peak sockets",
        "rss_mib_peak": "peak RSS (MiB)",
        "cpu_cores_mean": "mean CPU (cores)",
        "cpu_cores_peak": "peak CPU (cores)",
    }
    cols = tuple(labels)
    heads = "".join(f"<th>{_esc(c)}</th>" for c in ("instance", *labels.values()))
    rows = "".join(
        f"<tr><th>{_esc(' '.join(filter(None, (v.get('host'), i))))}</th>"
        + "".join(f"<td>{_esc(_fmt(v.get(c)))}</td>" for c in cols)
        + "</tr>"
        for i, v in server["per_instance"].items()
    )
    return (
        f"{head}<p>From {_esc(server['source'])}: one point every {w['step_s']} s (scrape interval "
        f"{_esc(_fmt(w['scrape_interval_s']))} s), CPU as a rate over {w['rate_s']} s. Each uWSGI instance's "
        f"own /metrics (job siokit).</p><table><tr>{heads}</tr>{rows}</table>" + "".join(divs)
    )


def _div(fig: Any, first: bool) -> str:
    return str(fig.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False}))


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; text-align: left; }
.ok { color: #080; } .bad { color: #b00; }
"""


def write_slo_html(slo: dict[str, Any], path: str) -> None:
    _ensure_dir(path)
    with open(path, "w") as fh:
        fh.write(render_slo_html(slo))


def render_html(r: dict[str, Any], server: dict[str, Any] | None = None) -> str:
    """The report as one HTML file: tables and Plotly charts, the library's JS inlined once.

    `server`: siokit bench's server-side series; collected or not, it gets a section of its own."""
    cfg, con, lat = r["config"], r["connections"], r["latency_ms"]
    hists = {k: Histogram.from_dict(v) for k, v in r.get("histograms", {}).items()}
    lat_rows = "".join(
        f"<tr><th>{_esc(name)}</th>"
        + "".join(f"<td>{_esc(_fmt(lat[name].get(q)))}</td>" for q in ("count", "p50", "p90", "p99", "max"))
        + "</tr>"
        for name in ("connect", "echo", "broadcast_fanout")
    )
    fail_rows = (
        "".join(f"<tr><th>{_esc(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in r["failures"].items())
        or "<tr><td>none</td></tr>"
    )
    drop_rows = (
        "".join(f"<tr><th>{_esc(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in con.get("drop_reasons", {}).items())
        or "<tr><td>none</td></tr>"
    )
    per_b = r["broadcast"]["per_broadcast"]
    figures = [
        connections_figure(r.get("timeline", [])),
        latency_figure(hists),
        broadcast_figure(per_b, con["held_at_end"]),
    ]
    if server and server.get("collected"):
        figures += server_figures(server, r)
    divs = [_div(fig, i == 0) for i, fig in enumerate(figures)]
    errors = "".join(f"<pre>{_esc(k)}: {_esc(v)}</pre>" for k, v in r.get("errors", {}).items())
    status = "OK" if r.get("ok") else "NOT OK"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>siokit load report</title>
<style>{STYLE}</style></head><body>
<h1>siokit load report <span class="{"ok" if r.get("ok") else "bad"}">{status}</span></h1>
<h2>Run</h2>
{
        _table(
            [
                ("url", cfg["url"]),
                ("target connections", con["target"]),
                ("held at end", con["held_at_end"]),
                ("peak held", con["peak_held"]),
                ("processes", cfg["processes"]),
                ("source IPs", ", ".join(cfg["binds"]) or "(kernel default)"),
                ("transport", cfg["transport"]),
                ("transports used", json.dumps(con["transports"])),
                ("ramp s", r["duration"]["ramp_s"]),
                ("connect rate /s", con["connect_rate_per_s"]),
                ("hold s", r["duration"]["hold_s"]),
                ("attempts", con["attempts"]),
                ("reconnects", con["reconnects"]),
                ("reconnect attempts", con.get("reconnect_attempts")),
                ("drops", con["drops"]),
                ("event-loop lag max ms (worst worker)", r.get("loop_lag", {}).get("max_ms")),
                ("client RSS KB per connection (whole processes)", r.get("client", {}).get("rss_kb_per_connection")),
                ("client CPU s", r.get("client", {}).get("cpu_s")),
            ]
        )
    }
<h2>Connections held over time</h2>
{divs[0]}
<h2>Latency (ms)</h2>
<table><tr><th></th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>{lat_rows}</table>
{divs[1]}
<h2>Handshake failures by reason</h2>
<table>{fail_rows}</table>
<h2>Drops by reason (as the clients saw them)</h2>
<table>{drop_rows}</table>
<h2>Broadcasts</h2>
<p>sent {_fmt(r["broadcast"]["sent"])}, deliveries {_fmt(r["broadcast"]["received_total"])}</p>
{divs[2]}
{_server_html(server, divs[3:])}
{errors}
</body></html>
"""


def render_slo_html(slo: dict[str, Any]) -> str:
    """Capacity at a latency SLO as one HTML file: the curve per target and each target's steps.

    `slo`: target -> siokit.lab.slo.search()'s result, as bench/compare.py --slo-p95-ms writes them.
    """
    tables = "".join(_slo_table(target, result) for target, result in sorted(slo.items()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>siokit capacity at a latency SLO</title>
<style>{STYLE}</style></head><body>
<h1>Capacity at the latency SLO</h1>
<p>Each step is a fresh <code>siokit load</code> run of that many clients; a step meets the SLO when every
client was held, no handshake failed, enough broadcasts reached every client and the pooled p95
broadcast fan-out is within the limit (siokit/lab/slo.py). Crosses mark the step that missed it.</p>
{_div(slo_figure(slo), True)}
{tables}
</body></html>
"""


def _slo_table(target: str, result: dict[str, Any]) -> str:
    cols = (
        "clients",
        "held",
        "complete_broadcasts",
        "fanout_p50_ms",
        "fanout_p95_ms",
        "fanout_p99_ms",
        "ok",
        "why_not",
    )
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{_esc(('yes' if row[c] else 'no') if c == 'ok' else _fmt(row.get(c)))}</td>" for c in cols)
        + "</tr>"
        for row in result["steps"]
    )
    more = " (every step met it: the limit is --max)" if result.get("limited_by_max") else ""
    return (
        f"<h3>{_esc(target)}: {_fmt(result['capacity'])} clients at p95 fan-out &lt;= "
        f"{_esc(_fmt(result['slo_p95_ms']))} ms{_esc(more)}</h3><table><tr>{head}</tr>{rows}</table>"
    )
