"""OpenTelemetry API instruments made from catalogue entries.

API only: a library (the bundled workload, the monitor's sinks) creates its instruments
through here; the application decides where they go by configuring the SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    Observation,
    _Gauge,
)

from observe.catalogue import Kind, Metric

SCOPE = "observe"


def meter(provider: MeterProvider | None = None, scope: str = SCOPE) -> Meter:
    """A meter from `provider`, or from the global provider the application configured."""
    return metrics.get_meter(scope, meter_provider=provider)


def counter(meter: Meter, metric: Metric) -> Counter:
    _expect(metric, Kind.COUNTER)
    return meter.create_counter(metric.name, unit=metric.unit, description=metric.description)


def gauge(meter: Meter, metric: Metric) -> _Gauge:
    _expect(metric, Kind.GAUGE)
    return meter.create_gauge(metric.name, unit=metric.unit, description=metric.description)


def histogram(meter: Meter, metric: Metric) -> Histogram:
    _expect(metric, Kind.HISTOGRAM)
    return meter.create_histogram(
        metric.name,
        unit=metric.unit,
        description=metric.description,
        explicit_bucket_boundaries_advisory=list(metric.buckets or ()),
    )


def observable(
    meter: Meter, metric: Metric, callback: Callable[[CallbackOptions], Iterable[Observation]]
) -> None:
    """A counter or gauge whose values `callback` reads at collection time."""
    if metric.kind is Kind.HISTOGRAM:
        raise ValueError(f"{metric.name} is a histogram: histograms cannot be observable")
    create = (
        meter.create_observable_counter
        if metric.kind is Kind.COUNTER
        else meter.create_observable_gauge
    )
    create(metric.name, [callback], unit=metric.unit, description=metric.description)


def _expect(metric: Metric, kind: Kind) -> None:
    if metric.kind is not kind:
        raise ValueError(f"{metric.name} is a {metric.kind} in the catalogue, not a {kind}")
