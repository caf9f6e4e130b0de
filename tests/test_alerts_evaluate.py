"""The store evaluator: each signal's figure from stored samples equals the one computed by
hand as PromQL would (a counter reset included), on both engines; `for` takes a series
from pending to firing, and resolves it, at explicit evaluation times."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from observe.alerts.config import AlertsConfig, RuleOverride
from observe.alerts.evaluate import Evaluator, figures, status_rows
from observe.alerts.figures import histogram_quantile
from observe.catalogue import (
    CACHE_HITS,
    CACHE_MISSES,
    EXPORT_FAILURES,
    INFERENCE_LATENCY,
    LOAD_IMBALANCE,
    SEMANTIC_DRIFTED_WINDOWS,
    Metric,
)
from observe.store.alerting import alert_events, firing_since, record_events
from observe.store.records import Batch, HistogramSample, Sample
from observe.store.writer import Store

AT = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def run() -> str:
    """A run of its own per test: the module's tests share one PostgreSQL database."""
    return f"run-{uuid.uuid4().hex[:8]}"


def labels(metric: Metric, run: str, tag: str = "0") -> dict[str, str]:
    # The model label carries the tag too: some metrics have no labels of their own.
    return {**dict.fromkeys(metric.all_labels, tag), "run": run}


def ago(seconds: float) -> datetime:
    return AT - timedelta(seconds=seconds)


def rules(**overrides: RuleOverride) -> dict[str, object]:
    return {r.name: r for r in AlertsConfig(rules=overrides).alert_rules()}


def by_tag(found: list, label: str) -> dict[str, float]:  # type: ignore[type-arg]
    return {f.labels[label]: f.value for f in found}


def test_a_gauge_is_its_latest_sample_while_fresh(store: Store, run: str) -> None:
    name = LOAD_IMBALANCE.name
    store.write(
        Batch(
            run,
            samples=(
                Sample(ago(20), name, labels(LOAD_IMBALANCE, run, "fresh"), 1.0),
                Sample(ago(10), name, labels(LOAD_IMBALANCE, run, "fresh"), 2.5),
                # Older than Prometheus's 5-minute lookback: stale, no value.
                Sample(ago(400), name, labels(LOAD_IMBALANCE, run, "stale"), 9.0),
            ),
        )
    )
    found = figures(rules()["ObserveLoadImbalance"], store.engine, run, AT)
    assert by_tag(found, "model") == {"fresh": 2.5}


def test_rules_evaluated_together_read_what_each_reads_alone(store: Store, run: str) -> None:
    """The evaluator fetches every rule's series at once, as far back as the furthest
    reaching rule reads (a rate's window before its lookback): a gauge's sample older than
    the lookback stays stale, and a rate still starts from its point before the window."""
    failures = labels(EXPORT_FAILURES, run)
    store.write(
        Batch(
            run,
            samples=(
                Sample(ago(10), LOAD_IMBALANCE.name, labels(LOAD_IMBALANCE, run, "fresh"), 2.5),
                Sample(ago(400), LOAD_IMBALANCE.name, labels(LOAD_IMBALANCE, run, "stale"), 9.0),
                Sample(ago(400), EXPORT_FAILURES.name, failures, 10.0),
                Sample(ago(0), EXPORT_FAILURES.name, failures, 40.0),
            ),
        )
    )
    chosen = rules()
    together = [chosen["ObserveLoadImbalance"], chosen["ObserveExportFailures"]]
    rows, _ = Evaluator(together, store.engine, run).evaluate(AT)
    values = {row.rule: (row.value, dict(row.labels).get("model")) for row in rows}
    assert values["ObserveLoadImbalance"] == (2.5, "fresh")
    assert values["ObserveExportFailures"][0] == pytest.approx(30 / 300)
    for rule in together:
        alone = figures(rule, store.engine, run, AT)
        assert [f.value for f in alone] == [
            row.value for row in rows if row.rule == rule.name and row.value is not None
        ]


def test_the_drift_alert_fires_at_the_second_drifted_window_in_a_row(
    store: Store, run: str
) -> None:
    """Counted in windows, however long they last: one window over its threshold stays ok
    however long it is the last, the second in a row fires at once (`for` 0s), and a window
    under its threshold resolves it."""
    rule = rules()["ObserveSemanticDrift"]
    evaluator = Evaluator([rule], store.engine, run)
    series = labels(SEMANTIC_DRIFTED_WINDOWS, run)
    seen = []
    for seconds, windows in ((0, 1), (240, 1), (250, 2), (260, 0)):
        at = AT + timedelta(seconds=seconds)
        store.write(
            Batch(run, samples=(Sample(at, SEMANTIC_DRIFTED_WINDOWS.name, series, windows),))
        )
        [row], events = evaluator.evaluate(at + timedelta(seconds=1))
        seen.append((row.state, row.value, [e.state for e in events]))
    assert seen == [
        ("ok", 1.0, []),
        ("ok", 1.0, []),
        ("firing", 2.0, ["firing"]),
        ("ok", 0.0, ["resolved"]),
    ]


