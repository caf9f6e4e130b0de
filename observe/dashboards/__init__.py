"""observe's Grafana dashboards: which there are, their files, and their Prometheus queries.

Each dashboard is a module here built with grafana-foundation-sdk from the metric
catalogue; `make generate` writes them to `dashboards/*.json` with their provisioning
(`observe.dashboards.provisioning`). `prometheus_queries()` lists every Prometheus
expression they hold, template variables filled in, for tests that run them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from grafana_foundation_sdk.models.dashboard import Dashboard

from observe.dashboards import experts, history, oncall, training
from observe.dashboards.layout import render
from observe.dashboards.panels import LAYER, MODEL, PROMETHEUS, RATE_INTERVAL, RUN

# File name (under dashboards/) → the dashboard.
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "oncall.json": oncall.dashboard,
    "experts.json": experts.dashboard,
    "training.json": training.dashboard,
    "history.json": history.dashboard,
}


def dashboard_files() -> dict[str, Callable[[], str]]:
    """Each dashboard's path in the repository → its JSON."""
    return {f"dashboards/{name}": partial(_json, build) for name, build in DASHBOARDS.items()}


def _json(build: Callable[[], Dashboard]) -> str:
    return render(build())


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # the dashboard's uid
    panel: str  # the panel's title, as written (variables not filled in)
    ref_id: str
    expr: str


# What Grafana substitutes, for running the queries without it: every model, run and layer,
# and a rate interval of four default (15 s) scrape intervals.
SUBSTITUTIONS = {MODEL: ".*", RUN: ".*", LAYER: ".*", RATE_INTERVAL.lstrip("$"): "1m"}
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def prometheus_queries(values: Mapping[str, str] | None = None) -> list[PanelQuery]:
    """Every Prometheus target of every dashboard, read from its JSON, with `$variables`
    replaced by `values` (by name, without `$`) over `SUBSTITUTIONS`; an expression using
    a variable neither names raises KeyError."""
    substitutions = {**SUBSTITUTIONS, **(values or {})}
    queries = []
    for build in DASHBOARDS.values():
        board = json.loads(render(build()))
        for panel in board["panels"]:
            for target in panel.get("targets", ()):
                if target["datasource"]["type"] != PROMETHEUS.type:
                    continue
                expr = _VARIABLE.sub(
                    lambda m: substitutions[m.group(1) or m.group(2)], target["expr"]
                )
                queries.append(PanelQuery(board["uid"], panel["title"], target["refId"], expr))
    return queries
