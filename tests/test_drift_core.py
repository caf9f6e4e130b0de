"""The drift core on synthetic data: projection, score mappings, calibration, detection, JS.

Detection runs on 64-d standard Gaussian states, windows of 200 rows, a baseline of 4,000
rows (the projection fitted on one half, the other half the reference). A shift moves every
row by `delta` baseline standard deviations along one random direction. Measured on this
fixture (calibrated thresholds: classifier 0.3, mmd 0.025, distance 0.491, ratio 0.838),
with 20 windows a shift and 100 same-distribution windows:

| method | δ 0.5 | δ 0.75 | δ 1 | δ 1.5 | δ 2 | false alarms |
|---|---|---|---|---|---|---|
| classifier | 0 | 2 | 7 | 19 | 20 | 0 |
| mmd | 13 | 18 | 20 | 20 | 20 | 4 |
| distance | 6 | 17 | 20 | 20 | 20 | 1 |
| ratio | 1 | 3 | 6 | 13 | 18 | 1 |

The classifier, held to the 0.3 alert line (an AUC of 0.65; a linear model trained on 200
rows of 64 dims), needs a shift of about 1.5. The tests assert the robust cells: every method
at δ 2, mmd and distance already at δ 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from observe.catalogue import SEMANTIC_DRIFT_ALERT
from observe.drift.calibration import calibrate
from observe.drift.divergence import js_divergence
from observe.drift.methods import (
    MAX_ROWS,
    METHODS,
    MIN_ROWS,
    drift_score,
    paired_frames,
    raw_score,
)
from observe.drift.projection import Projection
from observe.drift.score import DriftScore, score_window
from observe.errors import ObserveError

DIMS, WINDOW = 64, 200


class Gaussian:
    """A 64-d standard Gaussian source, its projection and projected reference."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(7)
        baseline = self.rng.normal(size=(4000, DIMS))
        self.projection = Projection.fit(baseline[:2000])
        self.reference = self.projection.apply(baseline[2000:])
        direction = self.rng.normal(size=DIMS)
        self.direction = direction / np.linalg.norm(direction)
        self.thresholds: dict[str, float] = {}

    def window(self, delta: float = 0.0) -> np.ndarray:
        rows = self.rng.normal(size=(WINDOW, DIMS)) + delta * self.direction
        return self.projection.apply(rows)

    def threshold(self, method: str) -> float:
        if method not in self.thresholds:
            self.thresholds[method] = calibrate(method, self.reference, WINDOW)
        return self.thresholds[method]


@pytest.fixture(scope="module")
def gaussian() -> Gaussian:
    return Gaussian()


# -- projection --------------------------------------------------------------------------------


def test_projection_reduces_whitens_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(96, 96))
    rows = rng.normal(size=(500, 96)) @ mixing + 3.0
    projection = Projection.fit(rows, max_dims=16)
    projected = projection.apply(rows)
    assert projected.shape == (500, 16)
    assert projected.dtype == np.float32
    np.testing.assert_allclose(projected.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(projected.std(axis=0, ddof=1), 1, rtol=1e-4)

    restored = Projection.from_bytes(projection.to_bytes())
    np.testing.assert_array_equal(restored.apply(rows), projected)
    np.testing.assert_array_equal(restored.components_KD, projection.components_KD)


def test_projection_keeps_no_more_dims_than_the_baseline_spans() -> None:
    rng = np.random.default_rng(0)
    assert Projection.fit(rng.normal(size=(10, 32))).dims == 9  # N - 1
    assert Projection.fit(rng.normal(size=(100, 8))).dims == 8  # D
    repeated = np.repeat(rng.normal(size=(3, 32)), 10, axis=0)
    assert Projection.fit(repeated).dims == 2  # three distinct rows span a plane
    with pytest.raises(ObserveError, match="every baseline row is the same"):
        Projection.fit(np.ones((10, 4)))


def test_projection_rejects_rows_and_bytes_that_do_not_fit() -> None:
    projection = Projection.fit(np.random.default_rng(0).normal(size=(50, 8)))
    with pytest.raises(ObserveError, match="fitted on 8 features"):
        projection.apply(np.zeros((4, 7)))
    with pytest.raises(ObserveError, match=r"not an \.npz archive"):
        Projection.from_bytes(b"not a projection")
    with pytest.raises(ObserveError, match="NaN or inf"):
        Projection.fit(np.full((5, 3), np.nan))


# -- scores ------------------------------------------------------------------------------------


def test_classifier_score_is_how_much_better_than_chance() -> None:
    assert drift_score("classifier", 0.65) == pytest.approx(0.3)
    assert drift_score("classifier", 0.5) == 0
    assert drift_score("classifier", 0.4) == 0  # worse than chance on held-out rows is chance
    assert drift_score("classifier", 1.0) == 1


@pytest.mark.parametrize("method", METHODS)
def test_every_score_maps_into_the_unit_interval_and_keeps_order(method: str) -> None:
    raws = np.linspace(0, 2, 81) if method in ("mmd", "distance") else np.linspace(0, 1, 41)
    scores = [drift_score(method, raw) for raw in raws]
    assert all(0 <= s <= 1 for s in scores)
    assert scores == sorted(scores)
    assert drift_score(method, 0.0) == 0


def test_distance_and_mmd_scores_have_fixed_points() -> None:
    assert drift_score("distance", 1.0) == pytest.approx(0.5)  # one standard deviation
    assert drift_score("mmd", 2.0) == 1  # the RBF kernel's largest possible MMD²
    assert drift_score("mmd", 0.5) == pytest.approx(0.5)
    assert drift_score("ratio", 0.25) == 0.25


def test_both_windows_are_cut_to_the_same_rows() -> None:
    rng = np.random.default_rng(0)
    current, reference = rng.normal(size=(300, 4)), rng.normal(size=(5000, 4))
    window, sample = paired_frames("classifier", current, reference, seed=3)
    assert len(window) == len(sample) == 300
    np.testing.assert_array_equal(window.to_numpy(), current)
    assert {tuple(r) for r in sample.to_numpy()} <= {tuple(r) for r in reference}
    again = paired_frames("classifier", current, reference, seed=3)[1]
    other = paired_frames("classifier", current, reference, seed=4)[1]
    assert again.equals(sample) and not other.equals(sample)
    window, sample = paired_frames("mmd", reference, reference[::-1], seed=0)
    assert len(window) == len(sample) == MAX_ROWS["mmd"]


def test_windows_too_small_or_of_another_projection_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ObserveError, match=f"at least {MIN_ROWS} rows"):
        raw_score("classifier", rng.normal(size=(MIN_ROWS - 1, 4)), rng.normal(size=(100, 4)))
    with pytest.raises(ObserveError, match="same baseline's projection"):
        raw_score("distance", rng.normal(size=(50, 4)), rng.normal(size=(50, 5)))
    with pytest.raises(ObserveError, match="unknown drift method 'ks'"):
        raw_score("ks", rng.normal(size=(50, 4)), rng.normal(size=(50, 4)))


