"""The training dashboard: language-model loss, the router's aux and z-losses, tokens/s."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from observe import catalogue as c
from observe.catalogue import Metric
from observe.dashboards.layout import PanelBuilder, assemble
from observe.dashboards.panels import (
    LAYER,
    RUN,
    legend,
    prometheus_variables,
    promql,
    selector,
    timeseries_panel,
)
from observe.dashboards.units import grafana_unit

UID = "observe-training"


def dashboard() -> model.Dashboard:
    return assemble(
        UID,
        "observe / training",
        "Loss, the router's load-balancing and z-losses per layer, and throughput of "
        "training runs. Generated from observe's metric catalogue by `make generate`.",
        prometheus_variables(),
        [
            (
                "Training",
                [_panel(c.TRAIN_LOSS, "Loss"), _panel(c.TRAIN_TOKENS_PER_SECOND, "Tokens/s")],
            ),
            (
                "Router losses",
                [
                    _panel(c.AUX_LOSS, "Aux (load-balancing) loss"),
                    _panel(c.Z_LOSS, "Router z-loss"),
                ],
            ),
        ],
    )


def _panel(metric: Metric, title: str) -> PanelBuilder:
    series = legend(RUN, LAYER) if LAYER in metric.labels else legend(RUN)
    return timeseries_panel(
        title,
        metric.description,
        [promql(selector(metric), series)],
        unit=grafana_unit(metric.unit),
    ).span(12)
