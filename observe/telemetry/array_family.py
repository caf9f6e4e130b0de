"""Metric families held as arrays: a counter or gauge as one array, a histogram as a few.

Shape: a family's arrays have one axis per label the metric declares (`Metric.labels`), and
`axes` holds the label values along each; `labels` are shared by every point (run, model,
rank). What the pipeline hands the store and the OTLP bridge for routing families, instead
of a `Sample` or an OpenTelemetry measurement per point; `array_text` renders their
Prometheus text.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from observe.catalogue import Kind, Metric
from observe.store.records import Family, HistogramSample, Sample


@dataclass(frozen=True)
class ArrayFamily:
    """A counter or gauge: NaN marks a point that does not exist (an expert past a smaller
    layer's count, a gauge not yet measured)."""

    metric: Metric
    labels: Mapping[str, str]
    axes: tuple[tuple[str, ...], ...]
    values: np.ndarray
    time: datetime

    def __post_init__(self) -> None:
        _check_shape(self.metric, self.axes, self.values)

    def points(self) -> Iterator[tuple[tuple[str, ...], float]]:
        """Each point that exists: its label values along the axes, and its value."""
        flat = self.values.ravel().tolist()
        for key, value in zip(itertools.product(*self.axes), flat, strict=True):
            if value == value:  # not NaN
                yield key, value

    def family(self) -> Family:
        """The points as the store's columnar family: no object per point."""
        axes = dict(zip(self.metric.labels, self.axes, strict=True))
        return Family.grid(self.time, self.metric.name, self.labels, axes, self.values)

    def samples(self) -> list[Sample]:
        """A `Sample` per point: the row store's path."""
        return [
            Sample(self.time, self.metric.name, _labels(self, key), value)
            for key, value in self.points()
        ]

    def cut(self, kept: int) -> ArrayFamily:
        """A copy with only the first `kept` points, in row-major order (the label limit)."""
        flat = self.values.ravel().copy()
        flat[kept:] = np.nan
        values = flat.reshape(self.values.shape)
        return ArrayFamily(self.metric, self.labels, self.axes, values, self.time)


@dataclass(frozen=True)
class HistogramFamily:
    """A histogram of the metric's `buckets`, cumulative since `start`: per series, the
    count in each bucket (+Inf last; not summed across buckets, as OpenTelemetry counts
    them), and the sum, least and greatest of the values recorded. A series with nothing
    recorded does not exist."""

    metric: Metric
    labels: Mapping[str, str]
    axes: tuple[tuple[str, ...], ...]
    # Shaped like the axes, the bucket counts with one more axis: the metric's buckets + 1.
    buckets: np.ndarray
    sums: np.ndarray
    mins: np.ndarray
    maxs: np.ndarray
    start: datetime
    time: datetime

    def __post_init__(self) -> None:
        if self.metric.kind is not Kind.HISTOGRAM or self.metric.buckets is None:
            raise ValueError(f"{self.metric.name} is a {self.metric.kind}, not a histogram")
        for values in (self.sums, self.mins, self.maxs):
            _check_shape(self.metric, self.axes, values)
        if self.buckets.shape != (*self.sums.shape, len(self.metric.buckets) + 1):
            raise ValueError(
                f"{self.metric.name}: bucket counts of shape {self.buckets.shape} for "
                f"{len(self.metric.buckets)} bounds and series of shape {self.sums.shape}"
            )

    def points(self) -> Iterator[tuple[tuple[str, ...], HistogramPoint]]:
        """Each series that exists: its label values along the axes, and its histogram."""
        counts = self.buckets.reshape(-1, self.buckets.shape[-1]).astype(np.int64).tolist()
        rows = zip(
            itertools.product(*self.axes),
            counts,
            self.sums.ravel().tolist(),
            self.mins.ravel().tolist(),
            self.maxs.ravel().tolist(),
            strict=True,
        )
        for key, buckets, total, least, greatest in rows:
            if any(buckets):
                yield key, HistogramPoint(tuple(buckets), total, least, greatest)

    def samples(self) -> list[HistogramSample]:
        """A `HistogramSample` per series: the store's histograms."""
        bounds = tuple(self.metric.buckets or ())
        return [
            HistogramSample(
                self.time,
                self.metric.name,
                _labels(self, key),
                count=point.count,
                sum=point.sum,
                bounds=bounds,
                bucket_counts=point.buckets,
            )
            for key, point in self.points()
        ]

    def cut(self, kept: int) -> HistogramFamily:
        """A copy with only the first `kept` series, in row-major order (the label limit)."""
        buckets = self.buckets.reshape(-1, self.buckets.shape[-1]).copy()
        buckets[kept:] = 0
        return HistogramFamily(
            self.metric,
            self.labels,
            self.axes,
            buckets.reshape(self.buckets.shape),
            self.sums,
            self.mins,
            self.maxs,
            self.start,
            self.time,
        )


@dataclass(frozen=True)
class HistogramPoint:
    buckets: tuple[int, ...]
    sum: float
    min: float
    max: float

    @property
    def count(self) -> int:
        return sum(self.buckets)


# What a source of array families hands out.
AnyFamily = ArrayFamily | HistogramFamily


class ArraySource(Protocol):
    """Families kept as arrays: which, their exposition text, and the arrays themselves."""

    @property
    def metrics(self) -> tuple[Metric, ...]: ...

    def render(self, openmetrics: bool) -> bytes: ...

    def families(self) -> list[AnyFamily]: ...


def grown(array: np.ndarray, shape: tuple[int, ...], fill: float = 0.0) -> np.ndarray:
    """`array` in an array of at least `shape` filled with `fill`, its values kept: a sink's
    totals sized to a model attached later."""
    result = np.full(tuple(max(a, b) for a, b in zip(array.shape, shape, strict=True)), fill)
    result[tuple(slice(0, n) for n in array.shape)] = array
    return result


def _check_shape(metric: Metric, axes: tuple[tuple[str, ...], ...], values: np.ndarray) -> None:
    shape = tuple(len(axis) for axis in axes)
    if len(axes) != len(metric.labels) or values.shape != shape:
        raise ValueError(
            f"{metric.name}: values of shape {values.shape} for axes {shape} "
            f"of labels {metric.labels}"
        )


def _labels(family: AnyFamily, key: tuple[str, ...]) -> dict[str, str]:
    return {**family.labels, **dict(zip(family.metric.labels, key, strict=True))}
