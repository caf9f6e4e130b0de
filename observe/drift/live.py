"""Live drift: flushed windows compared with the baseline, on a thread of its own.

Routing drift scores each flushed window: every sequence brings many tokens, so one window's
expert counts are already a sample, and the score is cheap. Semantic drift scores a drift
window: the flushed windows gathered until they hold the baseline's `window_rows` pooled
sequence states per attention layer, whatever the steps that takes. A flushed window of a
few steps holds few sequences (on a quiet service, fewer than `MIN_ROWS`, too few to score
at all), and a classifier or a kernel tells little apart from so few. Each score also costs
about the same whatever its rows (Evidently's classifier: 9 ms for 128 rows, 19 ms for
512), so scoring many small windows costs several times what the same sequences cost in
full ones. `cut()` scores what is gathered however few it is, where traffic changes; closing
scores it too.

`DriftSink` is a monitor sink. It only queues windows, boundedly: a drift computation
slower than the flush interval skips windows (counted) instead of delaying training steps,
the monitor's other sinks or `snapshot()`, or queueing without end. Its results go to
`DriftOutput`s (the run's gauges, the store), which the application wires.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Sequence
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


class _Cut:
    """Queued by `DriftSink.cut()`: score what is gathered."""


_CUT = _Cut()


@dataclass(frozen=True)
class LayerDrift:
    """One score of one layer: semantic (an attention layer, by `method`, over a drift
    window) or routing (an MoE layer, method "jensen_shannon", over a flushed window). Steps
    `first_step` to `last_step` are the ones its data came from."""

    kind: str
    layer: int
    name: str
    method: str
    score: float
    threshold: float | None
    drifted: bool
    rows: int
    first_step: int
    last_step: int
    # This window and the scored windows in a row before it that drifted on this layer and
    # method: 0 when this one did not (never more for routing, which has no threshold).
    drifted_windows: int = 0


@dataclass(frozen=True)
class WindowDrift:
    """The scores one flushed window (or a cut) brought: routing for that window, semantic
    where it completed a drift window."""

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


class Gathered:
    """The pooled sequence states of the flushed windows since the last drift window, of
    the attention layers `names`, and the steps they came from."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = frozenset(names)
        self.first_step: int | None = None
        self.last_step = 0
        self._rows: dict[str, list[np.ndarray]] = {}

    def add(self, window: Window) -> None:
        if self.first_step is None:
            self.first_step = window.first_step
        self.last_step = window.last_step
        for name, rows_ND in window.hidden_states.items():
            if name in self._names and len(rows_ND):
                self._rows.setdefault(name, []).append(rows_ND)

    def counts(self) -> dict[str, int]:
        """Rows gathered per layer, of the layers that have any."""
        return {name: sum(len(part) for part in parts) for name, parts in self._rows.items()}

    def take(self) -> tuple[int, int, dict[str, np.ndarray]]:
        """The steps and every layer's rows, in the order they came; empties it."""
        states = {name: np.concatenate(parts) for name, parts in self._rows.items()}
        taken = (self.first_step or self.last_step, self.last_step, states)
        self.first_step, self._rows = None, {}
        return taken


