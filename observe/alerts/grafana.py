"""Grafana alert rules, as a provisioning file (`provisioning/alerting/*.yml`).

Each rule queries its signal from the Prometheus data source (A), keeps the last value per
series (B) and compares it with the rule's bounds (C, the condition). The rules are built
with grafana-foundation-sdk's alerting builders, which check uids and titles and spell the
queries and expressions as Grafana stores them; the SDK writes the API's shape, so the group
around them (org, folder, interval as text) is written here in the provisioning file's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from grafana_foundation_sdk.builders import alerting, expr, prometheus
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.alerting import Query, RelativeTimeRange

from observe.alerts.prometheus import GROUP, HEADER
from observe.alerts.rules import Range, Rule, Threshold
from observe.alerts.text import go_label, go_value
from observe.alerts.yamlfile import dump

FOLDER = "observe"
INTERVAL = "1m"
# How far back the query looks: the longest window of any signal is well inside it.
LOOKBACK_S = 600
# The API's fields that the provisioning file sets on the group instead.
_GROUP_FIELDS = ("folderUID", "orgID", "ruleGroup")
# The provisioning documentation's order, for a reader; the SDK's is alphabetical-ish.
_ORDER = ("uid", "title", "condition", "data", "for", "noDataState", "execErrState", "labels")


def uid(rule: Rule) -> str:
    """A stable uid: `observe-semantic-drift` for ObserveSemanticDrift."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", rule.name).lower()


def _prometheus(ref: str, promql: str, datasource_uid: str) -> alerting.Query:
    query = prometheus.Dataquery().ref_id(ref).expr(promql).instant()
    return (
        alerting.Query(ref)
        .datasource_uid(datasource_uid)
        .relative_time_range(RelativeTimeRange(from_val=LOOKBACK_S, to=0))
        .model(query)
    )


def _last(ref: str, of: str) -> alerting.Query:
    return (
        alerting.Query(ref)
        .datasource_uid("__expr__")
        .model(expr.TypeReduce().ref_id(ref).expression(of).reducer("last"))
    )


def _queries(rule: Rule, datasource_uid: str) -> list[Builder[Query]]:
    signal = [_prometheus("A", rule.signal.promql(rule.selector), datasource_uid), _last("B", "A")]
    threshold = alerting.Query("C").datasource_uid("__expr__").model(_condition(rule))
    return [*signal, threshold]


def _condition(rule: Rule) -> expr.TypeThreshold:
    kind: Literal["gt", "lt", "outside_range"]
    if isinstance(rule, Threshold):
        kind, params = ("gt" if rule.op == ">" else "lt"), [rule.value]
    else:
        assert isinstance(rule, Range)
        kind, params = "outside_range", [rule.low, rule.high]
    evaluator = expr.ExprTypeThresholdConditionsEvaluator().type(kind).params(params)
    condition = expr.ExprTypeThresholdConditions().evaluator(evaluator)
    return expr.TypeThreshold().ref_id("C").expression("B").conditions([condition])


def grafana_rule(rule: Rule, datasource_uid: str) -> dict[str, Any]:
    built = (
        alerting.Rule(rule.name)
        .uid(uid(rule))
        .condition("C")
        .queries(_queries(rule, datasource_uid))
        .for_val(rule.for_)
        .no_data_state("OK")
        .exec_err_state("Error")
        .labels({"severity": str(rule.severity)})
        .annotations(rule.annotations(go_value("$values.B.Value", rule.signal.unit), go_label))
        .build()
    )
    data: dict[str, Any] = json.loads(JSONEncoder().encode(built))
    for field in _GROUP_FIELDS:
        data.pop(field, None)
    ordered = {key: data.pop(key) for key in _ORDER if key in data}
    return {**ordered, **data}


def render_grafana_alerting(rules: Sequence[Rule], datasource_uid: str) -> str:
    group = {
        "orgId": 1,
        "name": GROUP,
        "folder": FOLDER,
        "interval": INTERVAL,
        "rules": [grafana_rule(rule, datasource_uid) for rule in rules],
    }
    return dump({"apiVersion": 1, "groups": [group]}, HEADER)
