"""OpenTelemetry metrics, the run's heartbeat, the monitor's per-window expert load and
drift, into the store.

Each only hands batches to a `Delivery`, which spools them on disk and writes them in the
background: an export never waits for the database and never loses a batch to an outage
(the SDK's periodic reader would drop a batch whose export failed).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
)

from observe.catalogue import DROPPED_SAMPLES, RESOURCE_LABELS, UNSTORABLE_LABEL
from observe.drift.live import WindowDrift
from observe.hooks.stats import Window
from observe.store.delivery import Delivery
from observe.store.records import Batch, DriftResult, ExpertLoads, HistogramSample, Sample
from observe.store.storable import labels_problem
from observe.telemetry.array_family import AnyFamily, HistogramFamily

logger = logging.getLogger("observe")


def _time(unix_nano: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix_nano / 1e9, tz=dt.UTC)


def _label_value(value: Any) -> str:
    # As the Prometheus reader writes it (JSON for numbers, booleans and sequences): the
    # store and Prometheus show a series with the same labels.
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _labels(*attribute_sets: Mapping[str, Any] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for attributes in attribute_sets:
        labels.update({k: _label_value(v) for k, v in (attributes or {}).items()})
    return labels


class StoreExporter(MetricExporter):
    """Every collection's data points as store samples of one run, with the families kept
    as arrays that `arrays` hands over (`ExpertFamilies.stored`, `LayerFamilies.families`);
    with `heartbeats`, each export also says the run's process lives (in a distributed run,
    only rank 0's does).

    A point whose labels hold text the store cannot keep (a user's attribute with NUL) is
    left out, counted in `refused_samples` and logged once per metric: in its batch, it
    would have made the store refuse every other point with it.
    """

    def __init__(
        self,
        delivery: Delivery,
        run_id: str,
        arrays: Callable[[], Sequence[AnyFamily]] = list,
        *,
        heartbeats: bool = True,
    ) -> None:
        super().__init__()
        self.delivery = delivery
        self.run_id = run_id
        self.arrays = arrays
        # Written by the reader's export thread only (the SDK runs one export at a time).
        self.refused_samples = 0
        self._warned: set[str] = set()
        self.heartbeats = heartbeats

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
                        if (found := labels_problem(labels)) is not None:
                            self._refuse(metric.name, found)
                            continue
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
        # Dense families go whole, as arrays (one COPY); one with points not measured yet
        # (NaN) goes as samples of the points that were; a histogram as one per series.
        families = []
        for array in self.arrays():
            if isinstance(array, HistogramFamily):
                histograms.extend(array.samples())
            elif np.isnan(array.values).any():
                samples.extend(array.samples())
            else:
                families.append(array.family())
        # Every export, also one with nothing new, carries the heartbeat: it says the run's
        # process was alive when it was made (observe/store/liveness.py).
        heartbeat = dt.datetime.now(dt.UTC) if self.heartbeats else None
        self.delivery.submit(
            Batch(
                self.run_id,
                tuple(samples),
                tuple(histograms),
                families=tuple(families),
                heartbeat=heartbeat,
            )
        )
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def _refuse(self, metric: str, problem: str) -> None:
        self.refused_samples += 1
        if metric not in self._warned:
            self._warned.add(metric)
            logger.warning(
                "observe: the store leaves out samples of %s whose labels it cannot keep, "
                'counted in %s{reason="%s"}: %s',
                metric,
                DROPPED_SAMPLES.prometheus_name,
                UNSTORABLE_LABEL,
                problem,
            )

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """The delivery outlives the exporter: its owner closes it after the last export."""


class ExpertLoadSink:
    """A monitor sink writing each window's tokens per (layer, expert) at its last step."""

    def __init__(self, delivery: Delivery, run_id: str) -> None:
        self.delivery = delivery
        self.run_id = run_id

    def consume(self, window: Window) -> None:
        loads = ExpertLoads.of_layers(
            window.last_step,
            {stats.layer: stats.tokens_per_expert for stats in window.routing.layers},
        )
        self.delivery.submit(Batch(self.run_id, expert_loads=(loads,)))


class DriftResultWriter:
    """A drift output writing each score, with the steps it covers."""

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
                score.first_step,
                score.last_step,
                drift.baseline_id,
                {"kind": score.kind, "name": score.name, "rows": score.rows},
            )
            for score in drift.scores
        )
        if results:
            self.delivery.submit(Batch(self.run_id, drift_results=results))