class DriftSink:
    """A monitor sink scoring windows against `baseline` (see the module docstring)."""

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
        # The last drift window's raw sample per attention layer, for reports.
        self.latest_samples: dict[str, LatestSample] = {}
        # Thresholds for window sizes and methods the baseline has none for, calibrated
        # when first met.
        self._thresholds: dict[tuple[int, str, int], float] = {}
        # Per (layer, method): the scored windows in a row that drifted, up to the last.
        self._drifted_windows: dict[tuple[int, str], int] = {}
        self._gathered = Gathered(r.name for r in baseline.hidden_states)
        # Rows a drift window holds per attention layer: the baseline's window, at most half
        # its reference (as calibration took them).
        self._full = {
            r.name: scored_rows(baseline.window_rows, baseline.window_rows, len(r.reference_NK))
            for r in baseline.hidden_states
        }
        self._windows: queue.Queue[Window | _Cut | None] = queue.Queue(self.config.queue_size)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="observe-drift", daemon=True)
        priority.start_background(self._thread)

    def consume(self, window: Window) -> None:
        try:
            self._windows.put_nowait(window)
        except queue.Full:
            self.skipped += 1

    def cut(self) -> None:
        """Has the sequences gathered so far scored as a drift window, however few, once
        the windows queued before are: where traffic changes, so that no drift window
        mixes what came before with what came after. Waits for room in the queue."""
        self._windows.put(_CUT)

    def join(self) -> None:
        """Waits until every queued window (and cut) is scored."""
        self._windows.join()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Scores what is queued and what is gathered, then stops the thread, waiting at
        most `timeout_s`: a scoring still running then finishes on its own (the thread is a
        daemon)."""
        if self._closed:
            return
        self._closed = True
        self._windows.put(None)
        self._thread.join(timeout_s)

    def score(self, window: Window) -> WindowDrift:
        """What one flushed window brings: its routing drift on every MoE layer, and the
        semantic drift of the drift window it completes, if it does. The drift thread's
        work, callable directly."""
        self._gathered.add(window)
        scores = self._routing(window)
        # Layers with no rows at all do not hold the others back: a baseline may name a
        # layer the monitor does not sample.
        counts = self._gathered.counts()
        if counts and all(rows >= self._full[name] for name, rows in counts.items()):
            scores = [*self._semantic(), *scores]
        return self._drift(scores)

    def _cut(self) -> WindowDrift:
        return self._drift(self._semantic())

    def _drift(self, scores: Sequence[LayerDrift]) -> WindowDrift:
        return WindowDrift(datetime.now(UTC), self.baseline.id, tuple(scores))

    def _semantic(self) -> list[LayerDrift]:
        """The drift window gathered so far, scored on every attention layer."""
        first_step, last_step, states = self._gathered.take()
        rng = np.random.default_rng(self.config.seed + last_step)
        scores = []
        for reference in self.baseline.hidden_states:
            rows_ND = states.get(reference.name)
            if rows_ND is None:
                continue
            rows = scored_rows(len(rows_ND), self.baseline.window_rows, len(reference.reference_NK))
            if rows < MIN_ROWS:
                continue
            self.latest_samples[reference.name] = LatestSample(
                reference.layer, first_step, last_step, rows_ND
            )
            # Drawn from every flushed window of it, in their order.
            kept = np.sort(rng.choice(len(rows_ND), rows, replace=False))
            current_NK = reference.projection.apply(rows_ND[kept])
            for method in self.config.methods:
                result = score_window(
                    method,
                    current_NK,
                    reference.reference_NK,
                    self._threshold(reference, method, rows),
                    seed=self.config.seed + last_step,
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
                        first_step,
                        last_step,
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
                    window.first_step,
                    window.last_step,
                )
            )
        return scores

    def _run(self) -> None:
        failed = False
        # Found once: looking the libraries up again for each window took a fifth of the
        # drift thread's time in `observe serve`.
        blas = ThreadpoolController().select(user_api="blas")
        while True:
            item = self._windows.get()
            try:
                # Process-wide while it lasts: BLAS calls of other threads meanwhile run on
                # one thread too. (OpenBLAS 0.3.31 ignores it where the main thread set a
                # number of its own.)
                with blas.limit(limits=SCORING_BLAS_THREADS):
                    if isinstance(item, Window):
                        drift = self.score(item)
                        self.scored += 1
                    else:
                        drift = self._cut()
                if drift.scores:
                    self.latest = drift
                    for output in self.outputs:
                        output.consume_drift(drift)
            except Exception:
                # Logged once: a failing computation must not flood the log every window.
                if not failed:
                    failed = True
                    logger.exception("observe: drift scoring failed; later failures not logged")
            finally:
                self._windows.task_done()
            if item is None:
                return
