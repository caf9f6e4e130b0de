"""Drift thresholds calibrated on the baseline's own windows, per method and window size.

Shapes: N rows of the projected baseline, K dimensions.

Evidently's default thresholds do not transfer between data sets: on 1,024-dimensional
states with a small shift, its MMD threshold missed the shift, the ratio method alarmed on
windows of 500 same-distribution rows and the distance method on every window. What a method
scores when nothing has changed depends on the dimensions and, most, on the window's rows.
So each threshold comes from windows that are known not to have drifted: disjoint parts of
the baseline itself.

The rule: score `windows` same-distribution windows and take the highest raw score plus one
standard deviation of them, mapped to the score scale. The highest of 20 alone is exceeded by
a further same-distribution window 1 time in 21 on average, but it swings with the draw; the
standard deviation on top keeps the rate under 5% in nearly every draw. Measured on 64-d
Gaussian data (1,000 calibrations drawn from 400 baseline windows, each judged on 400 fresh
windows), with windows of 200 rows the false-alarm rate averaged 0.4% (classifier, before
its floor), 0.8% (distance), 0.3% (ratio) and 1.6% (mmd, whose null scores are skewed and
half of them 0), and exceeded 5% in 5% of calibrations for mmd, at most 2.1% for the others;
with windows of 500 rows it averaged 0.3% to 1.2% and exceeded 5% in at most 3.2%. False
alarms multiply by layers and windows, so the rule leans to fewer. The spread is taken on the
raw scale: the classifier's score clips half its null values to 0, which would shrink it.

The sample must not be the rows the projection was fitted on: a PCA fitted on a sample
whitens that sample better than any later one, so later windows would look drifted from it
(with 2,000 rows of 64 dims, the ratio method raised 15–24 false alarms in 100 windows).
"""

from __future__ import annotations

import numpy as np

from observe.catalogue import SEMANTIC_DRIFT_ALERT
from observe.drift.methods import MIN_ROWS, drift_score, raw_score
from observe.errors import ObserveError


def calibrate(
    method: str, sample_NK: np.ndarray, window_rows: int, *, windows: int = 20, seed: int = 0
) -> float:
    """The score above which a window of `window_rows` rows has drifted, for `method`.

    Each of `windows` draws splits the projected baseline `sample_NK` into a current window
    of `window_rows` rows and the disjoint rest, which `raw_score` subsamples to the same
    size, as the live path subsamples the whole baseline. The threshold holds for windows of
    that size only: a smaller window scores higher by chance.

    For "classifier" the result is never below the alert line `SEMANTIC_DRIFT_ALERT` (0.3):
    calibration raises it where small windows are noisy and leaves it where they are not.
    A threshold of 1 means the method cannot tell windows of this size from the baseline's
    own noise: use larger windows or another method.
    """
    sample = np.asarray(sample_NK)
    if windows < 2:
        raise ObserveError(f"windows={windows} must be at least 2 to measure their spread")
    if window_rows < MIN_ROWS:
        raise ObserveError(f"window_rows={window_rows} must be at least {MIN_ROWS}")
    if sample.ndim != 2 or len(sample) < 2 * window_rows:
        raise ObserveError(
            f"calibrating windows of {window_rows} rows needs a baseline of at least "
            f"{2 * window_rows} rows, got shape {sample.shape}: collect a larger baseline "
            "or use smaller windows"
        )
    rng = np.random.default_rng(seed)
    raws = []
    for _ in range(windows):
        order = rng.permutation(len(sample))
        current, rest = sample[order[:window_rows]], sample[order[window_rows:]]
        raws.append(raw_score(method, current, rest, seed=int(rng.integers(2**31))))
    threshold = drift_score(method, max(raws) + float(np.std(raws, ddof=1)))
    if method == "classifier":
        threshold = max(threshold, SEMANTIC_DRIFT_ALERT)
    return threshold


def scored_rows(rows: int, window_rows: int, reference_rows: int) -> int:
    """How many of a window's `rows` live drift scores: the baseline's `window_rows` when
    there are enough, else the largest power of two there is, and never more than half the
    `reference_rows` (calibration draws a window and a disjoint rest from them). So a
    window's threshold is calibrated for exactly its size, and only a handful of sizes
    ever need one (`window_sizes`)."""
    if rows < window_rows:
        window_rows = 1 << (rows.bit_length() - 1) if rows else 0
    return min(window_rows, reference_rows // 2)


def window_sizes(window_rows: int, reference_rows: int) -> list[int]:
    """Every size `scored_rows` gives that drift can score (at least `MIN_ROWS`), smallest
    first: what a baseline calibrates so that live scoring never has to."""
    sizes = {scored_rows(window_rows, window_rows, reference_rows)}
    rows = 1 << (MIN_ROWS - 1).bit_length()
    while rows < window_rows:
        sizes.add(scored_rows(rows, window_rows, reference_rows))
        rows <<= 1
    return sorted(size for size in sizes if size >= MIN_ROWS)
