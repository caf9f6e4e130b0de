"""The figures PromQL computes, from one series' stored points: a counter's increase with
resets, and `histogram_quantile` over buckets' increases.

Points are (unix seconds, value) pairs, oldest first. The increase over a window starts
from the last point at or before the window's start, so a window that a series fully
covers counts all of it; a series that begins inside the window counts from its first
point, as Prometheus does (it never sees what a counter held before its first scrape).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate, pairwise
from typing import TypeVar

# A value, or a histogram's per-bucket counts.
V = TypeVar("V")


def window_points(
    points: Sequence[tuple[float, V]], start: float, end: float
) -> list[tuple[float, V]]:
    """The points in (start, end], after the last one at or before `start` if any."""
    before = [p for p in points if p[0] <= start]
    inside = [p for p in points if start < p[0] <= end]
    return ([before[-1]] if before else []) + inside


def increase(values: Sequence[float]) -> float | None:
    """How much a counter rose across `values`; a drop is a reset (the counter restarted
    from 0), so the value after it counts in full. None with fewer than two values."""
    if len(values) < 2:
        return None
    total = 0.0
    for previous, current in pairwise(values):
        total += current - previous if current >= previous else current
    return total


def bucket_increase(counts: Sequence[Sequence[float]]) -> list[float] | None:
    """Per bucket bound (+Inf last), how many observations up to it an OpenTelemetry
    histogram gained across `counts` (each a cumulative-temporality sample's per-bucket
    counts): Prometheus's `increase` of each `_bucket{le}` series, resets found per series.
    None with fewer than two samples; only samples with the newest number of buckets count."""
    width = len(counts[-1]) if counts else 0
    up_to = [list(accumulate(c)) for c in counts if len(c) == width]
    if len(up_to) < 2:
        return None
    return [increase([c[i] for c in up_to]) or 0.0 for i in range(width)]


def histogram_quantile(q: float, bounds: Sequence[float], up_to: Sequence[float]) -> float:
    """PromQL's `histogram_quantile(q, ...)` for buckets with upper `bounds` (+Inf after the
    last) holding `up_to` observations up to each: linear inside the bucket the rank falls
    in, the largest finite bound past it, NaN with no observations."""
    # As Prometheus does: counts that fall with the bound (resets seen per series) are lifted.
    cumulative = list(accumulate(up_to, max))
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    b = next(i for i, c in enumerate(cumulative) if c >= rank)
    if b >= len(bounds):  # the +Inf bucket
        return float(bounds[-1])
    end = float(bounds[b])
    if b == 0 and end <= 0:
        return end
    start = float(bounds[b - 1]) if b > 0 else 0.0
    below = cumulative[b - 1] if b > 0 else 0.0
    return start + (end - start) * (rank - below) / (cumulative[b] - below)
