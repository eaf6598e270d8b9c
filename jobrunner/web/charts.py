"""Success and failure over time as an inline SVG: stacked bars per slice (completed, failed, cancelled),
drawn on the server from ``stats.over_time``, so the page needs no chart library and no network."""

from __future__ import annotations

from html import escape
from typing import Any

WIDTH, HEIGHT, PAD = 720, 160, 24


def rates_svg(doc: dict[str, Any]) -> str:
    buckets = doc["buckets"]
    most = max((b["total"] for b in buckets), default=0) or 1
    n = max(1, len(buckets))
    slot = (WIDTH - 2 * PAD) / n
    bar = max(1.0, slot * 0.8)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + PAD}" role="img" '
             f'aria-label="finished jobs per slice of time: completed, failed, cancelled">',
             f'<line class="axis" x1="{PAD}" y1="{HEIGHT}" x2="{WIDTH - PAD}" y2="{HEIGHT}"/>',
             f'<text class="tick" x="{PAD - 4}" y="{PAD}" text-anchor="end">{most}</text>',
             f'<text class="tick" x="{PAD - 4}" y="{HEIGHT}" text-anchor="end">0</text>']
    for i, b in enumerate(buckets):
        if not b["total"]:
            continue
        x = PAD + i * slot + (slot - bar) / 2
        y = float(HEIGHT)
        rate = b["success_rate"]
        hover = (f"{_short(b['start'])}: {b['completed']} completed, {b['failed']} failed, {b['cancelled']} cancelled"
                 + (f" ({rate:.0%} success)" if rate is not None else ""))
        parts.append(f"<g><title>{escape(hover)}</title>")
        for state in ("completed", "failed", "cancelled"):
            count = b[state]
            if not count:
                continue
            h = (HEIGHT - PAD) * count / most
            y -= h
            parts.append(f'<rect class="bar-{state}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}"/>')
        parts.append("</g>")
    first, last = (buckets[0]["start"], buckets[-1]["end"]) if buckets else ("", "")
    parts.append(f'<text class="tick" x="{PAD}" y="{HEIGHT + 16}">{escape(_short(first))}</text>')
    parts.append(f'<text class="tick" x="{WIDTH - PAD}" y="{HEIGHT + 16}" text-anchor="end">'
                 f'{escape(_short(last))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _short(iso: str) -> str:
    """``2026-12-03T18:00:00.000Z`` -> ``12-03 18:00``."""
    return iso[5:16].replace("T", " ") if len(iso) >= 16 else iso
