"""Semantic drift per window: the live path against Evidently's Report, side by side.

For each shape (rows × hidden dims) the baseline is twice the window: the projection is
fitted on one half, the other half, projected, is the reference. The live path is
`Projection.apply` on the window plus `score_window` (classifier); the Report path is
Evidently's `Report` with the same classifier method on the raw window and reference halves,
the way the Report would be used without observe (it adds a t-SNE picture, most of its cost).
Then `score_window` per method at the largest shape, and `calibrate` per method on a 5,000 ×
64 reference. Times are medians with the slowest run in brackets; the one-second target holds
only if every run meets it. It reports; it exits 0 whether or not the targets are met.
`benchmarks/README.md` keeps the latest table.

    .venv/bin/python benchmarks/drift.py [--runs 3] [--report-runs 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import evidently
import numpy as np
import pandas as pd
import sklearn
from evidently import DataDefinition, Dataset, Report
from evidently.metrics.embeddings import EmbeddingsDrift

from observe.catalogue import SEMANTIC_DRIFT_ALERT
from observe.drift.calibration import calibrate
from observe.drift.methods import MAX_ROWS, METHODS, evidently_method
from observe.drift.projection import Projection
from observe.drift.score import score_window

SHAPES = ((2_000, 256), (10_000, 64))
WINDOW_TARGET_S = 1.0
SPEEDUP_TARGET = 50
CALIBRATION_SHAPE, CALIBRATION_WINDOW = (5_000, 64), 500


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


class Shape:
    """A window of `rows` × `dims` hidden states, and a baseline twice its size."""

    def __init__(self, rng: np.random.Generator, rows: int, dims: int) -> None:
        self.rows, self.dims = rows, dims
        baseline = rng.normal(size=(2 * rows, dims)).astype(np.float32)
        self.fit_half, self.reference_half = baseline[:rows], baseline[rows:]
        self.projection = Projection.fit(self.fit_half)
        self.reference = self.projection.apply(self.reference_half)
        self.window = rng.normal(size=(rows, dims)).astype(np.float32)

    def live(self, method: str, seed: int) -> float:
        """Seconds to project the window and score it: what the live path does per window."""
        return timed(
            lambda: score_window(
                method,
                self.projection.apply(self.window),
                self.reference,
                SEMANTIC_DRIFT_ALERT,
                seed=seed,
            )
        )

    def report(self) -> float:
        """Seconds for Evidently's Report on the raw window and reference half."""
        columns = [f"h{d}" for d in range(self.dims)]
        definition = DataDefinition(embeddings={"states": columns})
        metric = EmbeddingsDrift(
            embeddings_name="states", drift_method=evidently_method("classifier")
        )
        current = pd.DataFrame(self.window, columns=columns)
        reference = pd.DataFrame(self.reference_half, columns=columns)
        return timed(
            lambda: Report([metric]).run(
                Dataset.from_pandas(current, data_definition=definition),
                Dataset.from_pandas(reference, data_definition=definition),
            )
        )


def summary(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} ({max(times):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="live runs per figure")
    parser.add_argument("--report-runs", type=int, default=1, help="Report runs per shape")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shapes = [Shape(rng, rows, dims) for rows, dims in SHAPES]

    print(
        f"evidently {evidently.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}; seconds, median (slowest) of the runs"
    )
    print()
    print("| rows × dims | live s (classifier) | Report s | Report / live |")
    print("|---|---|---|---|")
    speedups = []
    for shape in shapes:
        shape.live("classifier", 0)  # warm-up: first calls into scikit-learn and pandas
        live = [shape.live("classifier", seed) for seed in range(args.runs)]
        report = [shape.report() for _ in range(args.report_runs)]
        speedups.append(statistics.median(report) / statistics.median(live))
        print(
            f"| {shape.rows:,} × {shape.dims} | {summary(live)} | {summary(report)} "
            f"| {speedups[-1]:,.0f}× |"
        )

    largest = shapes[-1]
    print()
    print(f"| method ({largest.rows:,} × {largest.dims}) | rows a side | s per window |")
    print("|---|---|---|")
    per_method = {m: [largest.live(m, seed) for seed in range(args.runs)] for m in METHODS}
    for method, times in per_method.items():
        rows = min(largest.rows, MAX_ROWS.get(method, largest.rows))
        print(f"| {method} | {rows:,} | {summary(times)} |")

    sample = rng.normal(size=CALIBRATION_SHAPE)
    print()
    print(
        f"| method | calibrate s ({CALIBRATION_SHAPE[0]:,} × {CALIBRATION_SHAPE[1]}, "
        f"20 windows of {CALIBRATION_WINDOW} rows) |"
    )
    print("|---|---|")
    for method in METHODS:
        seconds = timed(partial(calibrate, method, sample, CALIBRATION_WINDOW))
        print(f"| {method} | {seconds:.2f} |")

    print()
    met = "met" if min(speedups) >= SPEEDUP_TARGET else "MISSED"
    print(f"Live vs Report: at least {min(speedups):,.0f}× (target ≥ {SPEEDUP_TARGET}×: {met})")
    slowest = max(per_method["classifier"])
    met = "met" if slowest < WINDOW_TARGET_S else "MISSED"
    print(
        f"{largest.rows:,} × {largest.dims} window, classifier: slowest of {args.runs} runs "
        f"{slowest:.3f} s (target < {WINDOW_TARGET_S} s in every run: {met})"
    )


if __name__ == "__main__":
    main()
