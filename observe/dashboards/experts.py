"""The experts dashboard: where tokens go, how sure the router is, balance, dead experts."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    TableCellBackgroundDisplayMode,
    TableColoredBackgroundCellOptions,
)

from observe import catalogue as c
from observe.catalogue import Metric
from observe.dashboards.layout import PanelBuilder, assemble
from observe.dashboards.panels import (
    EXPERT,
    LAYER,
    RUN,
    SLOT,
    heatmap_panel,
    legend,
    prometheus_variables,
    promql,
    rate,
    selector,
    table_panel,
    timeseries_panel,
)
from observe.dashboards.units import grafana_unit

UID = "observe-experts"


def dashboard() -> model.Dashboard:
    return assemble(
        UID,
        "observe / experts",
        "Each expert's share of its layer's tokens, the routing entropy of the tokens each "
        "expert takes, load imbalance, dead experts, the router's confidence and dropped "
        "tokens. Generated from observe's metric catalogue by `make generate`.",
        prometheus_variables(),
        [
            ("Token share", [_token_share(), _expert_share()]),
            ("Layer × routing-entropy slot", [_entropy_slots()]),
            (
                "Balance",
                [
                    _per_layer(c.LOAD_IMBALANCE, "Load imbalance"),
                    _per_layer(c.DEAD_EXPERTS, "Dead experts"),
                    _per_layer(c.TOP1_PROBABILITY, "Top-1 probability", fraction=True),
                    _dropped_tokens(),
                ],
            ),
        ],
    )


def _token_share() -> PanelBuilder:
    metric = c.EXPERT_TOKENS
    tokens = f"sum by ({LAYER}, {EXPERT}) ({rate(metric)})"
    layer_total = f"sum by ({LAYER}) ({rate(metric)})"
    return (
        heatmap_panel(
            "Token share, layer × expert",
            "Each expert's share of its layer's (token, expert) assignments over the rate "
            f"interval; a row per layer and expert. {metric.description} Empty under "
            'prometheus_detail = "layer": read the expert share quantiles below.',
            [
                promql(
                    f"{tokens} / ignoring ({EXPERT}) group_left {layer_total}",
                    legend(LAYER, EXPERT),
                )
            ],
            unit=grafana_unit("1", fraction=True),
        )
        .span(24)
        .height(14)
    )


def _entropy_slots() -> PanelBuilder:
    metric = c.ENTROPY_ASSIGNMENTS
    # One instant query, turned into a matrix: a row per layer, a column per slot.
    matrix = model.DataTransformerConfig(
        id_val="groupingToMatrix",
        options={"rowField": LAYER, "columnField": SLOT, "valueField": "Value"},
    )
    cells = TableColoredBackgroundCellOptions(mode=TableCellBackgroundDisplayMode.GRADIENT)
    return (
        table_panel(
            "Layer × routing-entropy slot",
            f"{metric.description} Assignments per second over the rate interval, at the "
            "end of the time range. Per expert: the store (the history dashboard).",
            [promql(f"sum by ({LAYER}, {SLOT}) ({rate(metric)})", table=True)],
            unit=grafana_unit(metric.unit),
        )
        .with_transformation(matrix)
        .cell_options(cells)
        .color_scheme(db.FieldColor().mode(model.FieldColorModeId.CONTINUOUS_BL_YL_RD))
        .span(24)
        .height(12)
    )


def _expert_share() -> PanelBuilder:
    metric = c.EXPERT_SHARE
    return timeseries_panel(
        "Expert share quantiles",
        f"{metric.description} Shown whatever prometheus_detail says: the token-share "
        'heatmap above is empty under prometheus_detail = "layer", this is not.',
        [promql(selector(metric), legend(RUN, LAYER, c.QUANTILE))],
        unit=grafana_unit(metric.unit, fraction=True),
    ).span(24)


def _per_layer(metric: Metric, title: str, *, fraction: bool = False) -> PanelBuilder:
    return timeseries_panel(
        title,
        metric.description,
        [promql(selector(metric), legend(RUN, LAYER))],
        unit=grafana_unit(metric.unit, fraction=fraction),
    ).span(6)


def _dropped_tokens() -> PanelBuilder:
    metric = c.DROPPED_TOKENS
    return timeseries_panel(
        "Dropped tokens",
        f"{metric.description} Per second, over the rate interval.",
        [promql(f"sum by ({RUN}, {LAYER}) ({rate(metric)})", legend(RUN, LAYER))],
        unit=grafana_unit(metric.unit),
    ).span(6)
