"""The alert rule model: each field checked with an error naming the rule and the field,
bounds applied in Python as in PromQL, and `[alerts]` in observe.toml retargeting and
overriding the rules."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from observe.alerts.config import AlertsConfig, RuleOverride
from observe.alerts.defaults import (
    CACHE_MISS_RULE,
    DEFAULT_RULES,
    LATENCY_RULE,
    LOAD_IMBALANCE_RULE,
    ROUTING_ENTROPY_RULE,
    RULES_BY_NAME,
    SEMANTIC_DRIFT_RULE,
)
from observe.alerts.rules import Range, Severity, Threshold
from observe.alerts.signals import Quantile, Rate, Selector, Share, Value, parse_duration
from observe.alerts.text import humanize_duration, quantity
from observe.catalogue import (
    CACHE_HITS,
    DEAD_EXPERTS,
    EXPERT_TOKENS,
    INFERENCE_LATENCY,
    SEMANTIC_DRIFT_ALERT_WINDOWS,
    SEMANTIC_DRIFTED_WINDOWS,
)
from observe.errors import ObserveError
from observe.settings import load_settings


def test_the_defaults_are_those_the_issue_asks_for() -> None:
    # Two scored windows in a row over their calibrated thresholds, whatever they last.
    assert isinstance(SEMANTIC_DRIFT_RULE, Threshold)
    assert SEMANTIC_DRIFT_RULE.signal == Value(SEMANTIC_DRIFTED_WINDOWS.name)
    assert SEMANTIC_DRIFT_ALERT_WINDOWS == 2 and SEMANTIC_DRIFT_RULE.for_ == "0s"
    assert [SEMANTIC_DRIFT_RULE.violated(n) for n in (0, 1, 2, 3)] == [False, False, True, True]
    assert isinstance(CACHE_MISS_RULE, Range)
    assert (CACHE_MISS_RULE.low, CACHE_MISS_RULE.high) == (0.1, 0.25)
    assert isinstance(ROUTING_ENTROPY_RULE, Range)
    assert (ROUTING_ENTROPY_RULE.low, ROUTING_ENTROPY_RULE.high) == (0.65, 0.75)
    assert "layer" in ROUTING_ENTROPY_RULE.signal.labels  # one alert per layer
    dead = RULES_BY_NAME["ObserveDeadExperts"]
    assert isinstance(dead, Threshold) and (dead.value, dead.for_) == (0, "10m")
    stale = RULES_BY_NAME["ObserveKnowledgeStale"]
    assert isinstance(stale, Threshold) and stale.value == 30 * 86400
    assert stale.bound == "over 30d"
    assert len({rule.name for rule in DEFAULT_RULES}) == len(DEFAULT_RULES)


def test_expressions_read_the_catalogues_series_names() -> None:
    assert SEMANTIC_DRIFT_RULE.expr == "observe_drift_semantic_drifted_windows > 1"
    assert ROUTING_ENTROPY_RULE.expr == (
        "observe_moe_routing_entropy < 0.65 or observe_moe_routing_entropy > 0.75"
    )
    assert LATENCY_RULE.expr == (
        "histogram_quantile(0.95, rate(observe_inference_latency_seconds_bucket[5m])) > 1"
    )
    cache = CACHE_MISS_RULE.expr
    assert "rate(observe_inference_cache_misses_total[5m])" in cache
    assert "rate(observe_inference_cache_hits_total[5m])" in cache


@pytest.mark.parametrize(
    ("rule", "values", "violated"),
    [
        (LOAD_IMBALANCE_RULE, [1.9, 2.0, 2.1, math.nan], [False, False, True, False]),
        (
            CACHE_MISS_RULE,
            [0.05, 0.1, 0.2, 0.25, 0.3, math.nan],
            [True, False, False, False, True, False],
        ),
    ],
)
def test_violated_applies_the_bounds_to_plain_values(
    rule: Threshold | Range, values: list[float], violated: list[bool]
) -> None:
    assert [rule.violated(v) for v in values] == violated


# -- each field checked, naming the rule and the field ------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"name": "SemanticDrift"},
            "'SemanticDrift': name must be CamelCase and start with Observe",
        ),
        ({"name": "Observe_drift"}, "name must be CamelCase"),
        (
            {"signal": Value("observe_nope")},
            "ObserveSemanticDrift: metric 'observe_nope' is not in the catalogue",
        ),
        (
            {"signal": Value(CACHE_HITS.name)},
            "metric 'observe_inference_cache_hits' is a counter, and Value reads a gauge",
        ),
        ({"signal": Rate(DEAD_EXPERTS.name)}, "is a gauge, and Rate reads a counter"),
        (
            {"signal": Rate(EXPERT_TOKENS.name, "5 minutes")},
            "window = '5 minutes' is not a duration",
        ),
        ({"signal": Rate(EXPERT_TOKENS.name, "0s")}, "window = '0s' must be longer than 0s"),
        ({"signal": Share(CACHE_HITS.name, EXPERT_TOKENS.name)}, "carry different labels"),
        (
            {"signal": Quantile(INFERENCE_LATENCY.name, 1.5)},
            "quantile q = 1.5 must be in \\(0, 1\\)",
        ),
        ({"for_": "2 minutes"}, "ObserveSemanticDrift: for = '2 minutes' is not a duration"),
        ({"for_": ""}, "for = '' is not a duration"),
        (
            {"severity": "page"},
            "ObserveSemanticDrift: severity = 'page' is not one of critical, warning, info",
        ),
        ({"summary": "drift is $score"}, "summary has an unknown or broken placeholder"),
        ({"description": "costs 5$"}, "description has an unknown or broken placeholder"),
        ({"value": "high"}, "ObserveSemanticDrift: value = 'high' must be a number"),
        ({"value": math.inf}, "value = inf must be a number"),
    ],
)
def test_a_bad_rule_field_is_an_error_naming_rule_and_field(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ObserveError, match=message):
        dataclasses.replace(SEMANTIC_DRIFT_RULE, **changes)  # type: ignore[arg-type]


def test_a_threshold_takes_only_over_or_under() -> None:
    with pytest.raises(ObserveError, match="ObserveLoadImbalance: op = '>=' must be > or <"):
        dataclasses.replace(LOAD_IMBALANCE_RULE, op=">=")


@pytest.mark.parametrize(
    ("rule", "changes", "message"),
    [
        (
            CACHE_MISS_RULE,
            {"low": 0.3},
            "ObserveCacheMissRate: low = 0.3 must be below high = 0.25",
        ),
        (CACHE_MISS_RULE, {"low": 0.25}, "low = 0.25 must be below high = 0.25"),
        (CACHE_MISS_RULE, {"high": None}, "ObserveCacheMissRate: high = None must be a number"),
        (CACHE_MISS_RULE, {"low": 0, "high": 1}, "leave nothing to fire on"),
        (
            LATENCY_RULE,
            {"value": 12.0},
            "ObserveInferenceLatencyHigh: value = 12 leaves nothing to fire on",
        ),
    ],
)
def test_bounds_that_cannot_fire_are_errors(
    rule: Threshold | Range, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ObserveError, match=message):
        dataclasses.replace(rule, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rule", "changes", "message"),
    [
        (
            CACHE_MISS_RULE,
            {"low": -2.0, "high": -1.0},
            "ObserveCacheMissRate: low = -2 and high = -1 leave nothing quiet",
        ),
        (CACHE_MISS_RULE, {"low": 1.5, "high": 2.0}, "leave nothing quiet"),
        # A p95 is never 0 where there are requests: q of the first bucket at least.
        (
            LATENCY_RULE,
            {"value": 0.0},
            "ObserveInferenceLatencyHigh: value = 0 leaves nothing quiet",
        ),
    ],
)
def test_bounds_that_would_always_fire_are_errors(
    rule: Threshold | Range, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ObserveError, match=message):
        dataclasses.replace(rule, **changes)  # type: ignore[arg-type]


def test_runbooks_name_only_rules_that_exist() -> None:
    for rule in DEFAULT_RULES:
        book = rule.runbook
        text = " ".join((book.meaning, *book.causes, *book.checks, book.fix))
        named = set(re.findall(r"\bObserve[A-Z]\w+", text))
        assert named <= set(RULES_BY_NAME), (rule.name, named - set(RULES_BY_NAME))


# -- text: values as Prometheus prints them ------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4875, "487.5ms"),
        (4.875, "4.875s"),
        (75, "1m 15s"),
        (3888000, "45d 0h 0m 0s"),
        (7200.5, "2h 0m 0s"),
        (-90, "-1m 30s"),
    ],
)
def test_humanize_duration_matches_prometheus(seconds: float, text: str) -> None:
    assert humanize_duration(seconds) == text


def test_bounds_read_as_people_write_them() -> None:
    assert [quantity(v, "s") for v in (2592000, 3600, 90, 1, 0.25)] == [
        "30d", "1h", "90s", "1s", "250ms"
    ]  # fmt: skip
    assert quantity(0.3, "1") == "0.3" and quantity(2592000, "1") == "2592000"
    assert parse_duration("1h30m") == 5400 and parse_duration("90") is None


# -- [alerts] in observe.toml --------------------------------------------------------------


def _load(tmp_path: Path, text: str) -> AlertsConfig:
    config = tmp_path / "observe.toml"
    config.write_text(text)
    return load_settings(config, environ={}).alerts


def test_observe_toml_overrides_a_rules_bound_for_and_severity(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        '[alerts.rules.ObserveSemanticDrift]\nvalue = 2\nfor = "2m"\nseverity = "warning"\n'
        "[alerts.rules.ObserveCacheMissRate]\nlow = 0.05\n",
    )
    rules = {rule.name: rule for rule in config.alert_rules()}
    drift = rules["ObserveSemanticDrift"]
    assert drift.expr == "observe_drift_semantic_drifted_windows > 2"
    assert (drift.for_, drift.severity) == ("2m", Severity.WARNING)
    assert drift.bound == "over 2"
    assert drift.violated(2) is False and drift.violated(3) is True
    cache = rules["ObserveCacheMissRate"]
    assert isinstance(cache, Range) and (cache.low, cache.high) == (0.05, 0.25)
    assert rules["ObserveRoutingDrift"] == dataclasses.replace(RULES_BY_NAME["ObserveRoutingDrift"])


def test_selectors_retarget_every_expression(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        '[alerts]\njob = ["observe", "otel-collector"]\nmodel = ["mix\\"tral"]\n'
        'runbook_url = "https://runbooks.example/observe"\n',
    )
    selector = '{job=~"observe|otel\\\\-collector",model="mix\\"tral"}'
    for rule in config.alert_rules():
        assert selector in rule.expr, rule.expr
        assert rule.runbook_url == f"https://runbooks.example/observe#{rule.name.lower()}"
    assert Selector().promql() == ""


def test_the_evaluation_interval_comes_from_the_environment_and_0_turns_it_off() -> None:
    assert load_settings(environ={}).alerts.evaluation_interval_s == 15.0
    settings = load_settings(environ={"OBSERVE_ALERTS_EVALUATION_INTERVAL_S": "0"})
    assert settings.alerts.evaluation_interval_s == 0.0


def test_selectors_come_from_the_environment_too() -> None:
    settings = load_settings(environ={"OBSERVE_ALERTS_RUN": "a,b"})
    assert settings.alerts.run == ("a", "b")
    assert all('run=~"a|b"' in rule.expr for rule in settings.alerts.alert_rules())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[alerts.rules.ObserveNope]\nfor = '1m'\n",
            "\\[alerts.rules\\] names unknown rules \\['ObserveNope'\\]",
        ),
        (
            "[alerts.rules.ObserveSemanticDrift]\nfor = '2 min'\n",
            "ObserveSemanticDrift: for = '2 min' is not a duration",
        ),
        (
            "[alerts.rules.ObserveSemanticDrift]\nfor = 120\n",
            "for in \\[alerts.rules.ObserveSemanticDrift\\] .* = 120 is not valid",
        ),
        (
            "[alerts.rules.ObserveSemanticDrift]\nlow = 0.1\n",
            "sets low, but the rule is a threshold: set value",
        ),
        (
            "[alerts.rules.ObserveRoutingEntropy]\nvalue = 0.7\n",
            "sets value, but the rule is a range: set low and high",
        ),
        (
            "[alerts.rules.ObserveRoutingEntropy]\nhigh = 0.6\n",
            "ObserveRoutingEntropy: low = 0.65 must be below high = 0.6",
        ),
        (
            "[alerts]\nevaluation_interval_s = -1\n",
            "evaluation_interval_s = -1.0 is negative: .* or 0 to evaluate no rules",
        ),
        (
            "[alerts.rules.ObserveDeadExperts]\nseverity = 'page'\n",
            "ObserveDeadExperts: severity = 'page'",
        ),
        (
            "[alerts.rules.ObserveDeadExperts]\npending = '1m'\n",
            "unknown settings \\['pending'\\] in "
            "\\[alerts.rules.ObserveDeadExperts\\].*known are value, low, high, for, severity",
        ),
        (
            "[alerts.rules]\nObserveDeadExperts = 3\n",
            "ObserveDeadExperts in \\[alerts.rules\\] .* must be a table",
        ),
        ("[alerts]\nrules = 3\n", "rules in \\[alerts\\] .* must be a table"),
        ("[alerts]\njob = ['']\n", "alert selector job = \\[''\\]"),
    ],
)
def test_bad_alert_settings_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ObserveError, match=message):
        _load(tmp_path, text)


def test_overrides_given_in_code_are_checked_too() -> None:
    with pytest.raises(ObserveError, match="ObserveLoadImbalance: for = 'soon'"):
        AlertsConfig(rules={"ObserveLoadImbalance": RuleOverride(for_="soon")})


def test_the_selector_labels_are_the_catalogues_common_labels() -> None:
    from observe.catalogue import COMMON_LABELS

    fields = [field.name for field in dataclasses.fields(AlertsConfig)]
    assert fields[: 1 + len(COMMON_LABELS)] == ["job", *COMMON_LABELS]
    assert SEMANTIC_DRIFTED_WINDOWS.all_labels[: len(COMMON_LABELS)] == COMMON_LABELS