def test_drift_score_flags_only_scores_above_the_threshold() -> None:
    assert DriftScore("classifier", 0.31, 0.655, 0.3).drifted
    assert not DriftScore("classifier", 0.3, 0.65, 0.3).drifted
    with pytest.raises(ObserveError, match="score must be in"):
        DriftScore("mmd", 1.5, 4.5, 0.3)


def test_score_window_ties_the_raw_score_to_its_score() -> None:
    rng = np.random.default_rng(0)
    current, reference = rng.normal(size=(100, 8)) + 0.5, rng.normal(size=(300, 8))
    window = score_window("distance", current, reference, 0.5, seed=2)
    assert window.raw == raw_score("distance", current, reference, seed=2)
    assert window.score == drift_score("distance", window.raw)
    assert window.drifted == (window.score > 0.5)


# -- calibration and detection -----------------------------------------------------------------


def test_the_classifier_threshold_never_drops_below_the_alert_line(gaussian: Gaussian) -> None:
    # Same-distribution windows of 1,000 rows score about 0.1: the alert line stands.
    assert calibrate("classifier", gaussian.reference, 1000) == SEMANTIC_DRIFT_ALERT
    # Windows of 20 rows are noisy enough that calibration raises it.
    assert calibrate("classifier", gaussian.reference, 20) > SEMANTIC_DRIFT_ALERT


def test_calibration_needs_two_windows_of_baseline(gaussian: Gaussian) -> None:
    with pytest.raises(ObserveError, match="needs a baseline of at least 4000 rows"):
        calibrate("distance", gaussian.reference, 2000)


@pytest.mark.parametrize("method", METHODS)
def test_same_distribution_windows_stay_under_the_threshold(
    gaussian: Gaussian, method: str
) -> None:
    threshold = gaussian.threshold(method)
    scores = [
        score_window(method, gaussian.window(), gaussian.reference, threshold, seed=i)
        for i in range(40)
    ]
    assert sum(s.drifted for s in scores) <= 2  # at least 95% of 40 windows stay under


@pytest.mark.parametrize(
    ("method", "delta"),
    [("classifier", 2.0), ("mmd", 1.0), ("distance", 1.0), ("ratio", 2.0)],
)
def test_a_shift_of_the_mean_crosses_the_threshold(
    gaussian: Gaussian, method: str, delta: float
) -> None:
    threshold = gaussian.threshold(method)
    scores = [
        score_window(method, gaussian.window(delta), gaussian.reference, threshold, seed=i)
        for i in range(10)
    ]
    assert sum(s.drifted for s in scores) >= 9


# -- routing divergence ------------------------------------------------------------------------


def test_js_divergence_bounds_and_symmetry() -> None:
    load = np.array([10, 0, 30, 60])
    assert js_divergence(load, load) == 0
    assert js_divergence(load, load / load.sum()) == pytest.approx(0, abs=1e-12)
    assert js_divergence(np.array([5, 5, 0, 0]), np.array([0, 0, 1, 9])) == pytest.approx(1)
    other = np.array([25, 25, 25, 25])
    forward = js_divergence(load, other)
    assert 0 < forward < 1
    assert forward == pytest.approx(js_divergence(other, load))


def test_js_divergence_of_an_idle_window_is_zero() -> None:
    assert js_divergence(np.zeros(4), np.array([1, 2, 3, 4])) == 0
    assert js_divergence(np.array([1, 2, 3, 4]), np.zeros(4)) == 0


def test_js_divergence_refuses_loads_that_do_not_compare() -> None:
    with pytest.raises(ObserveError, match="same layer"):
        js_divergence(np.ones(4), np.ones(8))
    with pytest.raises(ObserveError, match="negative, NaN or inf"):
        js_divergence(np.array([1, -1]), np.ones(2))
