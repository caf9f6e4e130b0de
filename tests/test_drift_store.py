"""Baselines, drift results and runs' samples in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from observe.drift.baseline import Baseline
from observe.errors import ObserveError
from observe.store import baselines as stored
from observe.store.records import Batch, DriftResult, HiddenSample, WindowSample
from observe.store.writer import Store

D, E = 24, 6


def synthetic(model: str, seed: int = 0, rows: int = 400) -> Baseline:
    rng = np.random.default_rng(seed)
    samples = {f"layers.{i}.attention": rng.normal(size=(rows, D)) for i in range(2)}
    experts = {f"layers.{i}.moe.router": rng.integers(1, 50, size=E).tolist() for i in range(2)}
    return Baseline.from_samples(
        samples,
        experts,
        model=model,
        window_rows=64,
        methods=("classifier", "distance"),
        domain="medical",
        trained_until=datetime(2026, 11, 1, tzinfo=UTC),
    )


def test_a_baseline_round_trips_and_one_per_model_is_active(store: Store) -> None:
    first = synthetic("medical").save(store)
    second = synthetic("medical", seed=1).save(store)
    other = synthetic("finance").save(store)
    assert first.id is not None and second.id is not None and other.id is not None

    loaded = Baseline.load(store, model="medical")
    assert loaded.id == second.id  # the newest saved is active
    assert (loaded.domain, loaded.trained_until) == ("medical", second.trained_until)
    for got, want in zip(loaded.hidden_states, second.hidden_states, strict=True):
        assert got.name == want.name
        np.testing.assert_array_equal(got.reference_NK, want.reference_NK)
        np.testing.assert_array_equal(got.projection.components_KD, want.projection.components_KD)
        assert got.thresholds == want.thresholds
    for got_e, want_e in zip(loaded.experts, second.experts, strict=True):
        np.testing.assert_allclose(got_e.distribution_E, want_e.distribution_E)
        assert got_e.distribution_E.sum() == pytest.approx(1.0)

    stored.activate_baseline(store.engine, first.id)
    assert Baseline.load(store, model="medical").id == first.id
    assert Baseline.load(store, model="finance").id == other.id  # untouched
    listed = stored.list_baselines(store.engine, "medical")
    assert [(b.id, b.active) for b in listed] == [(second.id, False), (first.id, True)]


def test_missing_baselines_are_clear_errors(store: Store) -> None:
    with pytest.raises(ObserveError, match="has no active baseline: make one"):
        Baseline.load(store, model="nobody")
    with pytest.raises(ObserveError, match="no baseline 999"):
        Baseline.load(store, baseline_id=999)


def test_drift_results_travel_in_batches_and_read_back_latest(store: Store) -> None:
    store.start_run("run-1", "medical", {})
    ended = datetime(2026, 11, 29, 12, tzinfo=UTC)
    results = tuple(
        DriftResult(ended, layer, "classifier", 0.1 * step, 0.3, 0.1 * step > 0.3, step, step,
                    None, {"kind": "semantic", "name": f"l{layer}"})
        for step in range(1, 5)
        for layer in (0, 1)
    )  # fmt: skip
    batch = Batch.from_json(Batch("run-1", drift_results=results).to_json())
    assert batch.drift_results == results
    store.write(batch)
    everything = stored.drift_results(store.engine, "run-1")
    assert len(everything) == 8
    latest = stored.drift_results(store.engine, "run-1", latest=True)
    assert {(d.layer, d.last_step, d.drifted) for d in latest} == {(0, 4, True), (1, 4, True)}
    assert stored.latest_drift_run(store.engine) == "run-1"


def test_a_runs_samples_travel_in_batches_and_replace_earlier_ones(store: Store) -> None:
    store.start_run("run-2", "medical", {})
    rows = np.arange(12, dtype=np.float16).reshape(4, 3)
    for name, sample in (("a", rows), ("b", rows + 1)):
        kept = HiddenSample(0, name, stored.npz_bytes(sample_ND=sample))
        window = WindowSample(0, name, 10, 19, stored.npz_bytes(sample_ND=sample))
        batch = Batch("run-2", hidden_samples=(kept,), window_samples=(window,))
        store.write(Batch.from_json(batch.to_json()))
    hidden = stored.hidden_samples(store.engine, "run-2")
    assert list(hidden) == ["b"]
    np.testing.assert_array_equal(stored.npz_arrays(hidden["b"])["sample_ND"], rows + 1)
    [window] = stored.window_samples(store.engine, "run-2")
    assert (window.name, window.first_step, window.last_step) == ("b", 10, 19)
    np.testing.assert_array_equal(stored.npz_arrays(window.data)["sample_ND"], rows + 1)
