"""promtool unit tests of the rule file: per rule, series that fire it and series that do
not, made from its own bounds.

Each probe is a value of the rule's signal (just over and under a threshold; under, inside
and over a range; and 0), turned into input series that give exactly that value: a gauge
holding it, a counter rising at it, two counters whose rates give that share, or a
histogram whose observations all fall in the bucket that interpolates to it. A probe is
expected to fire when `rule.violated(value)` says so, so the tests prove that the PromQL
Prometheus runs and the bounds Python applies agree. Every probe is its own
`instance`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from observe.alerts.rules import Range, Rule, Threshold
from observe.alerts.signals import (
    Quantile,
    Rate,
    Share,
    Signal,
    Value,
    parse_duration,
    promql_string,
)
from observe.alerts.text import number, python_value
from observe.alerts.yamlfile import dump
from observe.catalogue import BY_NAME
from observe.errors import ObserveError

STEP_S = 60
# Share probes: part and other increments per step, so a share is exact to 1/1000.
SHARE_TOTAL = 1000


@dataclass(frozen=True)
class Probe:
    value: float
    # Labels of the signal's series (without __name__ and le): the alert's, but severity.
    labels: dict[str, str]
    # (series, values) in promtool's notation.
    series: tuple[tuple[str, str], ...]


def probes(rule: Rule, steps: int) -> list[Probe]:
    """The rule's probes, each as input series of `steps` + 1 samples."""
    values = _realised(rule, _candidates(rule))
    if {rule.violated(value) for value in values} != {True, False}:
        # A bound far outside the values the signal takes leaves the candidates outside
        # too: points inside them, at and on either side of each bound.
        values |= _realised(rule, _inside(rule))
    made = []
    for value in sorted(values):
        labels = _labels(rule, f"probe-{number(value)}")
        made.append(Probe(value, labels, _series(rule.signal, value, labels, steps)))
    for verdict, words in ((True, "fires"), (False, "stays quiet")):
        if not any(rule.violated(p.value) is verdict for p in made):
            tried = ", ".join(number(p.value) for p in made)
            raise ObserveError(
                f"alert rule {rule.name}: no test series {words} (values tried: {tried}): "
                "move its bounds inside the values its signal takes"
            )
    return made


def _realised(rule: Rule, candidates: list[float]) -> set[float]:
    values = {_realise(rule.signal, _tidy(value)) for value in candidates}
    return {value for value in values if value is not None}


def _tidy(value: float) -> float:
    """`value` without the float error of the arithmetic that made it (0.45, not
    0.44999999999999996): test files and probe names as a person writes them."""
    return float(f"{value:.12g}")


def _candidates(rule: Rule) -> list[float]:
    if isinstance(rule, Threshold):
        step = abs(rule.value) / 2 or 1.0
        bounds, values = [rule.value], [rule.value - step, rule.value + step, 0.0]
        if rule.signal.unit.startswith("{"):
            # A count ("{window}", "{expert}") takes whole numbers: the bound itself, which
            # must not fire, and the counts either side of it.
            values = [rule.value - 1, rule.value, rule.value + 1, 0.0]
    else:
        assert isinstance(rule, Range)
        half = (rule.high - rule.low) / 2
        bounds, values = [rule.low], [rule.low - half, rule.low + half, rule.high + half, 0.0]
    # Bounds at or over 0 are on figures that are never negative (counts, shares, scores).
    return [value for value in values if min(bounds) < 0 or value >= 0]


def _inside(rule: Rule) -> list[float]:
    """The rule's bounds and the finite ends of its signal's span, and the midpoints
    between them."""
    if isinstance(rule, Threshold):
        bounds = [rule.value]
    else:
        assert isinstance(rule, Range)
        bounds = [rule.low, rule.high]
    ends = [end for end in rule.signal.span if math.isfinite(end)]
    edges = sorted({*bounds, *ends})
    return [*edges, *((a + b) / 2 for a, b in itertools.pairwise(edges))]


def _realise(signal: Signal, value: float) -> float | None:
    """The value input series can give nearest `value`, or None outside the signal's span."""
    low, high = signal.span
    if isinstance(signal, Quantile):
        low = 0.0  # any value from 0 names a bucket, whose quantile is the nearest there is
    if not low <= value <= high:
        return None
    if isinstance(signal, Share):
        return round(value * SHARE_TOTAL) / SHARE_TOTAL
    if isinstance(signal, Quantile):
        start, end = _bucket(signal, value)
        return _quantile(signal.q, start, end)
    return value


