"""The array families for OTLP: a meter provider of their own, read by the OTLP exporter only.

Multi-node runs export through an OpenTelemetry Collector, so OTLP gets what /metrics shows.
OpenTelemetry builds an object per point at each collection: that is paid here, on the OTLP
reader's thread once per export interval and only where OTLP is configured, never by a
scrape. A provider of their own, because views and instruments apply to every reader of a
provider: on the run's main provider the Prometheus and store readers would pay it too.

Counters and gauges are observable instruments. OpenTelemetry has no observable histogram,
so array histograms join each collection on its way to the exporter, as the data points an
OpenTelemetry histogram would have collected.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource

from observe import catalogue
from observe.catalogue import Kind
from observe.instruments import SCOPE, observable
from observe.telemetry.array_family import ArraySource, HistogramFamily
from observe.telemetry.limits import MAX_LABEL_LIMIT


class _Borrowed(MetricExporter):
    """Exports through an exporter the run's main provider owns, and shuts it down; each
    collection with the `histograms` of that moment."""

    def __init__(self, owner: MetricExporter, histograms: Callable[[], list[Metric]]) -> None:
        super().__init__(
            preferred_temporality=owner._preferred_temporality,
            preferred_aggregation=owner._preferred_aggregation,
        )
        self.owner = owner
        self._histograms = histograms

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        data = _joined(metrics_data, self._histograms())
        return self.owner.export(data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.owner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """The main provider shuts the exporter down."""


def array_provider(
    sources: Sequence[ArraySource],
    resource: Resource,
    exporter: MetricExporter,
    interval_ms: float,
) -> MeterProvider:
    """A provider exporting the families of `sources` through `exporter` every `interval_ms`."""
    with_histograms = [s for s in sources if any(m.kind is Kind.HISTOGRAM for m in s.metrics)]
    reader = PeriodicExportingMetricReader(
        _Borrowed(exporter, lambda: _histograms(with_histograms)),
        export_interval_millis=interval_ms,
    )
    # The label limit already cut what `source` shows; the SDK must fold none of it.
    uncapped = View(meter_name=SCOPE, aggregation_cardinality_limit=MAX_LABEL_LIMIT)
    provider = MeterProvider(resource=resource, metric_readers=[reader], views=[uncapped])
    meter = provider.get_meter(SCOPE)
    for source in sources:
        for metric in source.metrics:
            if metric.kind is not Kind.HISTOGRAM:
                observable(meter, metric, _points(source, metric))
    return provider


def _points(
    source: ArraySource, metric: catalogue.Metric
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def read(options: CallbackOptions) -> Iterable[Observation]:
        for family in source.families():
            if family.metric is metric and not isinstance(family, HistogramFamily):
                # Counts as integers, as OTLP carries counts.
                whole = metric.kind is Kind.COUNTER
                return [
                    Observation(
                        int(value) if whole else value, dict(zip(metric.labels, key, strict=True))
                    )
                    for key, value in family.points()
                ]
        return []

    return read


def _histograms(sources: Sequence[ArraySource]) -> list[Metric]:
    """The histograms of `sources` as OpenTelemetry collects a cumulative histogram."""
    now = time.time_ns()
    metrics = []
    for source in sources:
        for family in source.families():
            if not isinstance(family, HistogramFamily):
                continue
            metric = family.metric
            start = int(family.start.timestamp() * 1e9)
            points = [
                HistogramDataPoint(
                    attributes=dict(zip(metric.labels, key, strict=True)),
                    start_time_unix_nano=start,
                    time_unix_nano=now,
                    count=point.count,
                    sum=point.sum,
                    bucket_counts=point.buckets,
                    explicit_bounds=metric.buckets or (),
                    min=point.min,
                    max=point.max,
                )
                for key, point in family.points()
            ]
            if points:
                # Cumulative, as the OTLP exporter asks of every instrument (provider.py).
                data = Histogram(points, AggregationTemporality.CUMULATIVE)
                metrics.append(Metric(metric.name, metric.description, metric.unit, data))
    return metrics


def _joined(data: MetricsData, histograms: list[Metric]) -> MetricsData:
    """`data` with `histograms` in its scope. A collection has data whenever a histogram
    has a point: the sample rate is set when a monitor is attached, before any window."""
    if not histograms:
        return data
    # One provider: one resource; observe's meter is one scope (the SDK may add its own).
    [resource] = data.resource_metrics
    scopes = [
        dataclasses.replace(scope, metrics=[*scope.metrics, *histograms])
        if scope.scope.name == SCOPE
        else scope
        for scope in resource.scope_metrics
    ]
    resource = dataclasses.replace(resource, scope_metrics=scopes)
    return dataclasses.replace(data, resource_metrics=[resource])
