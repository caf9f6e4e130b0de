"""The run's per-layer routing figures as arrays: /metrics text, store and OTLP families.

Each layer's gauges of its last window, its counts since the run began, the histogram of
its windows' mean entropy, and the monitor's steps and sample rate. Through OpenTelemetry
each series cost objects at every collection, and each histogram bucket a line: at 64
layers, more of a scrape than the 16,384 per-expert lines rendered from arrays
(`expert_families`). Here the monitor's worker folds each window in, once; `/metrics`
renders the arrays, cached until the next window; the store and the OTLP bridge read
`families()` at every export, not once per window as the per-expert families: the store's
alert evaluation, like Prometheus, counts a gauge unsampled for 5 minutes as gone.
"""

from __future__ import annotations

import bisect
import datetime as dt
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from observe import catalogue
from observe.catalogue import Metric
from observe.hooks.stats import LayerStats, Window
from observe.telemetry.array_family import AnyFamily, ArrayFamily, HistogramFamily, grown
from observe.telemetry.array_text import ArrayText
from observe.telemetry.limits import LabelLimiter

if TYPE_CHECKING:
    from observe.hooks.monitor import Monitor

# Gauges of the last window, one value per layer.
_GAUGES: tuple[tuple[Metric, Callable[[LayerStats], float]], ...] = (
    (catalogue.ROUTING_ENTROPY, lambda s: s.routing_entropy),
    (catalogue.LOAD_IMBALANCE, lambda s: s.load_imbalance),
    (catalogue.DEAD_EXPERTS, lambda s: len(s.dead_experts)),
    (catalogue.TOP1_PROBABILITY, lambda s: s.top1_probability),
    (catalogue.AUX_LOSS, lambda s: s.aux_loss),
    (catalogue.Z_LOSS, lambda s: s.z_loss),
)
# Counts since the run began, one per layer.
_COUNTS = (catalogue.DROPPED_TOKENS, catalogue.ROUTER_NONFINITE_TOKENS)
DROPPED, NONFINITE = range(len(_COUNTS))
_HISTOGRAM = catalogue.ROUTING_ENTROPY_WINDOWS
_BOUNDS = _HISTOGRAM.buckets or ()


class LayerFamilies:
    """A monitor sink (`consume(window)`) keeping the per-layer routing figures of one run."""

    metrics: tuple[Metric, ...] = (
        *(metric for metric, _ in _GAUGES),
        *_COUNTS,
        _HISTOGRAM,
        catalogue.MONITOR_STEPS,
        catalogue.ROUTER_SAMPLE_RATE,
    )

    def __init__(self, labels: Mapping[str, str], limiter: LabelLimiter) -> None:
        """`labels`: the run's resource labels (run, model, rank), on every point."""
        self._labels = dict(labels)
        self._limiter = limiter
        self._text = ArrayText(limiter)
        self._lock = threading.Lock()
        # NaN until a window measures the layer (gauges) or reports the count: no series
        # rather than a false 0. Layers of a model that never drops tokens report no drops.
        self._gauges_LG = np.full((0, len(_GAUGES)), np.nan)
        self._counts_LC = np.full((0, len(_COUNTS)), np.nan)
        # The entropy histogram: counts per bucket (+Inf last), and the sum, least and
        # greatest of the values recorded.
        self._buckets_LB = np.zeros((0, len(_BOUNDS) + 1))
        self._sum_L = np.zeros(0)
        self._min_L = np.full(0, np.inf)
        self._max_L = np.full(0, -np.inf)
        self._steps = np.nan
        self._sample_rate = np.nan
        self._start = dt.datetime.now(dt.UTC)
        self._windows = 0

    def fit(self, monitor: Monitor) -> None:
        """Readies the figures for `monitor` before its first window: a row per layer (a
        session's monitors share them), its router sample rate, which says whether the
        counts are estimates (the session's newest monitor gives it), and the label limit,
        at least a series per layer."""
        L = len(monitor.routers)
        with self._lock:
            self._gauges_LG = grown(self._gauges_LG, (L, len(_GAUGES)), fill=np.nan)
            self._counts_LC = grown(self._counts_LC, (L, len(_COUNTS)), fill=np.nan)
            self._buckets_LB = grown(self._buckets_LB, (L, len(_BOUNDS) + 1))
            self._sum_L = grown(self._sum_L, (L,))
            self._min_L = grown(self._min_L, (L,), fill=np.inf)
            self._max_L = grown(self._max_L, (L,), fill=-np.inf)
            self._sample_rate = monitor.config.router_sample_rate
            self._text.fit(self._families())

    def consume(self, window: Window) -> None:
        with self._lock:
            for stats in window.routing.layers:
                self._add_layer(stats)
            self._steps = np.nan_to_num(self._steps) + window.last_step - window.first_step + 1
            self._windows += 1
            # Counted per window, as if each refused series were refused again: one addition.
            refused = self._text.refused
        if refused:
            self._limiter.refuse(refused)

    def families(self) -> list[AnyFamily]:
        """What /metrics shows, as arrays (copies) cut to the label limit, at this time:
        what the store and OTLP get at each export."""
        with self._lock:
            return self._text.cut(self._families())

    def render(self, openmetrics: bool) -> bytes:
        """The families' exposition text, in OpenMetrics or Prometheus text format."""
        with self._lock:
            return self._text.render(self._families, self._windows, openmetrics)

    def _add_layer(self, stats: LayerStats) -> None:
        """Folds one layer's window in; with the lock held."""
        layer = stats.layer
        counts_C = self._counts_LC[layer]
        if stats.dropped_tokens is not None:
            counts_C[DROPPED] = np.nan_to_num(counts_C[DROPPED]) + stats.dropped_tokens
        counts_C[NONFINITE] = np.nan_to_num(counts_C[NONFINITE]) + stats.nonfinite_tokens
        if stats.tokens:
            self._gauges_LG[layer] = [float(value(stats)) for _, value in _GAUGES]
            # As OpenTelemetry's explicit-bucket histogram files a value: bounds are upper
            # bounds, inclusive.
            entropy = stats.routing_entropy
            self._buckets_LB[layer, bisect.bisect_left(_BOUNDS, entropy)] += 1
            self._sum_L[layer] += entropy
            self._min_L[layer] = min(self._min_L[layer], entropy)
            self._max_L[layer] = max(self._max_L[layer], entropy)

    def _families(self) -> list[AnyFamily]:
        """Every family, as of now; with the lock held."""
        now = dt.datetime.now(dt.UTC)
        layers = (tuple(map(str, range(len(self._sum_L)))),)
        families: list[AnyFamily] = [
            ArrayFamily(metric, self._labels, layers, self._gauges_LG[:, g].copy(), now)
            for g, (metric, _) in enumerate(_GAUGES)
        ]
        families += [
            ArrayFamily(metric, self._labels, layers, self._counts_LC[:, c].copy(), now)
            for c, metric in enumerate(_COUNTS)
        ]
        families.append(
            HistogramFamily(
                _HISTOGRAM,
                self._labels,
                layers,
                self._buckets_LB.copy(),
                self._sum_L.copy(),
                self._min_L.copy(),
                self._max_L.copy(),
                self._start,
                now,
            )
        )
        families += [
            ArrayFamily(metric, self._labels, (), np.array(value), now)
            for metric, value in (
                (catalogue.MONITOR_STEPS, self._steps),
                (catalogue.ROUTER_SAMPLE_RATE, self._sample_rate),
            )
        ]
        return families
