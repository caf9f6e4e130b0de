"""Drift as OpenTelemetry instruments: the last window's scores, and windows scored.

Observable gauges read at collection time, like the routing figures: the drift thread
only replaces the values they read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from observe import catalogue
from observe.drift.live import DriftSink, WindowDrift
from observe.instruments import observable

Values = dict[tuple[tuple[str, str], ...], float]


class DriftInstruments:
    """A drift output (`consume_drift`) publishing scores through `meter`."""

    def __init__(self, meter: Meter) -> None:
        self._lock = threading.Lock()
        self._semantic: Values = {}
        self._thresholds: Values = {}
        self._routing: Values = {}
        observable(meter, catalogue.SEMANTIC_DRIFT, self._reader(lambda: self._semantic))
        observable(
            meter, catalogue.SEMANTIC_DRIFT_THRESHOLD, self._reader(lambda: self._thresholds)
        )
        observable(meter, catalogue.ROUTING_DRIFT, self._reader(lambda: self._routing))

    def consume_drift(self, drift: WindowDrift) -> None:
        with self._lock:
            for score in drift.scores:
                layer = ("layer", str(score.layer))
                if score.kind == "routing":
                    self._routing[(layer,)] = score.score
                else:
                    labels = (layer, ("method", score.method))
                    self._semantic[labels] = score.score
                    if score.threshold is not None:
                        self._thresholds[labels] = score.threshold

    def _reader(
        self, values: Callable[[], Values]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def read(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                return [Observation(v, dict(labels)) for labels, v in values().items()]

        return read


def register_drift_windows(meter: Meter, sink: DriftSink) -> None:
    """Windows `sink` scored and skipped, as one counter."""

    def read(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(sink.scored, {"outcome": "scored"}),
            Observation(sink.skipped, {"outcome": "skipped"}),
        ]

    observable(meter, catalogue.DRIFT_WINDOWS, read)