def _bucket(signal: Quantile, value: float) -> tuple[float, float]:
    """The bucket (start, end] holding `value`; end is +Inf past the largest bound."""
    start = 0.0
    for end in signal.buckets:
        if value <= end:
            return start, end
        start = end
    return start, math.inf


def _quantile(q: float, start: float, end: float) -> float:
    # histogram_quantile with every observation in one bucket, in Prometheus's arithmetic:
    # a rate of 1 per second, rank q·1, interpolated linearly; the +Inf bucket answers its
    # lower bound.
    if math.isinf(end):
        return start
    count = 1.0
    return start + (end - start) * ((q * count) / count)


def _labels(rule: Rule, instance: str) -> dict[str, str]:
    chosen = rule.selector.first_values()
    labels = {"job": chosen.get("job", "observe"), "instance": instance}
    labels.update({label: chosen.get(label, "0") for label in rule.signal.labels})
    return labels


def _series(
    signal: Signal, value: float, labels: dict[str, str], steps: int
) -> tuple[tuple[str, str], ...]:
    def counter(per_step: float) -> str:
        return f"0+{number(per_step)}x{steps}" if per_step else f"0x{steps}"

    if isinstance(signal, Value):
        return ((_name(signal.metric, labels), f"{number(value)}x{steps}"),)
    if isinstance(signal, Rate):
        return ((_name(signal.metric, labels), counter(value * STEP_S)),)
    if isinstance(signal, Share):
        part = round(value * SHARE_TOTAL)
        # A counter never incremented has no series at all (as OpenTelemetry exports it).
        rising = ((signal.part, part), (signal.other, SHARE_TOTAL - part))
        return tuple((_name(metric, labels), counter(n)) for metric, n in rising if n)
    assert isinstance(signal, Quantile)
    _, end = _bucket(signal, value)
    # Every observation in the bucket ending at `end`, one per second: each bucket from
    # `end` up counts them all, those below none.
    return tuple(
        (
            _name(signal.metric, {**labels, "le": _le(bound)}, "_bucket"),
            counter(STEP_S * (bound >= end)),
        )
        for bound in (*signal.buckets, math.inf)
    )


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else number(bound)


def _name(metric: str, labels: dict[str, str], suffix: str = "") -> str:
    text = ",".join(f"{k}={promql_string(v)}" for k, v in labels.items())
    return f"{BY_NAME[metric].prometheus_name}{suffix}{{{text}}}"


def _lead_s(signal: Signal) -> float:
    """Seconds until the signal's value is exact: a rate's window must be full of samples."""
    if isinstance(signal, Rate | Share | Quantile):
        return parse_duration(signal.window) or 0.0
    return 0.0


def _at(seconds: float) -> str:
    return f"{int(seconds) // 60}m" if seconds % 60 == 0 else f"{int(seconds)}s"


def render_test_file(rule: Rule, rule_file: str) -> str:
    """promtool's test file for `rule`, reading the rule file at `rule_file` (relative)."""
    # Firing needs the value exact (a full window) and held for `for`; one step more.
    fire_at = math.ceil((rule.for_seconds + _lead_s(rule.signal)) / STEP_S) * STEP_S + STEP_S
    made = probes(rule, steps=int(fire_at // STEP_S) + 1)
    checks: list[dict[str, Any]] = []
    if rule.for_seconds > 0:
        # The last evaluation before `for` has passed: violated, maybe, but only pending.
        before = math.ceil(rule.for_seconds / STEP_S) * STEP_S - STEP_S
        checks.append({"eval_time": _at(before), "alertname": rule.name, "exp_alerts": []})
    firing = [
        {
            "exp_labels": {**p.labels, "severity": str(rule.severity)},
            "exp_annotations": rule.annotations(
                python_value(p.value, rule.signal.unit), p.labels.__getitem__
            ),
        }
        for p in made
        if rule.violated(p.value)
    ]
    checks.append({"eval_time": _at(fire_at), "alertname": rule.name, "exp_alerts": firing})
    test = {
        "interval": _at(STEP_S),
        "input_series": [{"series": s, "values": v} for p in made for s, v in p.series],
        "alert_rule_test": checks,
    }
    document: dict[str, Any] = {
        "rule_files": [rule_file],
        "evaluation_interval": _at(STEP_S),
        "tests": [test],
    }
    header = (
        f"promtool tests of {rule.name}: {len(firing)} of {len(made)} probes fire. "
        "Generated by `make generate`; do not edit by hand."
    )
    return dump(document, header)
