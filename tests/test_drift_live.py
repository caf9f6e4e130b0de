"""Live drift: windows scored on a thread of their own, against a baseline; a session
that scores drift publishes it on /metrics and writes it to the store."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import observe
from observe import catalogue
from observe.alerts.defaults import SEMANTIC_DRIFT_RULE
from observe.alerts.evaluate import figures
from observe.drift import live
from observe.drift.baseline import Baseline
from observe.drift.config import DriftConfig
from observe.drift.live import ROUTING_METHOD, DriftSink, LayerDrift, WindowDrift
from observe.hooks.stats import LayerStats, RoutingStats, Window
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.store import baselines as stored
from observe.store.alerting import last_sample_time
from observe.store.engine import connect

D, E, ROWS = 32, 4, 128
NAME, ROUTER = "layers.0.attention", "layers.0.moe.router"


def baseline(seed: int = 0) -> Baseline:
    rng = np.random.default_rng(seed)
    return Baseline.from_samples(
        {NAME: rng.normal(size=(2000, D))},
        {ROUTER: [100, 100, 100, 100]},
        model="synthetic",
        window_rows=ROWS,
        methods=("classifier",),
    )


def window(step: int, shift: float, tokens: tuple[int, ...], seed: int) -> Window:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(ROWS, D)) + shift
    layer = LayerStats(0, ROUTER, sum(tokens), tokens, 0.9, 1.0, (), 0.5, 1.0, 0.0, None, ())
    return Window(RoutingStats(step, step, (layer,)), {NAME: rows.astype(np.float32)})


def test_windows_are_scored_against_the_baseline() -> None:
    sink = DriftSink(baseline(), DriftConfig(queue_size=10))
    try:
        same = sink.score(window(1, 0.0, (100, 100, 100, 100), seed=1))
        shifted = sink.score(window(2, 1.0, (400, 0, 0, 0), seed=2))
    finally:
        sink.close()
    semantic = {w: next(s for s in d.scores if s.kind == "semantic") for w, d in
                (("same", same), ("shifted", shifted))}  # fmt: skip
    assert not semantic["same"].drifted and semantic["same"].score < 0.3
    assert semantic["shifted"].drifted and semantic["shifted"].score > 0.3
    routing = {w: next(s for s in d.scores if s.method == ROUTING_METHOD) for w, d in
               (("same", same), ("shifted", shifted))}  # fmt: skip
    assert routing["same"].score == pytest.approx(0.0)
    assert routing["shifted"].score > 0.3


def test_drifted_windows_are_counted_in_a_row_per_layer_and_method() -> None:
    sink = DriftSink(baseline(), DriftConfig(queue_size=10))
    try:
        counts = []
        for step, shift in enumerate((1.0, 1.0, 0.0, 1.0, 1.0, 1.0), start=1):
            drift = sink.score(window(step, shift, (100, 100, 100, 100), seed=step))
            semantic = next(s for s in drift.scores if s.kind == "semantic")
            counts.append((semantic.drifted, semantic.drifted_windows))
    finally:
        sink.close()
    assert counts == [(True, 1), (True, 2), (False, 0), (True, 1), (True, 2), (True, 3)]


class BlasThreads(DriftSink):
    """Records the BLAS libraries' threads each time the drift thread scores a window."""

    seen: list[list[int]]

    def score(self, window: Window) -> Any:
        self.seen.append(blas_threads())
        return super().score(window)


def blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_the_drift_thread_scores_on_one_blas_thread_and_gives_them_back() -> None:
    before = blas_threads()
    if max(before, default=1) == 1:
        pytest.skip("BLAS runs on one thread here already: a machine of one core")
    sink = BlasThreads(baseline(), DriftConfig(queue_size=10))
    sink.seen = []
    try:
        sink.consume(window(1, 0.0, (100, 100, 100, 100), seed=1))
        sink.join()
    finally:
        sink.close()
    assert sink.seen == [[live.SCORING_BLAS_THREADS] * len(before)]
    assert blas_threads() == before


class Collected:
    """A drift output keeping what it is given."""

    def __init__(self) -> None:
        self.drifts: list[WindowDrift] = []

    def consume_drift(self, drift: WindowDrift) -> None:
        self.drifts.append(drift)

    def scores(self, kind: str) -> list[LayerDrift]:
        return [s for d in self.drifts for s in d.scores if s.kind == kind]


