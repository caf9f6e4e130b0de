"""Evidently's four embedding-drift methods, called directly, and their scores in [0, 1].

Shapes: N rows in the current window, M in the reference, K projected dimensions (see
`observe.drift.projection`).

Each method is the object Evidently's `EmbeddingsDrift` metric calls inside a `Report`, with
the same parameters, so `raw_score` is the number a Report shows for the same two frames.
Calling it directly skips the Report's t-SNE plot, which costs seconds to minutes a window.
Two parameters are fixed rather than Evidently's choice: no bootstrap (its thresholds come
from `observe.drift.calibration` instead) and no PCA inside the method (the projection has
already reduced the dimensions, once per baseline rather than once per window).

Both windows are cut to the same number of rows, drawn at random from the larger. For the
classifier that means balanced classes: its AUC's noise is set by the smaller class, so a
reference many times the window would cost as many times more to fit for at most half the
variance, and with unbalanced classes Evidently's unstratified split and SGD's unweighted loss
lean to the reference. For every method it means the threshold depends on one number, the
window's rows, which is what calibration measures; and a window costs what its rows cost,
whatever the baseline's size.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from evidently.metrics.embeddings import (
    DistanceDriftMethod,
    DriftMethod,
    MMDDriftMethod,
    ModelDriftMethod,
    RatioDriftMethod,
)

from observe.drift.config import METHODS
from observe.errors import ObserveError

# Fewer rows a side and every method's score is mostly noise (the classifier tests on half).
MIN_ROWS = 20
# MMD builds a kernel matrix over both windows, (2·rows)² float64: 2,000 rows a side take
# 128 MB and a quarter of a second, 10,000 would take 3.2 GB. Its estimate at 2,000 rows a
# side is already precise; the other methods are linear in the rows and take them all.
MAX_ROWS = {"mmd": 2000}

# Evidently's per-component test for `ratio`, and the distance for `distance`: its defaults.
_RATIO_STATTEST, _RATIO_STATTEST_THRESHOLD = "wasserstein", 0.1
_DISTANCE = "euclidean"


def evidently_method(method: str, threshold: float | None = None) -> DriftMethod:
    """The Evidently method object behind `method`, as `raw_score` calls it.

    `threshold` (a score in [0, 1], as `calibrate` returns) only sets Evidently's own
    drift flag, shown in its HTML report; None keeps Evidently's default there.
    """
    _check_method(method)
    limit = {} if threshold is None else {"threshold": _raw_limit(method, threshold)}
    if method == "classifier":
        return ModelDriftMethod(bootstrap=False, pca_components=None, **limit)
    if method == "mmd":
        return MMDDriftMethod(bootstrap=False, pca_components=None, **limit)
    if method == "distance":
        return DistanceDriftMethod(dist=_DISTANCE, bootstrap=False, pca_components=None, **limit)
    return RatioDriftMethod(
        component_stattest=_RATIO_STATTEST,
        component_stattest_threshold=_RATIO_STATTEST_THRESHOLD,
        pca_components=None,
        **limit,
    )


def paired_frames(
    method: str, current_NK: np.ndarray, reference_MK: np.ndarray, *, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The current window and the reference as `method` compares them: the same number of
    rows each (at most `MAX_ROWS`), drawn without replacement with `seed`; a side that
    already has that many rows is passed whole and in order."""
    _check_method(method)
    current = _window(current_NK, "current window")
    reference = _window(reference_MK, "reference")
    if current.shape[1] != reference.shape[1]:
        raise ObserveError(
            f"the current window has {current.shape[1]} dimensions and the reference "
            f"{reference.shape[1]}: project both with the same baseline's projection"
        )
    rows = min(len(current), len(reference), MAX_ROWS.get(method, len(current)))
    if rows < MIN_ROWS:
        raise ObserveError(
            f"drift needs at least {MIN_ROWS} rows in the window and in the reference, got "
            f"{len(current)} and {len(reference)}: collect more sequences per window"
        )
    rng = np.random.default_rng(seed)
    return _frame(_subsample(current, rows, rng)), _frame(_subsample(reference, rows, rng))


def raw_score(
    method: str, current_NK: np.ndarray, reference_MK: np.ndarray, *, seed: int = 0
) -> float:
    """Evidently's drift score of the current window against the reference, in its units:
    the classifier's ROC AUC, MMD², the distance between means, the share of drifted
    components."""
    current, reference = paired_frames(method, current_NK, reference_MK, seed=seed)
    raw = float(evidently_method(method)(current, reference)[0])
    if not math.isfinite(raw):
        raise ObserveError(
            f"Evidently's {method} method gave {raw} for this window: its rows are likely "
            "all identical; check the pooled hidden states"
        )
    return raw


def drift_score(method: str, raw: float) -> float:
    """`raw` mapped into [0, 1], increasing, 0 where the windows do not differ.

    - classifier: 2·AUC − 1 clipped to [0, 1], how much better than chance a classifier
      tells the windows apart (AUC 0.65 → 0.3; an AUC under 0.5 is chance too).
    - ratio: the share of components whose Wasserstein distance exceeds 0.1 of the
      reference's standard deviation, already in [0, 1].
    - distance: d / (1 + d) of the Euclidean distance d between the windows' means. The
      projection is whitened, so d is in baseline standard deviations: 1 maps to 0.5. A
      clip would give every large shift the same score; this keeps them ordered.
    - mmd: √(MMD² / 2). The RBF kernel is at most 1, so MMD² is at most 2; its root is the
      MMD itself, a distance between distributions that grows in proportion to a small
      mean shift (MMD² grows with its square and would crowd small shifts near 0).
    """
    _check_method(method)
    if method == "classifier":
        score = 2 * raw - 1
    elif method == "mmd":
        score = math.sqrt(max(raw, 0.0) / 2)
    elif method == "distance":
        score = raw / (1 + raw) if raw > 0 else 0.0
    else:
        score = raw
    return min(max(score, 0.0), 1.0)


def _raw_limit(method: str, score: float) -> float:
    """The raw value `drift_score` maps to `score`: a threshold in Evidently's units."""
    if not 0 <= score <= 1:
        raise ObserveError(f"a drift threshold must be in [0, 1], got {score}")
    if method == "classifier":
        return (score + 1) / 2
    if method == "mmd":
        return 2 * score**2
    if method == "distance":
        return math.inf if score == 1 else score / (1 - score)
    return score


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ObserveError(f"unknown drift method {method!r}: choose from {', '.join(METHODS)}")


def _window(rows_NK: np.ndarray, what: str) -> np.ndarray:
    # float64 whatever comes in: in float32 the methods' sums depend on the memory layout,
    # and a Report (which copies the frames) could differ in the last bits.
    rows = np.asarray(rows_NK, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] < 1:
        raise ObserveError(
            f"the {what} must be projected rows of shape (N, K), got {rows.shape}: "
            "pass Projection.apply's output"
        )
    if not np.isfinite(rows).all():
        raise ObserveError(f"the {what} holds NaN or inf: drop those rows before scoring")
    return rows


def _subsample(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) == n:
        return rows
    return rows[np.sort(rng.choice(len(rows), n, replace=False))]


def _frame(rows_NK: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(rows_NK, columns=[f"pc{k}" for k in range(rows_NK.shape[1])])
