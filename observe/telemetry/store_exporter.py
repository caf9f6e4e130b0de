"""OpenTelemetry metrics, the run's heartbeat, the monitor's per-window expert load and
drift, into the store.

Each only hands batches to a `Delivery`, which spools them on disk and writes them in the
background: an export never waits for the database and never loses a batch to an outage
(the SDK's periodic reader would drop a batch whose export failed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
)

from observe.catalogue import RESOURCE_LABELS
from observe.drift.live import WindowDrift
from observe.hooks.stats import Window
from observe.store.delivery import Delivery
from observe.store.records import Batch, DriftResult, ExpertLoad, HistogramSample, Sample
from observe.telemetry.array_family import ArrayFamily


def _time(unix_nano: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix_nano / 1e9, tz=dt.UTC)


def _labels(*attribute_sets: Mapping[str, Any] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for attributes in attribute_sets:
        labels.update({k: str(v) for k, v in (attributes or {}).items()})
    return labels


class StoreExporter(MetricExporter):
    """Every collection's data points as store samples of one run, with the families kept
    as arrays that `arrays` hands over (`ExpertFamilies.stored`)."""

    def __init__(
        self,
        delivery: Delivery,
        run_id: str,
        arrays: Callable[[], Sequence[ArrayFamily]] = list,
    ) -> None:
        super().__init__()
        self.delivery = delivery
        self.run_id = run_id
        self.arrays = arrays

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        samples: list[Sample] = []
        histograms: list[HistogramSample] = []
        for resource_metrics in metrics_data.resource_metrics:
            # Copied onto every stored series, as the Prometheus reader does.
            resource = {
                k: v
                for k, v in resource_metrics.resource.attributes.items()
                if k in RESOURCE_LABELS
            }
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    for point in metric.data.data_points:
                        labels = _labels(resource, point.attributes)
                        time = _time(point.time_unix_nano)
                        if isinstance(point, HistogramDataPoint):
                            histograms.append(
                                HistogramSample(
                                    time,
                                    metric.name,
                                    labels,
                                    count=point.count,
                                    sum=point.sum,
                                    bounds=tuple(point.explicit_bounds),
                                    bucket_counts=tuple(point.bucket_counts),
                                )
                            )
                        elif isinstance(point, NumberDataPoint):
                            samples.append(Sample(time, metric.name, labels, float(point.value)))
        # The row store's path: a Sample per point until the store takes arrays whole.
        for family in self.arrays():
            samples.extend(family.samples())
        # Every export, also one with nothing new, carries the heartbeat: it says the run's
        # process was alive when it was made (observe/store/liveness.py).
        heartbeat = dt.datetime.now(dt.UTC)
        self.delivery.submit(
            Batch(self.run_id, tuple(samples), tuple(histograms), heartbeat=heartbeat)
        )
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """The delivery outlives the exporter: its owner closes it after the last export."""


class ExpertLoadSink:
    """A monitor sink writing each window's tokens per (layer, expert) at its last step."""

    def __init__(self, delivery: Delivery, run_id: str) -> None:
        self.delivery = delivery
        self.run_id = run_id

    def consume(self, window: Window) -> None:
        loads = tuple(
            ExpertLoad(window.last_step, stats.layer, expert, tokens)
            for stats in window.routing.layers
            for expert, tokens in enumerate(stats.tokens_per_expert)
        )
        self.delivery.submit(Batch(self.run_id, expert_loads=loads))


class DriftResultWriter:
    """A drift output writing each scored window's results, with its bounds."""

    def __init__(self, delivery: Delivery, run_id: str) -> None:
        self.delivery = delivery
        self.run_id = run_id

    def consume_drift(self, drift: WindowDrift) -> None:
        results = tuple(
            DriftResult(
                drift.ended,
                score.layer,
                score.method,
                score.score,
                score.threshold,
                score.drifted,
                drift.first_step,
                drift.last_step,
                drift.baseline_id,
                {"kind": score.kind, "name": score.name, "rows": score.rows},
            )
            for score in drift.scores
        )
        if results:
            self.delivery.submit(Batch(self.run_id, drift_results=results))