def sized(step: int, rows: int) -> Window:
    """A same-distribution window of `rows` pooled states, at `step`."""
    flushed = window(step, 0.0, (100, 100, 100, 100), seed=step)
    flushed.hidden_states[NAME] = np.resize(flushed.hidden_states[NAME], (rows, D))
    return flushed


def test_semantic_drift_waits_for_a_drift_window_of_the_baselines_rows() -> None:
    """Routing is scored each flushed window; semantic once the windows gathered hold the
    baseline's window_rows (128) sequences, over every step they came from."""
    collected = Collected()
    sink = DriftSink(baseline(), DriftConfig(queue_size=10), outputs=[collected])
    try:
        for step, rows in enumerate((40, 40, 40, 40, 200, 30), start=1):
            sink.consume(sized(step, rows))
        sink.join()
        semantic = [(s.first_step, s.last_step, s.rows) for s in collected.scores("semantic")]
        assert semantic == [(1, 4, 128), (5, 5, 128)]
        routing = [(s.first_step, s.last_step) for s in collected.scores("routing")]
        assert routing == [(step, step) for step in range(1, 7)]
        assert sink.scored == 6
        # The drift window's whole sample, for reports.
        assert sink.latest_samples[NAME].rows_ND.shape == (200, D)
    finally:
        sink.close()
    # Closing scores what was gathered: 30 rows, a window of 16 is under MIN_ROWS.
    assert len(collected.scores("semantic")) == 2


def test_a_cut_scores_what_is_gathered_and_close_what_is_left() -> None:
    collected = Collected()
    sink = DriftSink(baseline(), DriftConfig(queue_size=10), outputs=[collected])
    try:
        for step in (1, 2):
            sink.consume(sized(step, 50))
        sink.cut()
        sink.consume(sized(3, 10))
        sink.cut()  # 10 rows: too few to score, and dropped
        sink.consume(sized(4, 40))
        sink.join()
        assert [(s.first_step, s.last_step, s.rows) for s in collected.scores("semantic")] == [
            (1, 2, 64)
        ]
    finally:
        sink.close()
    assert [(s.first_step, s.last_step, s.rows) for s in collected.scores("semantic")] == [
        (1, 2, 64),
        (4, 4, 32),
    ]


