"""The on-call overview: what fires, drift, the inference path, routing health, freshness."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

from observe import catalogue as c
from observe.dashboards.layout import PanelBuilder, assemble
from observe.dashboards.panels import (
    LAYER,
    METHOD,
    MODEL,
    RUN,
    band,
    legend,
    line,
    prometheus_variables,
    promql,
    rate,
    selector,
    stat_panel,
    table_panel,
    timeseries_panel,
)
from observe.dashboards.units import grafana_unit

UID = "observe-oncall"

# Prometheus's own series of the alerts its rules hold, one per alert and label set.
FIRING = 'ALERTS{alertstate="firing"}'
LATENCY_QUANTILES = (0.5, 0.95, 0.99)


def dashboard() -> model.Dashboard:
    return assemble(
        UID,
        "observe / on-call overview",
        "Firing alerts, drift, inference latency and cache, routing entropy, knowledge "
        "freshness. Generated from observe's metric catalogue by `make generate`.",
        prometheus_variables(),
        [
            ("Alerts", [_firing_count(), _firing_alerts()]),
            ("Drift", [_semantic_drift(), _routing_drift()]),
            ("Inference", [_latency(), _cache_miss_rate()]),
            ("Routing and knowledge", [_routing_entropy(), _freshness()]),
        ],
    )


def _firing_count() -> PanelBuilder:
    # `or vector(0)`: with nothing firing, ALERTS has no series at all.
    count = promql(f"count({FIRING}) or vector(0)")
    steps = [model.Threshold(None, "green"), model.Threshold(1, "red")]
    return (
        stat_panel(
            "Firing alerts", "Alerts firing now, of every model and run.", [count], unit=None
        )
        .thresholds(db.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps))
        .span(6)
        .height(6)
    )


def _firing_alerts() -> PanelBuilder:
    # The sample's time and value (always 1) say nothing on a list of what fires.
    hidden = {"Time": True, "Value": True, "__name__": True}
    return (
        table_panel(
            "Firing alerts by label",
            "One row per firing alert: its name, severity and labels.",
            [promql(FIRING, table=True)],
            unit=None,
        )
        .with_transformation(
            model.DataTransformerConfig(id_val="organize", options={"excludeByName": hidden})
        )
        .span(18)
        .height(6)
    )


def _semantic_drift() -> PanelBuilder:
    score, threshold = c.SEMANTIC_DRIFT, c.SEMANTIC_DRIFT_THRESHOLD
    panel = timeseries_panel(
        "Semantic drift",
        f"{score.description} Series named `threshold`: {threshold.description} The alert "
        "fires on a score over its own threshold. Dashed red: "
        f"{c.SEMANTIC_DRIFT_ALERT:g}, the lowest threshold of the classifier method, and the "
        "alert's line for a score without a threshold.",
        [
            promql(selector(score), legend(RUN, LAYER, METHOD)),
            promql(selector(threshold), legend(RUN, LAYER, METHOD, prefix="threshold")),
        ],
        unit=grafana_unit(score.unit),
    )
    return line(panel, c.SEMANTIC_DRIFT_ALERT).span(12)


def _routing_drift() -> PanelBuilder:
    metric = c.ROUTING_DRIFT
    panel = timeseries_panel(
        "Routing drift",
        f"{metric.description} Dashed red: the alert line, {c.ROUTING_DRIFT_ALERT:g}.",
        [promql(selector(metric), legend(RUN, LAYER))],
        unit=grafana_unit(metric.unit),
    )
    return line(panel, c.ROUTING_DRIFT_ALERT).span(12)


def _latency() -> PanelBuilder:
    metric = c.INFERENCE_LATENCY
    buckets = f"sum by (le, {MODEL}) ({rate(metric, '_bucket')})"
    panel = timeseries_panel(
        "Inference latency",
        f"{metric.description} Quantiles of the latency histogram over the rate interval. "
        f"Dashed red: the p95 alert line, {c.LATENCY_P95_ALERT_S:g} s.",
        [
            promql(f"histogram_quantile({q:g}, {buckets})", legend(MODEL, prefix=f"p{q * 100:g}"))
            for q in LATENCY_QUANTILES
        ],
        unit=grafana_unit(metric.unit),
    )
    return line(panel, c.LATENCY_P95_ALERT_S).span(12)


def _cache_miss_rate() -> PanelBuilder:
    hits = f"sum by ({MODEL}, {RUN}) ({rate(c.CACHE_HITS)})"
    misses = f"sum by ({MODEL}, {RUN}) ({rate(c.CACHE_MISSES)})"
    low, high = c.CACHE_MISS_RATE_BAND
    panel = timeseries_panel(
        "Cache miss rate",
        "Misses over all requests of the inference response cache. Green: the expected "
        f"range, {low:g} to {high:g}; the alert fires outside it.",
        # A run with no hit yet has no hit series: count its hits as 0, not as missing.
        [promql(f"{misses} / ({misses} + ({hits} or {misses} * 0))", legend(RUN))],
        unit=grafana_unit("1", fraction=True),
    )
    return band(panel, c.CACHE_MISS_RATE_BAND).span(12)


def _routing_entropy() -> PanelBuilder:
    metric = c.ROUTING_ENTROPY
    low, high = c.ROUTING_ENTROPY_BAND
    panel = timeseries_panel(
        "Routing entropy",
        f"{metric.description} Green: the expected range, {low:g} to {high:g}.",
        [promql(selector(metric), legend(RUN, LAYER))],
        unit=grafana_unit(metric.unit),
    )
    return band(panel, c.ROUTING_ENTROPY_BAND).span(16)


def _freshness() -> PanelBuilder:
    metric = c.KNOWLEDGE_FRESHNESS
    return stat_panel(
        "Knowledge freshness",
        metric.description,
        [promql(f"max by ({MODEL}) ({selector(metric)})", legend(MODEL))],
        unit=grafana_unit(metric.unit),
    ).span(8)
