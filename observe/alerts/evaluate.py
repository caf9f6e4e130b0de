"""Evaluating alert rules against the store: each rule's figure per series of one run, as
its PromQL would compute it, and the alert state machine (ok → pending → firing →
resolved) that `for` drives.

`Evaluator` keeps state between evaluations (the background evaluator of a monitored run
holds one); `status_rows` is a one-off status of a run, which takes "firing since" from
the alert events its run's evaluator recorded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from observe.alerts.figures import (
    bucket_increase,
    histogram_quantile,
    increase,
    window_points,
)
from observe.alerts.rules import Range, Rule, Threshold
from observe.alerts.signals import Quantile, Rate, Share, Signal, Value, parse_duration
from observe.alerts.text import python_value
from observe.store import alerting
from observe.store.alerting import AlertEvent, SeriesPoints
from observe.store.queries import find_run
from observe.store.series import labels_text

# Prometheus's lookback: a gauge not sampled for 5 minutes has no value (it went stale).
LOOKBACK_S = 300.0
STATES = ("ok", "pending", "firing")


@dataclass(frozen=True)
class Figure:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class AlertRow:
    """One line of `observe alerts status`: a series that is pending or firing, or a rule
    that is ok, with the value nearest its bound (None when it has no series)."""

    rule: str
    severity: str
    state: str
    value: float | None
    since: datetime | None
    labels: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "state": self.state,
            "value": self.value,
            "since": self.since.isoformat() if self.since else None,
            "labels": dict(self.labels),
        }


def figures(rule: Rule, engine: Engine, run_id: str, at: datetime) -> list[Figure]:
    """The rule's signal per series of the run at time `at`; series it gives no number for
    (too few points, 0/0) are left out, as PromQL leaves them out."""
    return _figures(rule, Fetched.of([rule], engine, run_id, at), at)


def _spans(signal: Signal) -> tuple[float, float]:
    """The seconds the signal's figure covers up to its evaluation time, and the seconds
    back it reads points from."""
    if isinstance(signal, Rate | Share | Quantile):
        window = parse_duration(signal.window) or 0.0
        # Points from before the window too: the increase starts from the last one of them.
        return window, window + LOOKBACK_S
    return LOOKBACK_S, LOOKBACK_S


def _since(rule: Rule, at: datetime) -> datetime:
    """The oldest point the rule reads at `at`."""
    return at - timedelta(seconds=_spans(rule.signal)[1])


@dataclass(frozen=True)
class Fetched:
    """The stored series that rules read at one time, fetched together: a query costs
    about a millisecond whatever it returns, and the background evaluator of a served
    model runs every rule every interval."""

    # Counter and gauge series, over what the rule reading furthest back reads.
    samples: list[SeriesPoints]
    histograms: dict[str, list[SeriesPoints]]

    @classmethod
    def of(cls, rules: Sequence[Rule], engine: Engine, run_id: str, at: datetime) -> Fetched:
        plain = [rule for rule in rules if not isinstance(rule.signal, Quantile)]
        samples = []
        if plain:
            names = sorted({name for rule in plain for name in rule.metrics})
            since = min(_since(rule, at) for rule in plain)
            samples = alerting.samples(engine, run_id, names, since, at)
        # Per histogram metric, the oldest point a rule on it reads.
        earliest: dict[str, datetime] = {}
        for rule in rules:
            if isinstance(rule.signal, Quantile):
                metric, since = rule.signal.metric, _since(rule, at)
                earliest[metric] = min(since, earliest.get(metric, since))
        histograms = {
            metric: alerting.histograms(engine, run_id, metric, since, at)
            for metric, since in earliest.items()
        }
        return cls(samples, histograms)

    def series(self, rule: Rule, at: datetime) -> list[SeriesPoints]:
        """The series `rule` reads at `at`, with the points it reads."""
        signal = rule.signal
        if isinstance(signal, Quantile):
            found = self.histograms[signal.metric]
        else:
            found = [s for s in self.samples if s.name in rule.metrics]
        since = _since(rule, at).timestamp()
        kept = [replace(s, points=[p for p in s.points if p[0] >= since]) for s in found]
        return [s for s in kept if s.points]


def _figures(rule: Rule, fetched: Fetched, at: datetime) -> list[Figure]:
    end = at.timestamp()
    window = _spans(rule.signal)[0]
    found = _compute(rule.signal, fetched.series(rule, at), end - window, end)
    matchers = [(label, values) for label, values in rule.selector.matchers if values]
    return [
        f
        for f in found
        if not math.isnan(f.value)
        # The store has no `job` label: Prometheus adds it to what it scrapes.
        and all(label == "job" or f.labels.get(label) in values for label, values in matchers)
    ]


def _compute(signal: Signal, series: list[SeriesPoints], start: float, end: float) -> list[Figure]:
    if isinstance(signal, Value):
        return [Figure(s.labels, s.points[-1][1]) for s in series if s.points]
    if isinstance(signal, Quantile):
        result = []
        for s in series:
            counts = bucket_increase([c for _, c in window_points(s.points, start, end)])
            if counts is not None:
                result.append(Figure(s.labels, histogram_quantile(signal.q, s.bounds, counts)))
        return result
    assert isinstance(signal, Rate | Share)
    rates: dict[str, dict[str, tuple[Mapping[str, str], float]]] = {}
    for s in series:
        rise = increase([v for _, v in window_points(s.points, start, end)])
        if rise is not None:
            rates.setdefault(s.name, {})[labels_text(s.labels)] = (s.labels, rise / (end - start))
    if isinstance(signal, Rate):
        return [Figure(labels, rate) for labels, rate in rates.get(signal.metric, {}).values()]
    part, other = rates.get(signal.part, {}), rates.get(signal.other, {})
    result = []
    # A counter with no series pairs as 0 with the other's, as `or 0 * other` does.
    for key in part.keys() | other.keys():
        labels = (part.get(key) or other[key])[0]
        p, o = part.get(key, (labels, 0.0))[1], other.get(key, (labels, 0.0))[1]
        result.append(Figure(labels, p / (p + o) if p + o else math.nan))
    return result


def headroom(rule: Rule, figure: Figure) -> float:
    """How far the figure's value is from violating the rule (negative past its bound)."""
    value = figure.value
    if isinstance(rule, Threshold):
        return rule.value - value if rule.op == ">" else value - rule.value
    assert isinstance(rule, Range)
    return min(value - rule.low, rule.high - value)


