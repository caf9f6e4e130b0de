"""Live drift: each flushed window compared with the baseline, on a thread of its own.

`DriftSink` is a monitor sink. It only queues windows, boundedly: a drift computation
slower than the flush interval skips windows (counted) instead of delaying training steps,
the monitor's other sinks or `snapshot()`, or queueing without end. Its results go to
`DriftOutput`s (the run's gauges, the store), which the application wires.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
from threadpoolctl import ThreadpoolController

from observe import priority
from observe.drift.baseline import Baseline, HiddenStateBaseline
from observe.drift.calibration import calibrate, scored_rows
from observe.drift.config import DriftConfig
from observe.drift.divergence import js_divergence
from observe.drift.methods import MIN_ROWS
from observe.drift.score import score_window
from observe.hooks.stats import Window

logger = logging.getLogger("observe")

ROUTING_METHOD = "jensen_shannon"
# BLAS threads (numpy's and scipy's OpenBLAS) a window's scoring uses, while it runs. By
# default OpenBLAS runs a thread per core, which spins between calls: beside the reference
# model generating on 2 cores, a background thread of numpy and scikit-learn work (a
# projection and a classifier, every 0.5 s) cost generation 21% of its throughput so, and
# 5% on one thread; in `observe serve` the spinning thread took more CPU than drift scoring
# itself. Torch's threads are not OpenBLAS's, and keep their number.
SCORING_BLAS_THREADS = 1
# Seconds close() waits for queued windows to be scored.
CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LayerDrift:
    """One score of one window: semantic (an attention layer, by `method`) or routing (an
    MoE layer, method "jensen_shannon")."""

    kind: str
    layer: int
    name: str
    method: str
    score: float
    threshold: float | None
    drifted: bool
    rows: int
    # This window and the scored windows in a row before it that drifted on this layer and
    # method: 0 when this one did not (never more for routing, which has no threshold).
    drifted_windows: int = 0


@dataclass(frozen=True)
class WindowDrift:
    first_step: int
    last_step: int
    ended: datetime
    baseline_id: int | None
    scores: tuple[LayerDrift, ...]


@dataclass(frozen=True)
class LatestSample:
    layer: int
    first_step: int
    last_step: int
    rows_ND: np.ndarray


class DriftOutput(Protocol):
    """Receives each scored window, on the drift thread."""

    def consume_drift(self, drift: WindowDrift) -> None: ...


class DriftSink:
    """A monitor sink scoring each window against `baseline` (see the module docstring)."""

    # The monitor samples pooled hidden states per window for this sink.
    wants_hidden_states = True

    def __init__(
        self,
        baseline: Baseline,
        config: DriftConfig | None = None,
        outputs: Sequence[DriftOutput] = (),
    ) -> None:
        self.baseline = baseline
        self.config = config or DriftConfig()
        self.outputs = tuple(outputs)
        self.skipped = 0
        self.scored = 0
        self.latest: WindowDrift | None = None
        # The last scored window's raw sample per attention layer, for reports.
        self.latest_samples: dict[str, LatestSample] = {}
        # Thresholds for window sizes and methods the baseline has none for, calibrated
        # when first met.
        self._thresholds: dict[tuple[int, str, int], float] = {}
        # Per (layer, method): the scored windows in a row that drifted, up to the last.
        self._drifted_windows: dict[tuple[int, str], int] = {}
        self._windows: queue.Queue[Window | None] = queue.Queue(self.config.queue_size)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="observe-drift", daemon=True)
        priority.start_background(self._thread)

    def consume(self, window: Window) -> None:
        try:
            self._windows.put_nowait(window)
        except queue.Full:
            self.skipped += 1

    def join(self) -> None:
        """Waits until every queued window is scored."""
        self._windows.join()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Scores what is queued, then stops the thread, waiting at most `timeout_s`: a
        scoring still running then finishes on its own (the thread is a daemon)."""
        if self._closed:
            return
        self._closed = True
        self._windows.put(None)
        self._thread.join(timeout_s)

    def score(self, window: Window) -> WindowDrift:
        """The window's drift on every layer; the drift thread's work, callable directly."""
        scores = [*self._semantic(window), *self._routing(window)]
        return WindowDrift(
            window.first_step, window.last_step, datetime.now(UTC), self.baseline.id, tuple(scores)
        )

    def _semantic(self, window: Window) -> list[LayerDrift]:
        scores = []
        for reference in self.baseline.hidden_states:
            rows_ND = window.hidden_states.get(reference.name)
            rows = scored_rows(
                0 if rows_ND is None else len(rows_ND),
                self.baseline.window_rows,
                len(reference.reference_NK),
            )
            if rows_ND is None or rows < MIN_ROWS:
                continue
            self.latest_samples[reference.name] = LatestSample(
                reference.layer, window.first_step, window.last_step, rows_ND
            )
            # The reservoir's rows are a uniform sample already: the first `rows` are too.
            current_NK = reference.projection.apply(rows_ND[:rows])
            for method in self.config.methods:
                result = score_window(
                    method,
                    current_NK,
                    reference.reference_NK,
                    self._threshold(reference, method, rows),
                    seed=self.config.seed + window.last_step,
                )
                key = (reference.layer, method)
                in_a_row = self._drifted_windows.get(key, 0) + 1 if result.drifted else 0
                self._drifted_windows[key] = in_a_row
                scores.append(
                    LayerDrift(
                        "semantic",
                        reference.layer,
                        reference.name,
                        method,
                        result.score,
                        result.threshold,
                        result.drifted,
                        rows,
                        in_a_row,
                    )
                )
        return scores

    def _threshold(self, reference: HiddenStateBaseline, method: str, rows: int) -> float:
        calibrated = reference.thresholds.get(method, {}).get(rows)
        if calibrated is not None:
            return calibrated
        key = (reference.layer, method, rows)
        if key not in self._thresholds:
            self._thresholds[key] = calibrate(
                method, reference.reference_NK, rows, seed=self.config.seed
            )
        return self._thresholds[key]

    def _routing(self, window: Window) -> list[LayerDrift]:
        scores = []
        # By index: a baseline made from a stored run knows its MoE layers by index alone.
        by_layer = {s.layer: s for s in window.routing.layers}
        for reference in self.baseline.experts:
            stats = by_layer.get(reference.layer)
            if stats is None or not stats.tokens:
                continue
            divergence = js_divergence(
                np.asarray(stats.tokens_per_expert), reference.distribution_E
            )
            scores.append(
                LayerDrift(
                    "routing",
                    reference.layer,
                    reference.name,
                    ROUTING_METHOD,
                    divergence,
                    None,
                    False,
                    stats.tokens,
                )
            )
        return scores

    def _run(self) -> None:
        failed = False
        # Found once: looking the libraries up again for each window took a fifth of the
        # drift thread's time in `observe serve`.
        blas = ThreadpoolController().select(user_api="blas")
        while (window := self._windows.get()) is not None:
            try:
                # Process-wide while it lasts: BLAS calls of other threads meanwhile run on
                # one thread too. (OpenBLAS 0.3.31 ignores it where the main thread set a
                # number of its own.)
                with blas.limit(limits=SCORING_BLAS_THREADS):
                    drift = self.score(window)
                self.latest = drift
                self.scored += 1
                for output in self.outputs:
                    output.consume_drift(drift)
            except Exception:
                # Logged once: a failing computation must not flood the log every window.
                if not failed:
                    failed = True
                    logger.exception("observe: drift scoring failed; later failures not logged")
            finally:
                self._windows.task_done()
        self._windows.task_done()