def test_a_rate_counts_a_reset_as_prometheus_does(store: Store, run: str) -> None:
    series = labels(EXPORT_FAILURES, run)
    points = [(400, 10.0), (200, 30.0), (100, 5.0), (0, 20.0)]
    samples = tuple(Sample(ago(s), EXPORT_FAILURES.name, series, v) for s, v in points)
    store.write(Batch(run, samples=samples))
    [found] = figures(rules()["ObserveExportFailures"], store.engine, run, AT)
    # From the last point before the 5m window: +20, then a reset to 5 counts 5, then +15.
    assert found.value == pytest.approx((20 + 5 + 15) / 300)


def test_a_share_pairs_series_and_counts_a_missing_counter_as_0(store: Store, run: str) -> None:
    rows = []
    for which, misses, hits in (("both", 30.0, 70.0), ("hits", None, 50.0), ("misses", 8.0, None)):
        for metric, rise in ((CACHE_MISSES, misses), (CACHE_HITS, hits)):
            if rise is not None:
                rows += [Sample(ago(310), metric.name, labels(metric, run, which), 0.0),
                         Sample(ago(0), metric.name, labels(metric, run, which), rise)]  # fmt: skip
    store.write(Batch(run, samples=tuple(rows)))
    found = figures(rules()["ObserveCacheMissRate"], store.engine, run, AT)
    assert by_tag(found, "model") == pytest.approx({"both": 0.3, "hits": 0.0, "misses": 1.0})


def test_a_quantile_interpolates_in_its_bucket_over_the_increase(store: Store, run: str) -> None:
    series = labels(INFERENCE_LATENCY, run)
    bounds = (0.1, 0.5, 1.0)
    counts = [(400, (5, 5, 5, 0)), (100, (10, 10, 10, 0)), (0, (1, 4, 2, 0))]  # a reset last
    store.write(
        Batch(
            run,
            histograms=tuple(
                HistogramSample(ago(s), INFERENCE_LATENCY.name, series, sum(c), 0.0, bounds, c)
                for s, c in counts
            ),
        )
    )
    [found] = figures(rules()["ObserveInferenceLatencyHigh"], store.engine, run, AT)
    # Observations up to each bound rose by (5, 10, 15, 15), then reset to (1, 5, 7, 7):
    # (6, 15, 22, 22) in all; rank 0.95 × 22 = 20.9 lies in (0.5, 1.0], past 15.
    assert found.value == pytest.approx(0.5 + 0.5 * (20.9 - 15) / 7)


def test_histogram_quantile_at_the_edges() -> None:
    assert math.isnan(histogram_quantile(0.5, (1.0, 2.0), (0, 0, 0)))  # no observations
    assert histogram_quantile(0.99, (1.0, 2.0), (1, 2, 100)) == 2.0  # past the last bound
    assert histogram_quantile(0.5, (1.0, 2.0), (4, 4, 4)) == 0.5  # from 0 in the first
    assert histogram_quantile(0.5, (1.0, 2.0), (4, 3, 4)) == 0.5  # a fall is lifted


def test_for_takes_a_series_from_pending_to_firing_and_resolves_it(store: Store, run: str) -> None:
    rule = rules(ObserveLoadImbalance=RuleOverride(value=2.0, for_="1m"))["ObserveLoadImbalance"]
    series = labels(LOAD_IMBALANCE, run)

    def gauge(at: datetime, value: float) -> None:
        store.write(Batch(run, samples=(Sample(at, LOAD_IMBALANCE.name, series, value),)))

    evaluator = Evaluator([rule], store.engine, run)
    states = []
    for seconds, value in ((0, 3.0), (30, 3.5), (60, 3.0), (90, 1.0), (120, 1.0)):
        at = AT + timedelta(seconds=seconds)
        gauge(at, value)
        [row], events = evaluator.evaluate(at)
        record_events(store.engine, events)
        states.append((row.state, row.since, row.value, [e.state for e in events]))
    assert states == [
        ("pending", AT, 3.0, []),
        ("pending", AT, 3.5, []),
        ("firing", AT + timedelta(seconds=60), 3.0, ["firing"]),
        ("ok", None, 1.0, ["resolved"]),
        ("ok", None, 1.0, []),
    ]
    recorded = alert_events(store.engine, run_id=run)
    assert [(e.state, e.time) for e in recorded] == [
        ("firing", AT + timedelta(seconds=60)),
        ("resolved", AT + timedelta(seconds=90)),
    ]
    assert recorded[0].labels == series and recorded[0].severity == rule.severity
    assert "3" in recorded[0].annotations["summary"]
    assert not firing_since(store.engine, run)


def test_a_one_off_status_takes_firing_since_from_the_events(store: Store, run: str) -> None:
    rule = rules(ObserveLoadImbalance=RuleOverride(value=2.0, for_="1m"))["ObserveLoadImbalance"]
    series = labels(LOAD_IMBALANCE, run)
    start = AT - timedelta(seconds=100)
    store.write(Batch(run, samples=(Sample(ago(200), LOAD_IMBALANCE.name, series, 4.0),)))
    # With no events recorded, a one-off status cannot know for how long: pending from now.
    [row] = status_rows(store.engine, [rule], run, now=AT)
    assert (row.state, row.since) == ("pending", AT)
    # A running evaluator saw it fire 100 s ago, and recorded it.
    evaluator = Evaluator([rule], store.engine, run)
    evaluator.evaluate(start - timedelta(seconds=60))
    _, events = evaluator.evaluate(start)
    record_events(store.engine, events)
    [row] = status_rows(store.engine, [rule], run, now=AT)
    assert (row.state, row.since, row.value) == ("firing", start, 4.0)
