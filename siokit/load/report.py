"""JSON report and a self-contained HTML report (inline SVG, no scripts, no CDN)."""

from __future__ import annotations

import html
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


def write_html(report: dict[str, Any], path: str) -> None:
    _ensure_dir(path)
    with open(path, "w") as fh:
        fh.write(render_html(report))


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


PAD_L, PAD_R, PAD_T, PAD_B = 60, 16, 28, 36


def _frame(title: str, width: int, height: int) -> tuple[list[str], float, float]:
    """Opening of a chart: the svg element, its title and the x axis; returns (parts, plot w, plot h)."""
    w, h = width - PAD_L - PAD_R, height - PAD_T - PAD_B
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f"<title>{_esc(title)}</title>",
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{_esc(title)}</text>',
        f'<line x1="{PAD_L}" y1="{PAD_T + h}" x2="{PAD_L + w}" y2="{PAD_T + h}" stroke="#333"/>',
    ]
    return parts, w, h


def svg_line(
    points: list[tuple[float, float]], title: str, xlabel: str, ylabel: str, width: int = 720, height: int = 260
) -> str:
    """A polyline chart of (x, y) points with axes and min/max labels."""
    pad_l, pad_t = PAD_L, PAD_T
    parts, w, h = _frame(title, width, height)
    parts.append(f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" stroke="#333"/>')
    if points:
        xmax = max(p[0] for p in points) or 1.0
        ymax = max(p[1] for p in points) or 1.0
        coords = " ".join(f"{pad_l + w * x / xmax:.1f},{pad_t + h - h * y / ymax:.1f}" for x, y in points)
        parts.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{coords}"/>')
        parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end" font-size="11">{_fmt(ymax)}</text>')
        parts.append(f'<text x="{pad_l + w}" y="{pad_t + h + 14}" text-anchor="end" font-size="11">{_fmt(xmax)}</text>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + h}" text-anchor="end" font-size="11">0</text>')
    parts.append(
        f'<text x="{pad_l + w / 2}" y="{height - 6}" text-anchor="middle" font-size="12">{_esc(xlabel)}</text>'
    )
    parts.append(
        f'<text x="14" y="{pad_t + h / 2}" font-size="12" transform="rotate(-90 14 {pad_t + h / 2})" '
        f'text-anchor="middle">{_esc(ylabel)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def svg_histogram(hist: Histogram, title: str, width: int = 720, height: int = 240) -> str:
    """Bars per non-empty 1% bucket (labelled by their upper edge in ms), first/last labelled."""
    pad_l, pad_t = PAD_L, PAD_T
    parts, w, h = _frame(title, width, height)
    bars = hist.bars()
    if bars:
        top = max(c for _, c in bars)
        bw = w / len(bars)
        for i, (edge, c) in enumerate(bars):
            bh = h * c / top
            x = pad_l + i * bw
            parts.append(
                f'<rect x="{x:.1f}" y="{pad_t + h - bh:.1f}" width="{max(bw - 0.5, 0.5):.1f}" '
                f'height="{bh:.1f}" fill="#ff7f0e"><title>&lt;={edge * 1000:.3f} ms: {c}</title></rect>'
            )
        parts.append(f'<text x="{pad_l}" y="{pad_t + h + 14}" font-size="11">{bars[0][0] * 1000:.2f} ms</text>')
        parts.append(
            f'<text x="{pad_l + w}" y="{pad_t + h + 14}" text-anchor="end" font-size="11">'
            f"{bars[-1][0] * 1000:.1f} ms</text>"
        )
        parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end" font-size="11">{top:,}</text>')
        parts.append(
            f'<text x="{pad_l + w / 2}" y="{height - 6}" text-anchor="middle" font-size="12">'
            f"latency (non-empty buckets in order), {hist.count:,} samples</text>"
        )
    else:
        parts.append(f'<text x="{width / 2}" y="{pad_t + h / 2}" text-anchor="middle" font-size="12">no samples</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render_html(r: dict[str, Any]) -> str:
    cfg, con, lat = r["config"], r["connections"], r["latency_ms"]
    timeline = r.get("timeline", [])
    conn_pts = [(float(s["t"]), float(s["connected"])) for s in timeline]
    fail_pts = [(float(s["t"]), float(s["failures"])) for s in timeline]
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
    per_b = r["broadcast"]["per_broadcast"]
    bcast_rows = "".join(f"<tr><td>{b['seq']}</td><td>{_fmt(b['clients'])}</td></tr>" for b in per_b[:200])
    errors = "".join(f"<pre>{_esc(k)}: {_esc(v)}</pre>" for k, v in r.get("errors", {}).items())
    status = "OK" if r.get("ok") else "NOT OK"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>siokit load report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f4f4f4; text-align: left; }}
.ok {{ color: #080; }} .bad {{ color: #b00; }}
</style></head><body>
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
                ("client RSS KB per connection (whole processes)", r.get("client", {}).get("rss_kb_per_connection")),
                ("client CPU s", r.get("client", {}).get("cpu_s")),
            ]
        )
    }
<h2>Connections held over time</h2>
{svg_line(conn_pts, "connections held", "seconds since start", "clients")}
{svg_line(fail_pts, "handshake failures (cumulative)", "seconds since start", "failures")}
<h2>Latency (ms)</h2>
<table><tr><th></th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>{lat_rows}</table>
{svg_histogram(hists.get("connect", Histogram()), "connect latency")}
{svg_histogram(hists.get("echo", Histogram()), "echo round-trip latency")}
{svg_histogram(hists.get("broadcast_fanout", Histogram()), "broadcast fan-out latency")}
<h2>Handshake failures by reason</h2>
<table>{fail_rows}</table>
<h2>Broadcasts</h2>
<p>sent {_fmt(r["broadcast"]["sent"])}, deliveries {_fmt(r["broadcast"]["received_total"])}</p>
<table><tr><th>seq</th><th>clients that received it</th></tr>{bcast_rows}</table>
{errors}
</body></html>
"""
