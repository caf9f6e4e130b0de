"""The `[alerts]` settings: which series the rules watch, and each rule's overrides.

```toml
[alerts]
job = ["observe"]            # selectors: accepted values of job, run and model; [] = any
model = ["mixtral-8x7b"]
evaluation_interval_s = 15    # how often a monitored run evaluates the rules; 0: never

[alerts.rules.ObserveSemanticDrift]
value = 2                     # Threshold rules: value; Range rules: low and high
for = "2m"
severity = "warning"
```

`AlertsConfig.alert_rules()` is the default rules with these applied; a bad override is an
error naming the rule and the field, when the settings load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from observe.alerts.defaults import DEFAULT_RULES, RULES_BY_NAME
from observe.alerts.rules import RUNBOOK, Range, Rule, Threshold
from observe.alerts.signals import Selector
from observe.catalogue import COMMON_LABELS
from observe.errors import ObserveError
from observe.grafana_ids import PROMETHEUS_UID


@dataclass(frozen=True)
class RuleOverride:
    """What `observe.toml` may change in one rule; None leaves the default."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    # `for` in observe.toml.
    for_: str | None = None
    severity: str | None = None


@dataclass(frozen=True)
class AlertsConfig:
    # Accepted values of the `job` label Prometheus gives a scrape; empty: any job.
    job: tuple[str, ...] = ()
    # Accepted values of the `run` and `model` labels every series carries; empty: any.
    run: tuple[str, ...] = ()
    model: tuple[str, ...] = ()
    # Where the runbook (alerts/README.md) is served; each rule links to its own section.
    runbook_url: str = RUNBOOK
    # Uid of the Grafana Prometheus data source the Grafana alert rules query.
    grafana_datasource_uid: str = PROMETHEUS_UID
    # Seconds between evaluations of the rules on a monitored run's stored series, which
    # record alert events in the store; 0 evaluates none.
    evaluation_interval_s: float = 15.0
    # Per rule name, the fields to change.
    rules: Mapping[str, RuleOverride] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.evaluation_interval_s < 0:
            raise ObserveError(
                f"alerts evaluation_interval_s = {self.evaluation_interval_s} is negative: "
                "use a number of seconds, or 0 to evaluate no rules during runs"
            )
        unknown = sorted(set(self.rules) - set(RULES_BY_NAME))
        if unknown:
            raise ObserveError(
                f"[alerts.rules] names unknown rules {unknown}: the rules are "
                f"{', '.join(RULES_BY_NAME)} (`observe alerts list`)"
            )
        if not self.grafana_datasource_uid:
            raise ObserveError("alerts grafana_datasource_uid is empty: name the data source")
        self.alert_rules()  # every override checked now, not when a command first needs the rules

    @property
    def selector(self) -> Selector:
        labels = ("job", *COMMON_LABELS)
        return Selector(tuple((label, v) for label in labels if (v := tuple(getattr(self, label)))))

    def alert_rules(self) -> tuple[Rule, ...]:
        """The default rules, retargeted and overridden by these settings."""
        common: dict[str, Any] = {"selector": self.selector, "runbook_base": self.runbook_url}
        return tuple(
            dataclasses.replace(rule, **common, **_changes(rule, self.rules.get(rule.name)))
            for rule in DEFAULT_RULES
        )


def _changes(rule: Rule, override: RuleOverride | None) -> dict[str, Any]:
    if override is None:
        return {}
    changes = {
        f.name: getattr(override, f.name)
        for f in dataclasses.fields(override)
        if getattr(override, f.name) is not None
    }
    kind, fields = {
        Threshold: ("a threshold", ("value",)),
        Range: ("a range", ("low", "high")),
    }[type(rule)]
    misplaced = sorted(set(changes) & {"value", "low", "high"} - set(fields))
    if misplaced:
        raise ObserveError(
            f"[alerts.rules.{rule.name}] sets {', '.join(misplaced)}, but the rule is "
            f"{kind}: set {' and '.join(fields)}"
        )
    return changes