def test_drift_windows_of_every_size_are_scored_without_calibrating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The baseline calibrated every size a drift window can have for its live methods; a
    method it did not calibrate them for is calibrated when a window first needs it."""
    reference = baseline()
    assert {m: sorted(t) for m, t in reference.hidden_states[0].thresholds.items()} == {
        "classifier": [32, 64, 128]
    }
    calibrated: list[tuple[str, int]] = []

    def calibrate(method: str, sample_NK: np.ndarray, rows: int, **kwargs: Any) -> float:
        calibrated.append((method, rows))
        return 0.5

    monkeypatch.setattr("observe.drift.live.calibrate", calibrate)
    collected = Collected()
    sink = DriftSink(
        reference, DriftConfig(methods=("classifier", "distance"), queue_size=10), [collected]
    )
    try:
        # Rows gathered when cut, rows scored: the largest power of two, up to window_rows.
        for step, (rows, scored) in enumerate(
            ((40, 32), (64, 64), (100, 64), (300, 128), (70, 64)), start=1
        ):
            collected.drifts.clear()
            sink.consume(sized(step, rows))
            sink.cut()
            sink.join()
            assert {(s.method, s.rows) for s in collected.scores("semantic")} == {
                ("classifier", scored),
                ("distance", scored),
            }
    finally:
        sink.close()
    assert calibrated == [("distance", 32), ("distance", 64), ("distance", 128)]


def test_windows_past_the_queue_are_skipped_and_counted() -> None:
    sink = DriftSink(baseline(), DriftConfig(queue_size=1))
    # Far faster than the thread scores: most are skipped, none waits.
    for step in range(1, 41):
        sink.consume(window(step, 0.0, (1, 1, 1, 1), seed=step))
    sink.close()
    assert sink.skipped > 0
    assert sink.scored + sink.skipped == 40
    assert sink.latest is not None and sink.latest_samples[NAME].rows_ND.shape == (ROWS, D)


@pytest.fixture(scope="module")
def tiny() -> Any:
    import torch

    from observe.workload.config import get_config
    from observe.workload.model import MoETransformer

    torch.manual_seed(0)
    return MoETransformer(get_config("tiny"))


def token_batches(seed: int, shift: int = 0) -> list[Any]:
    import torch

    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.integers(3, 250, size=(64, 24)) % (250 - shift) + shift)
            for _ in range(3)]  # fmt: skip


def tiny_baseline(model: Any) -> Baseline:
    import torch

    with observe.attach(model) as monitor, torch.no_grad():
        for ids in token_batches(seed=0):
            model(ids)
        return Baseline.capture(monitor, model="tiny", methods=("classifier",))


def test_a_plain_monitor_scores_drift_for_a_users_loop(tiny: Any) -> None:
    import torch

    reference = tiny_baseline(tiny)
    sink = DriftSink(reference, DriftConfig(queue_size=10))
    with observe.attach(tiny, drift=sink) as monitor, torch.no_grad():
        for ids in token_batches(seed=1, shift=200):
            tiny(ids)
            monitor.step()
    assert monitor.drift is sink and sink.scored == 1 and sink.latest is not None
    assert {s.kind for s in sink.latest.scores} == {"semantic", "routing"}
    assert all(s.drifted for s in sink.latest.scores if s.kind == "semantic")


def test_a_session_publishes_and_stores_drift(tiny: Any, tmp_path: Path) -> None:
    import torch

    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'observe.db'}",
        prometheus_port=0,
        spool_dir=tmp_path / "spool",
        # The test reads /metrics itself before the run ends: no scrape to wait for after.
        prometheus_linger_s=0,
    )
    with MonitoringSession(settings, model="tiny") as session:
        saved_id = tiny_baseline(tiny).save(session.store).id
    assert saved_id is not None
    trained_until = datetime.now(UTC) - timedelta(days=3)
    # A new run: the model's active baseline, by default; other tokens than it saw.
    with MonitoringSession(settings, model="tiny") as session:
        monitor = session.attach(
            tiny, drift=DriftConfig(queue_size=10), trained_until=trained_until
        )
        with torch.no_grad():
            for ids in token_batches(seed=1, shift=200):
                tiny(ids)
                monitor.step()
        monitor.snapshot()  # every window reached the sinks
        assert session.drift is not None
        session.drift.join()
        url = f"http://127.0.0.1:{session.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("observe_")]

    def values(name: str, having: str = "") -> list[float]:
        return [float(line.rpartition(" ")[2]) for line in lines
                if line.partition("{")[0] == name and having in line]  # fmt: skip

    semantic = values(catalogue.SEMANTIC_DRIFT.prometheus_name, 'method="classifier"')
    assert len(semantic) == 2 and min(semantic) > 0.3  # both attention layers
    assert values(catalogue.DRIFT_WINDOWS.prometheus_name, 'outcome="scored"') == [1.0]
    [freshness] = values(catalogue.KNOWLEDGE_FRESHNESS.prometheus_name)
    assert 3 * 86400 <= freshness < 3 * 86400 + 600

    def label_sets(metric: catalogue.Metric) -> set[str]:
        return {line.partition("{")[2].rpartition("}")[0] for line in lines
                if line.partition("{")[0] == metric.prometheus_name}  # fmt: skip

    # Each score beside its threshold and its windows in a row, of exactly its labels.
    assert len(label_sets(catalogue.SEMANTIC_DRIFT)) == 2
    assert label_sets(catalogue.SEMANTIC_DRIFT) == label_sets(catalogue.SEMANTIC_DRIFT_THRESHOLD)
    assert label_sets(catalogue.SEMANTIC_DRIFT) == label_sets(catalogue.SEMANTIC_DRIFTED_WINDOWS)
    engine = connect(settings.db_url)
    try:
        scores = stored.drift_results(engine, session.run_id)
        kept = stored.window_samples(engine, session.run_id)
        at = last_sample_time(engine, session.run_id)
        assert at is not None
        # The alert's figure, as the store's evaluator reads it: one drifted window so far.
        in_a_row = figures(SEMANTIC_DRIFT_RULE, engine, session.run_id, at)
    finally:
        engine.dispose()
    drifted = {
        (d.layer, d.method): float(d.drifted) for d in scores if d.details["kind"] == "semantic"
    }
    assert drifted == {(0, "classifier"): 1.0, (1, "classifier"): 1.0}
    assert {(int(f.labels["layer"]), f.labels["method"]): f.value for f in in_a_row} == drifted
    assert {d.details["kind"] for d in scores} == {"semantic", "routing"}
    assert all(d.baseline_id == saved_id for d in scores)
    assert {w.name for w in kept} == {name for name in monitor.attention_names}
