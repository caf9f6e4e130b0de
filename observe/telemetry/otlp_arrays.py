"""The array families for OTLP: a meter provider of their own, read by the OTLP exporter only.

Multi-node runs export through an OpenTelemetry Collector, so OTLP gets what /metrics shows.
OpenTelemetry builds an object per point at each collection: that is paid here, on the OTLP
reader's thread once per export interval and only where OTLP is configured, never by a
scrape. A provider of their own, because views and instruments apply to every reader of a
provider: on the run's main provider the Prometheus and store readers would pay it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource

from observe.catalogue import Kind, Metric
from observe.instruments import SCOPE, observable
from observe.telemetry.array_family import ArraySource
from observe.telemetry.limits import MAX_LABEL_LIMIT


class _Borrowed(MetricExporter):
    """Exports through an exporter the run's main provider owns, and shuts it down."""

    def __init__(self, owner: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=owner._preferred_temporality,
            preferred_aggregation=owner._preferred_aggregation,
        )
        self.owner = owner

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return self.owner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.owner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """The main provider shuts the exporter down."""


def array_provider(
    source: ArraySource,
    metrics: Sequence[Metric],
    resource: Resource,
    exporter: MetricExporter,
    interval_ms: float,
) -> MeterProvider:
    """A provider exporting `metrics` of `source` through `exporter` every `interval_ms`."""
    reader = PeriodicExportingMetricReader(_Borrowed(exporter), export_interval_millis=interval_ms)
    # The label limit already cut what `source` shows; the SDK must fold none of it.
    uncapped = View(meter_name=SCOPE, aggregation_cardinality_limit=MAX_LABEL_LIMIT)
    provider = MeterProvider(resource=resource, metric_readers=[reader], views=[uncapped])
    meter = provider.get_meter(SCOPE)
    for metric in metrics:
        observable(meter, metric, _points(source, metric))
    return provider


def _points(
    source: ArraySource, metric: Metric
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def read(options: CallbackOptions) -> Iterable[Observation]:
        for family in source.families():
            if family.metric is metric:
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
