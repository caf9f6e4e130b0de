"""The drift core on synthetic data: projection, score mappings, window pairing, JS."""

from __future__ import annotations

import numpy as np
import pytest

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
