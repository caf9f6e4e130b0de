"""Drift as OpenTelemetry instruments: the last window's scores, the windows in a row that
drifted, and windows scored.

Observable gauges read at collection time, like the routing figures: the drift thread
only replaces the values they read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from observe import catalogue
from observe.catalogue import Metric
from observe.drift.live import DriftSink, WindowDrift
from observe.instruments import observable

# The last value of each series, by its label values in the catalogue's order.
Values = dict[tuple[str, ...], float]


class DriftInstruments:
    """A drift output (`consume_drift`) publishing scores through `meter`."""

    def __init__(self, meter: Meter) -> None:
        self._lock = threading.Lock()
        self._semantic: Values = {}
        self._thresholds: Values = {}
        self._drifted_windows: Values = {}
        self._routing: Values = {}
        for metric, values in (
            (catalogue.SEMANTIC_DRIFT, self._semantic),
            (catalogue.SEMANTIC_DRIFT_THRESHOLD, self._thresholds),
            (catalogue.SEMANTIC_DRIFTED_WINDOWS, self._drifted_windows),
            (catalogue.ROUTING_DRIFT, self._routing),
        ):
            observable(meter, metric, self._reader(metric, values))

    def consume_drift(self, drift: WindowDrift) -> None:
        with self._lock:
            for score in drift.scores:
                layer = str(score.layer)
                if score.kind == "routing":
                    self._routing[(layer,)] = score.score
                else:
                    key = (layer, score.method)
                    self._semantic[key] = score.score
                    self._drifted_windows[key] = score.drifted_windows
                    if score.threshold is not None:
                        self._thresholds[key] = score.threshold

    def _reader(
        self, metric: Metric, values: Values
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def read(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                return [Observation(v, metric.attributes(*key)) for key, v in values.items()]

        return read


def register_drift_windows(meter: Meter, sink: DriftSink) -> None:
    """Windows `sink` scored and skipped, as one counter."""

    def read(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(sink.scored, catalogue.DRIFT_WINDOWS.attributes("scored")),
            Observation(sink.skipped, catalogue.DRIFT_WINDOWS.attributes("skipped")),
        ]

    observable(meter, catalogue.DRIFT_WINDOWS, read)
