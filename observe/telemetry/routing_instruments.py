"""The monitor's per-layer figures as OpenTelemetry instruments, read at collection time.

Per-layer figures would cost one instrument call per layer per step; instead the monitor's
background thread folds each window into totals here, and observable instruments report
them whenever a reader collects. Per-expert families are arrays (`expert_families`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from observe import catalogue
from observe.catalogue import Metric
from observe.hooks.stats import LayerStats, Window
from observe.instruments import counter, gauge, histogram, observable
from observe.telemetry.limits import LabelLimiter

if TYPE_CHECKING:
    from observe.hooks.monitor import Monitor

# A series' label values, in the order its catalogue entry declares the labels.
Values = tuple[str, ...]

# Gauges of the last window, one value per layer.
_LAYER_GAUGES: tuple[tuple[Metric, Callable[[LayerStats], float]], ...] = (
    (catalogue.ROUTING_ENTROPY, lambda s: s.routing_entropy),
    (catalogue.LOAD_IMBALANCE, lambda s: s.load_imbalance),
    (catalogue.DEAD_EXPERTS, lambda s: len(s.dead_experts)),
    (catalogue.TOP1_PROBABILITY, lambda s: s.top1_probability),
    (catalogue.AUX_LOSS, lambda s: s.aux_loss),
    (catalogue.Z_LOSS, lambda s: s.z_loss),
)


class RoutingInstruments:
    """A monitor sink (`export(window)`) publishing routing figures through `meter`."""

    def __init__(self, meter: Meter, limiter: LabelLimiter) -> None:
        self._limiter = limiter
        self._lock = threading.Lock()
        # Cumulative counts per series, and the last window's gauge values.
        self._totals: dict[str, dict[Values, int]] = {
            m.name: {} for m in (catalogue.DROPPED_TOKENS, catalogue.ROUTER_NONFINITE_TOKENS)
        }
        self._gauges: dict[str, dict[Values, float]] = {m.name: {} for m, _ in _LAYER_GAUGES}
        for name in self._totals:
            metric = catalogue.BY_NAME[name]
            observable(meter, metric, self._reader(metric, self._totals[name]))
        for metric, _ in _LAYER_GAUGES:
            observable(meter, metric, self._reader(metric, self._gauges[metric.name]))
        self._entropy_windows = histogram(meter, catalogue.ROUTING_ENTROPY_WINDOWS)
        self._steps = counter(meter, catalogue.MONITOR_STEPS)
        self._sample_rate = gauge(meter, catalogue.ROUTER_SAMPLE_RATE)

    def fit(self, monitor: Monitor) -> None:
        """Readies the figures for `monitor` before its first window: its router sample
        rate, which says whether the counts are estimates, and the label limit, at least a
        series per layer. The session's newest monitor gives the rate."""
        self._sample_rate.set(monitor.config.router_sample_rate)
        self._limiter.fit(len(monitor.routers))

    def consume(self, window: Window) -> None:
        with self._lock:
            for stats in window.routing.layers:
                self._add_layer(stats)
        for stats in window.routing.layers:
            if stats.tokens:
                layer = catalogue.ROUTING_ENTROPY_WINDOWS.attributes(stats.layer)
                self._entropy_windows.record(stats.routing_entropy, layer)
        self._steps.add(window.last_step - window.first_step + 1)

    def _add_layer(self, stats: LayerStats) -> None:
        layer = str(stats.layer)
        if stats.dropped_tokens is not None:
            self._add(catalogue.DROPPED_TOKENS, (layer,), stats.dropped_tokens)
        self._add(catalogue.ROUTER_NONFINITE_TOKENS, (layer,), stats.nonfinite_tokens)
        if stats.tokens:
            for metric, value in _LAYER_GAUGES:
                gauges = self._gauges[metric.name]
                if (layer,) in gauges or self._limiter.admit(metric.name, (layer,)):
                    gauges[(layer,)] = float(value(stats))

    def _add(self, metric: Metric, values: Values, n: int) -> None:
        totals = self._totals[metric.name]
        if values in totals or self._limiter.admit(metric.name, values):
            totals[values] = totals.get(values, 0) + n

    def _reader(
        self, metric: Metric, series: dict[Values, int] | dict[Values, float]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def read(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                return [Observation(v, metric.attributes(*key)) for key, v in series.items()]

        return read
