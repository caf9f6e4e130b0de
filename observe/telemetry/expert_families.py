"""The run's per-expert routing totals as arrays: /metrics text, store and OTLP families.

Layer × expert (× entropy slot) counts are dense: through OpenTelemetry each point would
cost an object per collection (45–85 µs a series line at 64 layers × 256 experts). Here the
monitor's worker adds each window's arrays to the run's totals, once; `/metrics` renders
them from the arrays, cached until the next window; the store gets them as `ArrayFamily`
arrays once per window, at expert detail whatever the series budget; the OTLP bridge reads
`families()`. The series budget (`series_budget`) says which /metrics shows; the label
limit is admitted once per family shape, at `fit`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from observe import catalogue
from observe.catalogue import Metric
from observe.hooks.stats import Window
from observe.telemetry import series_budget
from observe.telemetry.array_family import AnyFamily, ArrayFamily, grown
from observe.telemetry.array_text import ArrayText
from observe.telemetry.limits import LabelLimiter

if TYPE_CHECKING:
    from observe.hooks.monitor import Monitor


class ExpertFamilies:
    """A monitor sink (`consume(window)`) keeping the per-expert families of one run."""

    def __init__(self, detail: str, labels: Mapping[str, str], limiter: LabelLimiter) -> None:
        """`labels`: the run's resource labels (run, model, rank), on every point."""
        self._shown = series_budget.shown(detail)
        self._labels = dict(labels)
        self._limiter = limiter
        self._text = ArrayText(limiter)
        self._lock = threading.Lock()
        self._n_experts_L: list[int] = []
        self._slots = 0
        self._tokens_LE = np.zeros((0, 0))
        self._heatmap_LES = np.zeros((0, 0, 0))
        self._share_LQ = np.zeros((0, len(catalogue.EXPERT_SHARE_QUANTILES)))
        self._time = dt.datetime.now(dt.UTC)
        # Windows consumed, and the newest the store has been handed.
        self._windows = 0
        self._stored = 0

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """The families /metrics shows."""
        return self._shown

    def fit(self, monitor: Monitor) -> None:
        """Sizes the arrays to `monitor`'s model (a session's monitors share them: the
        widest shape of each layer) and admits each shown family's shape once."""
        n_experts_L = [router.n_experts for router in monitor.routers]
        histogram = "entropy_histogram" in monitor.config.metrics
        with self._lock:
            pairs = itertools.zip_longest(self._n_experts_L, n_experts_L, fillvalue=0)
            widest = [max(pair) for pair in pairs]
            self._n_experts_L = widest
            self._slots = max(self._slots, monitor.config.entropy_slots if histogram else 0)
            L, E, S = len(widest), max(widest), self._slots
            self._tokens_LE = grown(self._tokens_LE, (L, E))
            self._heatmap_LES = grown(self._heatmap_LES, (L, E, S))
            # NaN until a window measures the layer: no series rather than a false 0.
            Q = len(catalogue.EXPERT_SHARE_QUANTILES)
            self._share_LQ = grown(self._share_LQ, (L, Q), fill=np.nan)
            # Each point's name and labels, built now rather than by the first scrape.
            self._text.fit(self._families(self._shown))

    def consume(self, window: Window) -> None:
        tokens_LE, heatmap_LES = window.expert_tokens_LE, window.entropy_histogram_LES
        if tokens_LE is None or heatmap_LES is None:
            return
        L, E = tokens_LE.shape
        with self._lock:
            self._tokens_LE[:L, :E] += tokens_LE
            S = min(heatmap_LES.shape[2], self._heatmap_LES.shape[2])
            self._heatmap_LES[:L, :E, :S] += heatmap_LES[:, :, :S]
            for layer, n_experts in enumerate(self._n_experts_L[:L]):
                tokens_E = tokens_LE[layer, :n_experts]
                if tokens_E.sum():
                    share_E = tokens_E / tokens_E.sum()
                    self._share_LQ[layer] = np.quantile(share_E, catalogue.EXPERT_SHARE_QUANTILES)
            self._time = dt.datetime.now(dt.UTC)
            self._windows += 1
            # Counted per window, as if each refused series were refused again: one addition.
            refused = self._text.refused
        if refused:
            self._limiter.refuse(refused)

    def families(self) -> list[AnyFamily]:
        """What /metrics shows, as arrays (copies), cut to the label limit: OTLP's input."""
        with self._lock:
            return self._text.cut(self._families(self._shown))

    def stored(self) -> list[ArrayFamily]:
        """The families the store keeps, at expert detail, when a window came since the
        last call; else none."""
        with self._lock:
            if self._stored == self._windows:
                return []
            self._stored = self._windows
            return self._families(series_budget.STORED)

    def render(self, openmetrics: bool) -> bytes:
        """The shown families' exposition text, in OpenMetrics or Prometheus text format."""
        with self._lock:
            return self._text.render(
                lambda: self._families(self._shown), self._windows, openmetrics
            )

    def _families(self, metrics: tuple[Metric, ...]) -> list[ArrayFamily]:
        """The families of `metrics` that this run measures; with the lock held."""
        L, E, S = self._heatmap_LES.shape
        layers = tuple(map(str, range(L)))
        experts = tuple(map(str, range(E)))
        bounds = tuple(f"{(slot + 1) / S:g}" for slot in range(S))
        quantiles = tuple(f"{q:g}" for q in catalogue.EXPERT_SHARE_QUANTILES)
        absent_LE = np.arange(E)[None, :] >= np.asarray(self._n_experts_L)[:, None]
        arrays: dict[str, tuple[tuple[tuple[str, ...], ...], np.ndarray]] = {
            catalogue.EXPERT_TOKENS.name: (
                (layers, experts),
                np.where(absent_LE, np.nan, self._tokens_LE),
            ),
            catalogue.EXPERT_SHARE.name: ((layers, quantiles), self._share_LQ.copy()),
        }
        if S:
            arrays[catalogue.EXPERT_ENTROPY_ASSIGNMENTS.name] = (
                (layers, experts, bounds),
                np.where(absent_LE[:, :, None], np.nan, self._heatmap_LES),
            )
            arrays[catalogue.ENTROPY_ASSIGNMENTS.name] = (
                (layers, bounds),
                self._heatmap_LES.sum(1),
            )
        return [
            ArrayFamily(m, self._labels, *arrays[m.name], self._time)
            for m in metrics
            if m.name in arrays
        ]
