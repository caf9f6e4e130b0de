"""Drift proved on the reference workload: a model fine-tuned on one domain, then served
held-out prompts of that domain and prompts of another, with fixed seeds."""

from __future__ import annotations

from collections import defaultdict

import pytest

from observe import jobs
from observe.alerts.defaults import SEMANTIC_DRIFT_RULE
from observe.catalogue import SEMANTIC_DRIFT_ALERT
from observe.demo import run_demo
from observe.drift.config import DriftConfig
from observe.hooks.config import MonitorConfig
from observe.settings import Settings
from observe.workload.job_config import (
    DemoConfig,
    FineTuneConfig,
    GenerationSettings,
    ServeConfig,
    TrainConfig,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

WINDOWS_PER_PHASE, BATCH, STEPS_PER_WINDOW = 20, 64, 4


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> jobs.Serving:
    where = tmp_path_factory.mktemp("drift")
    settings = Settings(
        db_url=f"sqlite:///{where / 'observe.db'}",
        prometheus_port=None,
        spool_dir=where / "spool",
        monitor=MonitorConfig(flush_every=STEPS_PER_WINDOW),
        # Every window scored: this test is about the scores, not about keeping up.
        drift=DriftConfig(queue_size=1000),
    )
    training = jobs.train(
        settings,
        FineTuneConfig(model_size="tiny", domain="medical", docs=400),
        TrainConfig(steps=40, batch_size=8, seed=0),
        where / "medical",
        progress=False,
    )
    requests = 2 * WINDOWS_PER_PHASE * STEPS_PER_WINDOW * BATCH
    return jobs.serve(
        settings,
        training.result.model,
        "medical",
        ServeConfig(
            traffic="medical;finance",
            requests=requests,
            repeat_share=0.0,
            concurrency=BATCH,
            max_batch_size=BATCH,
            cache_size=0,
            seed=7,
        ),
        GenerationSettings(max_new_tokens=1),
        drift=settings.drift,
        trained_until=training.result.trained_until,
    )


def per_phase(serving: jobs.Serving, kind: str) -> dict[tuple[int, int], list[float]]:
    """Scores per (phase, layer), in window order."""
    scores: dict[tuple[int, int], list[float]] = defaultdict(list)
    for d in serving.drift:
        if d.details["kind"] != kind:
            continue
        phase = next(p for p in serving.phases if p.first_step <= d.last_step <= p.last_step)
        scores[(phase.index, d.layer)].append(d.score)
    return scores


def test_the_training_domain_stays_under_the_alert_line(served: jobs.Serving) -> None:
    scores = per_phase(served, "semantic")
    layers = sorted({layer for _, layer in scores})
    assert layers == [0, 1]
    for layer in layers:
        same = scores[(0, layer)]
        # Drift windows of the baseline's 512 sequences each: a flush window holds about a
        # third of that here, so a phase of 20 flush windows holds 6 drift windows, and the
        # rest cut at its end.
        assert len(same) >= 6
        under = sum(score < SEMANTIC_DRIFT_ALERT for score in same) / len(same)
        assert under >= 0.95, (layer, same)


def test_no_drift_window_spans_two_phases(served: jobs.Serving) -> None:
    """Each phase's end cuts a drift window: what it scores is of one domain only."""
    spans = {(d.first_step or 0, d.last_step or 0) for d in served.drift}
    phases = [(p.first_step, p.last_step) for p in served.phases]
    assert all(any(a <= first and last <= b for a, b in phases) for first, last in spans)
    # The cut at the first phase's end: a drift window ends at its last step.
    semantic = {d.last_step for d in served.drift if d.details["kind"] == "semantic"}
    assert phases[0][1] in semantic


def test_another_domain_crosses_it_within_three_windows(served: jobs.Serving) -> None:
    scores = per_phase(served, "semantic")
    for layer in (0, 1):
        shifted = scores[(1, layer)]
        assert any(score > SEMANTIC_DRIFT_ALERT for score in shifted[:3]), (layer, shifted)


def test_routing_drifts_less_on_the_training_domain(served: jobs.Serving) -> None:
    scores = per_phase(served, "routing")
    for layer in (0, 1):
        same, other = scores[(0, layer)], scores[(1, layer)]
        assert sum(same) / len(same) < sum(other) / len(other), (layer, same, other)


def test_the_summary_shows_drift_per_phase(served: jobs.Serving) -> None:
    text = served.format()
    assert "drift per traffic phase" in text
    assert "phase 1 (medical=1)" in text and "phase 2 (finance=1)" in text


def test_the_demo_pages_on_its_finance_phase(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`observe demo` as it ships: its drift alert fires on the traffic that shifted."""
    where = tmp_path_factory.mktemp("demo")
    settings = Settings(
        db_url=f"sqlite:///{where / 'observe.db'}",
        prometheus_port=None,
        spool_dir=where / "spool",
    )
    result = run_demo(DemoConfig(), where / "demo", settings, progress=False)
    drift = [row for row in result.alerts if row.rule == SEMANTIC_DRIFT_RULE.name]
    assert {row.state for row in drift} == {"firing"}, drift
    shifted = {d.layer for d in result.serving.drift
               if d.drifted and d.first_step > result.serving.phases[0].last_step}  # fmt: skip
    assert shifted == {0, 1, 2, 3}
