"""The on-call overview: what fires, drift, the inference path, the served model's HTTP
API, routing health, freshness."""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus
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
# The served model's answers counted as errors, by class: regular expressions over the
# status code label.
ERROR_CLASSES = (("4xx", "4.."), ("5xx", "5.."))
# The served model's figures, per model and route.
BY_ROUTE = (MODEL, c.ROUTE)


def dashboard() -> model.Dashboard:
    return assemble(
        UID,
        "observe / on-call overview",
        "Firing alerts, drift, inference latency and cache, the served model's requests, "
        "errors, latency and tokens, routing entropy, knowledge freshness. Generated from "
        "observe's metric catalogue by `make generate`.",
        prometheus_variables(),
        [
            ("Alerts", [_firing_count(), _firing_alerts()]),
            ("Drift", [_semantic_drift(), _routing_drift()]),
            ("Inference", [_latency(), _cache_miss_rate()]),
            (
                "Served model (observe serve)",
                [
                    _server_requests(),
                    _server_errors(),
                    _server_quantiles("Request latency", c.SERVER_REQUEST_LATENCY),
                    _server_quantiles("Time to first token", c.SERVER_TIME_TO_FIRST_TOKEN, [0.95]),
                    _server_tokens(),
                ],
            ),
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
        f"fires when a score is over its own threshold in {c.SEMANTIC_DRIFT_ALERT_WINDOWS} "
        "scored windows in a row. Dashed red: "
        f"{c.SEMANTIC_DRIFT_ALERT:g}, the lowest threshold of the classifier method.",
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


def _quantiles(
    metric: c.Metric, quantiles: Sequence[float], by: Sequence[str]
) -> list[prometheus.Dataquery]:
    """A target per quantile of a histogram over the rate interval, a series per `by`."""
    buckets = f"sum by (le, {', '.join(by)}) ({rate(metric, '_bucket')})"
    return [
        promql(f"histogram_quantile({q:g}, {buckets})", legend(*by, prefix=f"p{q * 100:g}"))
        for q in quantiles
    ]


def _latency() -> PanelBuilder:
    metric = c.INFERENCE_LATENCY
    panel = timeseries_panel(
        "Inference latency",
        f"{metric.description} Quantiles of the latency histogram over the rate interval. "
        f"Dashed red: the p95 alert line, {c.LATENCY_P95_ALERT_S:g} s.",
        _quantiles(metric, LATENCY_QUANTILES, [MODEL]),
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


def _server_requests() -> PanelBuilder:
    metric = c.SERVER_REQUESTS
    by = (*BY_ROUTE, c.STATUS_CODE)
    return timeseries_panel(
        "Requests per second",
        f"{metric.description} Per second, over the rate interval.",
        [promql(f"sum by ({', '.join(by)}) ({rate(metric)})", legend(*by))],
        unit=grafana_unit(metric.unit),
    ).span(12)


def _server_errors() -> PanelBuilder:
    metric = c.SERVER_REQUESTS
    by = ", ".join(BY_ROUTE)
    answered = f"sum by ({by}) ({rate(metric)})"

    def share(pattern: str) -> str:
        errors = f"sum by ({by}) ({rate(metric, matching={c.STATUS_CODE: pattern})})"
        # A route with no such answer has no series of them: its share is 0, not missing.
        return f"({errors} or {answered} * 0) / {answered}"

    return timeseries_panel(
        "Error ratio",
        "Answers of each route with a 4xx status (the client's request was refused: bad "
        "input, an unknown model, a full queue) or a 5xx (the server failed or is "
        "draining), over all its answers, over the rate interval.",
        [promql(share(pattern), legend(*BY_ROUTE, prefix=name)) for name, pattern in ERROR_CLASSES],
        unit=grafana_unit("1", fraction=True),
    ).span(12)


def _server_quantiles(
    title: str, metric: c.Metric, quantiles: Sequence[float] = LATENCY_QUANTILES
) -> PanelBuilder:
    named = ", ".join(f"p{q * 100:g}" for q in quantiles)
    return timeseries_panel(
        title,
        f"{metric.description} {named} per route, over the rate interval.",
        _quantiles(metric, quantiles, BY_ROUTE),
        unit=grafana_unit(metric.unit),
    ).span(8)


def _server_tokens() -> PanelBuilder:
    counted = (("in", c.SERVER_PROMPT_TOKENS), ("out", c.SERVER_COMPLETION_TOKENS))
    by = ", ".join(BY_ROUTE)
    return timeseries_panel(
        "Tokens per second",
        "Prompt tokens in and generated tokens out of answered generation requests, as "
        "their `usage` counts them, per second over the rate interval.",
        [
            promql(f"sum by ({by}) ({rate(metric)})", legend(*BY_ROUTE, prefix=direction))
            for direction, metric in counted
        ],
        unit=grafana_unit(c.SERVER_PROMPT_TOKENS.unit),
    ).span(8)


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
