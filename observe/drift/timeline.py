"""Drift over time as an inline SVG chart: one line per layer and method, a dashed line at
each threshold. Plain markup, so a report needs no script and no network to show it."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT, MARGIN = 720, 260, 40
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")


@dataclass(frozen=True)
class Point:
    """One window's score: `series` names the line (e.g. "layer 3 classifier")."""

    series: str
    step: int
    score: float
    threshold: float | None


def timeline_svg(points: Sequence[Point], title: str) -> str:
    """An SVG of scores in [0, 1] against the window's last step."""
    if not points:
        return f"<p>{html.escape(title)}: no window was scored.</p>"
    first = min(p.step for p in points)
    last = max(max(p.step for p in points), first + 1)

    def x(step: int) -> float:
        return MARGIN + (WIDTH - 2 * MARGIN) * (step - first) / (last - first)

    def y(score: float) -> float:
        return HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * min(max(score, 0.0), 1.0)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{MARGIN}" y="20" font-family="sans-serif" font-size="14">'
        f"{html.escape(title)}</text>",
        f'<line x1="{MARGIN}" y1="{y(0)}" x2="{WIDTH - MARGIN}" y2="{y(0)}" stroke="#999"/>',
        f'<line x1="{MARGIN}" y1="{y(0)}" x2="{MARGIN}" y2="{y(1)}" stroke="#999"/>',
        f'<text x="4" y="{y(1) + 4}" font-size="11">1</text>',
        f'<text x="4" y="{y(0) + 4}" font-size="11">0</text>',
        f'<text x="{MARGIN}" y="{HEIGHT - 8}" font-size="11">step {first}</text>',
        f'<text x="{WIDTH - MARGIN - 60}" y="{HEIGHT - 8}" font-size="11">step {last}</text>',
    ]
    names = sorted({p.series for p in points})
    for i, name in enumerate(names):
        colour = COLOURS[i % len(COLOURS)]
        series = sorted((p for p in points if p.series == name), key=lambda p: p.step)
        path = " ".join(f"{x(p.step):.1f},{y(p.score):.1f}" for p in series)
        parts.append(f'<polyline fill="none" stroke="{colour}" points="{path}"/>')
        thresholds = [p.threshold for p in series if p.threshold is not None]
        if thresholds:
            level = y(thresholds[-1])
            parts.append(
                f'<line x1="{MARGIN}" y1="{level:.1f}" x2="{WIDTH - MARGIN}" y2="{level:.1f}" '
                f'stroke="{colour}" stroke-dasharray="4 3"/>'
            )
        parts.append(
            f'<text x="{WIDTH - MARGIN + 4 - 160}" y="{36 + 14 * i}" font-size="11" '
            f'fill="{colour}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