@dataclass
class _Active:
    since: datetime
    firing: bool
    labels: Mapping[str, str]


class Evaluator:
    """Rules evaluated again and again on one run: a violated series is pending from the
    first evaluation that sees it, firing once violated for the rule's `for`, and resolved
    (forgotten) at the first evaluation that does not see it violated."""

    def __init__(
        self,
        rules: Iterable[Rule],
        engine: Engine,
        run_id: str,
        firing: Mapping[tuple[str, str], datetime] | None = None,
    ) -> None:
        """`firing`: per (rule name, labels key), alerts known to have fired since then."""
        self.rules = tuple(rules)
        self.engine = engine
        self.run_id = run_id
        self._active = {key: _Active(since, True, {}) for key, since in (firing or {}).items()}

    def evaluate(self, at: datetime) -> tuple[list[AlertRow], list[AlertEvent]]:
        """Every rule's rows at time `at`, and the alerts that fired or resolved since the
        previous evaluation."""
        rows: list[AlertRow] = []
        events: list[AlertEvent] = []
        fetched = Fetched.of(self.rules, self.engine, self.run_id, at)
        for rule in self.rules:
            found = _figures(rule, fetched, at)
            violated = {labels_text(f.labels): f for f in found if rule.violated(f.value)}
            for gone_key in [k for k in self._active if k[0] == rule.name and k[1] not in violated]:
                gone = self._active.pop(gone_key)
                if gone.firing:
                    events.append(self._event(rule, "resolved", at, gone.labels, None))
            active_rows = []
            for key, figure in violated.items():
                state = self._active.setdefault((rule.name, key), _Active(at, False, {}))
                state.labels = figure.labels
                if not state.firing and (at - state.since).total_seconds() >= rule.for_seconds:
                    state.firing, state.since = True, at
                    events.append(self._event(rule, "firing", at, figure.labels, figure.value))
                active_rows.append(
                    AlertRow(
                        rule.name,
                        rule.severity,
                        "firing" if state.firing else "pending",
                        figure.value,
                        state.since,
                        figure.labels,
                    )
                )
            if not active_rows:
                nearest = min(found, key=lambda f: headroom(rule, f), default=None)
                value = nearest.value if nearest else None
                labels = nearest.labels if nearest else {}
                active_rows.append(AlertRow(rule.name, rule.severity, "ok", value, None, labels))
            rows.extend(active_rows)
        return rows, events

    def _event(
        self,
        rule: Rule,
        state: str,
        at: datetime,
        labels: Mapping[str, str],
        value: float | None,
    ) -> AlertEvent:
        shown = python_value(value, rule.signal.unit) if value is not None else "resolved"
        annotations = rule.annotations(shown, lambda name: labels.get(name, ""))
        return AlertEvent(
            at, self.run_id, rule.name, rule.severity, state, dict(labels), annotations
        )


def status_rows(
    engine: Engine, rules: Iterable[Rule], run_id: str | None = None, now: datetime | None = None
) -> list[AlertRow]:
    """Every rule's state on run `run_id` (default: the latest run): now while the run is
    running, else as of its last sample. Firing alerts keep the time their run's evaluator
    recorded; a violated series with no such record is pending from now (or firing, with
    `for` 0s)."""
    run_id = run_id or alerting.latest_run(engine)
    if run_id is None:
        return [AlertRow(rule.name, rule.severity, "ok", None, None) for rule in rules]
    run = find_run(engine, run_id)
    at = now or datetime.now(UTC)
    if run.status != "running":
        at = alerting.last_sample_time(engine, run_id) or at
    evaluator = Evaluator(rules, engine, run_id, alerting.firing_since(engine, run_id))
    return evaluator.evaluate(at)[0]
