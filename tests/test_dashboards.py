"""The generated dashboards, read as Grafana would: through the SDK's models and their JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.cog.runtime import register_dataquery_variant
from grafana_foundation_sdk.models.dashboard import Dashboard
from grafana_foundation_sdk.models.prometheus import Dataquery as PrometheusQuery
from prometheus_server import Prometheus, StartPrometheus
from sqlalchemy import insert

from observe.catalogue import (
    CACHE_MISS_RATE_BAND,
    CATALOGUE,
    LATENCY_P95_ALERT_S,
    ROUTING_DRIFT_ALERT,
    ROUTING_ENTROPY_BAND,
    SEMANTIC_DRIFT_ALERT,
    SERVER_COMPLETION_TOKENS,
    SERVER_PROMPT_TOKENS,
    SERVER_REQUEST_LATENCY,
    SERVER_REQUESTS,
    SERVER_TIME_TO_FIRST_TOKEN,
    STATUS_CODE,
    Kind,
)
from observe.dashboards import DASHBOARDS, prometheus_queries
from observe.dashboards.layout import render
from observe.dashboards.panels import PROMETHEUS, STORE, selector
from observe.dashboards.provisioning import provisioning_files
from observe.dashboards.sql import SQLQuery, variant_config
from observe.dashboards.units import grafana_unit
from observe.generate import ROOT
from observe.store.schema import ALERT_EVENTS, DRIFT_RESULTS
from observe.store.writer import Store

BY_PROMETHEUS_NAME = {m.prometheus_name: m for m in CATALOGUE}
# Histograms are queried through their `_bucket`, `_sum` and `_count` series.
SERIES = {
    **BY_PROMETHEUS_NAME,
    **{
        f"{m.prometheus_name}_{suffix}": m
        for m in CATALOGUE
        if m.kind is Kind.HISTOGRAM
        for suffix in ("bucket", "sum", "count")
    },
}
# Prometheus's own series of its alerts.
PROMETHEUS_SERIES = {"ALERTS"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}


def boards() -> dict[str, dict[str, Any]]:
    return {name: json.loads(render(build())) for name, build in DASHBOARDS.items()}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' collapsed panels included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", ())


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects: what is left once strings, label
    matchers, ranges, grouping clauses, function calls and keywords are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    words = re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)\b(?!\s*\()", expr)
    return set(words) - PROMQL_KEYWORDS


def prometheus_panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, board in boards().items():
        for panel in panels(board):
            if panel.get("datasource", {}).get("type") == PROMETHEUS.type:
                yield name, panel


def test_the_metric_name_reader_finds_what_an_expression_selects() -> None:
    expr = (
        'histogram_quantile(0.5, sum by (le, model) (rate(a_bucket{run=~"$run"}[1m]))) '
        "/ ignoring (expert) group_left b or vector(0) and on (x) c_total offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c_total"}


def test_every_dashboard_loads_back_through_the_sdk_models() -> None:
    register_default_plugins()
    register_dataquery_variant(variant_config())
    for name, data in boards().items():
        loaded = Dashboard.from_json(data)
        assert json.loads(render(loaded)) == data, name
        targets = [t for p in loaded.panels or [] for t in getattr(p, "targets", None) or []]
        assert targets, name
        assert all(isinstance(t, PrometheusQuery | SQLQuery) for t in targets), name


def test_uids_are_unique_and_stable() -> None:
    uids = {name: board["uid"] for name, board in boards().items()}
    assert uids == {
        "oncall.json": "observe-oncall",
        "experts.json": "observe-experts",
        "training.json": "observe-training",
        "history.json": "observe-history",
    }


def test_generation_is_deterministic_across_processes() -> None:
    """Another interpreter, its string hashing seeded differently, writes the same bytes."""
    script = (
        "import sys; from observe.dashboards import DASHBOARDS; "
        "from observe.dashboards.layout import render; "
        "sys.stdout.write(''.join(render(build()) for build in DASHBOARDS.values()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "1"}
    other = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert other.stdout == "".join(render(build()) for build in DASHBOARDS.values())


def test_panel_ids_are_unique_and_every_target_has_a_ref_id() -> None:
    for name, board in boards().items():
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), name
        for panel in panels(board):
            refs = [t.get("refId") for t in panel.get("targets", ())]
            assert all(refs) and len(refs) == len(set(refs)), (name, panel["title"])


def test_no_two_panels_overlap_and_all_fit_the_grid() -> None:
    for name, board in boards().items():
        boxes = [(p["title"], p["gridPos"]) for p in panels(board)]
        for title, box in boxes:
            assert box["x"] >= 0 and box["x"] + box["w"] <= 24, (name, title)
        for (a, p), (b, q) in combinations(boxes, 2):
            apart = (
                p["x"] + p["w"] <= q["x"]
                or q["x"] + q["w"] <= p["x"]
                or p["y"] + p["h"] <= q["y"]
                or q["y"] + q["h"] <= p["y"]
            )
            assert apart, (name, a, b)


def test_every_prometheus_expression_selects_only_catalogue_series() -> None:
    queries = prometheus_queries()
    assert len(queries) >= 20
    for query in queries:
        names = metric_names(query.expr)
        assert names, query
        assert names <= SERIES.keys() | PROMETHEUS_SERIES, query


def test_variables_select_catalogue_series_and_every_used_variable_is_defined() -> None:
    for name, board in boards().items():
        variables = board["templating"]["list"]
        defined = {v["name"] for v in variables}
        for variable in variables:
            if variable["type"] == "query" and variable["datasource"]["type"] == PROMETHEUS.type:
                series = re.fullmatch(r"label_values\((\w+).*, (\w+)\)", variable["query"])
                assert series and series.group(1) in SERIES, variable["query"]
                assert series.group(2) in SERIES[series.group(1)].all_labels
        for panel in panels(board):
            for target in panel.get("targets", ()):
                text = target.get("expr") or target.get("rawSql")
                used = set(re.findall(r"\$\{?(\w+)", text)) - {"__rate_interval", "__timeFilter"}
                assert used <= defined, (name, panel["title"], used - defined)


def test_every_range_is_the_rate_interval() -> None:
    for query in prometheus_queries({"__rate_interval": "$__rate_interval"}):
        ranges = re.findall(r"\[([^\]]*)\]", query.expr)
        assert all(r == "$__rate_interval" for r in ranges), query
        assert ("rate(" in query.expr) == bool(ranges), query


def test_units_come_from_the_catalogue() -> None:
    checked = 0
    for name, panel in prometheus_panels():
        exprs = [t["expr"] for t in panel["targets"]]
        metrics = {SERIES[n] for e in exprs for n in metric_names(e) if n in SERIES}
        if not metrics:
            continue  # Prometheus's ALERTS: a count of alerts, no catalogue unit
        unit = panel["fieldConfig"]["defaults"]["unit"]
        units = {m.unit for m in metrics}
        assert len(units) == 1, (name, panel["title"], units)
        (ucum,) = units
        if any(" / " in e for e in exprs):
            # A part over its whole, both counted in the same unit.
            assert unit == grafana_unit("1", fraction=True), (name, panel["title"])
        else:
            fractions = {grafana_unit(ucum, fraction=True)} if ucum == "1" else set()
            assert unit in {grafana_unit(ucum)} | fractions, (name, panel["title"], unit)
        checked += 1
    assert checked >= 15


def test_thresholds_and_bands_come_from_the_catalogue() -> None:
    def steps(board: str, title: str) -> list[float | None]:
        (panel,) = (p for p in panels(boards()[board]) if p["title"] == title)
        return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]

    assert steps("oncall.json", "Semantic drift") == [None, SEMANTIC_DRIFT_ALERT]
    assert steps("oncall.json", "Routing drift") == [None, ROUTING_DRIFT_ALERT]
    assert steps("oncall.json", "Inference latency") == [None, LATENCY_P95_ALERT_S]
    assert steps("history.json", "Drift scores") == [None, SEMANTIC_DRIFT_ALERT]
    assert steps("oncall.json", "Cache miss rate") == [None, *CACHE_MISS_RATE_BAND]
    assert steps("oncall.json", "Routing entropy") == [None, *ROUTING_ENTROPY_BAND]


def test_each_dashboard_reads_one_datasource_through_its_variable() -> None:
    for name, board in boards().items():
        (variable,) = (v for v in board["templating"]["list"] if v["type"] == "datasource")
        kinds = {p["datasource"]["type"] for p in panels(board) if "datasource" in p}
        assert kinds == {variable["query"]}, name
        for panel in panels(board):
            for target in panel.get("targets", ()):
                assert target["datasource"] == {"type": variable["query"], "uid": "${datasource}"}


def test_provisioning_parses_and_points_at_the_generated_files() -> None:
    files = {path: yaml.safe_load(render()) for path, render in provisioning_files().items()}
    (providers,) = (f["providers"] for f in files.values() if "providers" in f)
    (provider,) = providers
    # Relative to grafana-server's working directory: the repository root.
    folder = Path(ROOT / provider["options"]["path"])
    assert {p.name for p in folder.glob("*.json")} == set(DASHBOARDS)
    (datasources,) = (f["datasources"] for f in files.values() if "datasources" in f)
    provisioned = {d["uid"]: d for d in datasources}
    for source in (PROMETHEUS, STORE):
        assert provisioned[source.uid]["type"] == source.type
        assert provisioned[source.uid]["name"] == source.name
    # Each dashboard's datasource variable starts on a provisioned datasource.
    for board in boards().values():
        (variable,) = (v for v in board["templating"]["list"] if v["type"] == "datasource")
        assert provisioned[variable["current"]["value"]]["type"] == variable["query"]


def test_the_oncall_dashboard_shows_every_figure_of_the_served_model() -> None:
    shown = {
        SERIES[name]
        for query in prometheus_queries()
        if query.dashboard == "observe-oncall"
        for name in metric_names(query.expr)
        if name in SERIES
    }
    assert shown >= {
        SERVER_REQUESTS,
        SERVER_REQUEST_LATENCY,
        SERVER_TIME_TO_FIRST_TOKEN,
        SERVER_PROMPT_TOKENS,
        SERVER_COMPLETION_TOKENS,
    }


def test_a_panel_filtering_on_a_label_its_metric_lacks_is_an_error() -> None:
    assert 'status_code=~"5.."' in selector(SERVER_REQUESTS, matching={STATUS_CODE: "5.."})
    with pytest.raises(ValueError, match=r"observe_server_prompt_tokens has no label \['status"):
        selector(SERVER_PROMPT_TOKENS, matching={STATUS_CODE: "5.."})


def test_every_catalogue_unit_has_a_grafana_unit() -> None:
    assert {m.unit: grafana_unit(m.unit) for m in CATALOGUE} == {
        "s": "s",
        "1": "none",
        "{token}": "short",
        "{expert}": "short",
        "{step}": "short",
        "{token}/s": "short",
        "{request}": "short",
        "{window}": "short",
        "{export}": "short",
        "{sample}": "short",
    }
    assert grafana_unit("1", fraction=True) == "percentunit"


def test_an_unknown_unit_or_a_dimensioned_fraction_is_an_error() -> None:
    with pytest.raises(ValueError, match="no Grafana unit for UCUM 'By'"):
        grafana_unit("By")
    with pytest.raises(ValueError, match="dimensionless"):
        grafana_unit("s", fraction=True)


# -- against a real Prometheus and a real store ---------------------------------------------


def post_query(server: Prometheus, expr: str) -> tuple[int, dict[str, Any]]:
    """POSTs an instant query as Grafana does; a parse error is a 400 with its message."""
    data = urllib.parse.urlencode({"query": expr}).encode()
    try:
        with urllib.request.urlopen(f"{server.url}/api/v1/query", data, timeout=10) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_every_prometheus_query_and_variable_is_accepted_by_prometheus(
    prometheus: StartPrometheus,
) -> None:
    with prometheus([]) as server:
        # A query Prometheus cannot parse is told apart.
        status, body = post_query(server, "rate(observe_monitor_steps_total[1m]")
        assert (status, body["errorType"]) == (400, "bad_data")
        for query in prometheus_queries():
            status, body = post_query(server, query.expr)
            assert (status, body["status"]) == (200, "success"), (query, body)
        # `label_values(selector, label)` is Grafana's: it asks Prometheus for the label's
        # values among the series `selector` matches.
        checked = 0
        for board in boards().values():
            for variable in board["templating"]["list"]:
                if variable["type"] != "query" or variable["datasource"]["type"] != "prometheus":
                    continue
                selector, label = re.fullmatch(
                    r"label_values\((.+), (\w+)\)", variable["query"]
                ).groups()
                selector = re.sub(r"\$(\w+)", ".*", selector)
                params = urllib.parse.urlencode({"match[]": selector})
                url = f"{server.url}/api/v1/label/{label}/values?{params}"
                with urllib.request.urlopen(url, timeout=10) as reply:
                    assert json.load(reply)["status"] == "success", variable["query"]
                checked += 1
        # Model, run and layer on each of the three Prometheus dashboards.
        assert checked == 9


T0 = datetime(2025, 1, 1, 12, tzinfo=UTC)
# As Grafana expands them for a time range around T0 and one chosen model, run and layer;
# multi-value variables come quoted, as Grafana quotes them for SQL.
SQL_MACROS = {
    r"\$__timeFilter\((\w+)\)": r"\1 BETWEEN '2025-01-01T11:00:00Z' AND '2025-01-01T13:00:00Z'",
    r"\$model\b": "'tiny'",
    r"\$run\b": "'run-1'",
    r"\$layer\b": "'0'",
}


def expand(raw_sql: str) -> str:
    for macro, value in SQL_MACROS.items():
        raw_sql = re.sub(macro, value, raw_sql)
    assert "$" not in raw_sql, raw_sql
    return raw_sql


def test_the_history_queries_run_on_a_migrated_postgresql_store(pg_url: str) -> None:
    store = Store.open(pg_url)
    try:
        store.start_run("run-1", "tiny", {})
        drift = {"run_id": "run-1", "method": "classifier", "score": 0.4, "drifted": True}
        with store.engine.begin() as connection:
            connection.execute(
                insert(DRIFT_RESULTS),
                [
                    {**drift, "time": T0, "layer": 0, "threshold": 0.3, "details": {}},
                    # A score of the whole model, and one of a layer not chosen.
                    {**drift, "time": T0, "layer": None, "threshold": None, "details": {}},
                    {**drift, "time": T0, "layer": 1, "threshold": 0.3, "details": {}},
                ],
            )
            connection.execute(
                insert(ALERT_EVENTS),
                [
                    {"time": T0, "run_id": None, "alert": "ExportFailures", "severity": "warning",
                     "state": "firing", "labels": {}, "annotations": {"summary": "s"}},
                    {"time": T0, "run_id": "run-1", "alert": "SemanticDrift",
                     "severity": "critical", "state": "firing", "labels": {"layer": "0"},
                     "annotations": {}},
                ],
            )  # fmt: skip
        board = boards()["history.json"]
        rows = {}
        with store.engine.connect() as connection:
            for variable in board["templating"]["list"]:
                if variable["type"] == "query":
                    result = connection.exec_driver_sql(expand(variable["query"]))
                    rows[variable["name"]] = [row[0] for row in result]
            for panel in panels(board):
                for target in panel.get("targets", ()):
                    result = connection.exec_driver_sql(expand(target["rawSql"]))
                    rows[panel["title"]] = [tuple(row) for row in result]
    finally:
        store.close()
    assert (rows["model"], rows["run"], rows["layer"]) == (["tiny"], ["run-1"], [0, 1])
    assert sorted(name for _, name, _ in rows["Drift scores"]) == [
        "run-1 layer 0 classifier",
        "run-1 layer all classifier",
    ]
    assert len(rows["Drift results"]) == 2
    assert sorted(row[2] for row in rows["Alert events"]) == ["ExportFailures", "SemanticDrift"]
