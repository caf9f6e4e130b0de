"""The catalogue's instruments: names, the workload's own figures, routing windows as arrays,
caps."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import observe
from observe import catalogue
from observe.catalogue import Kind
from observe.errors import ObserveError
from observe.telemetry import series_budget
from observe.telemetry.array_family import HistogramFamily
from observe.telemetry.expert_families import ExpertFamilies
from observe.telemetry.layer_families import LayerFamilies
from observe.telemetry.limits import LabelLimiter
from observe.workload.config import get_config
from observe.workload.inference import InferenceEngine
from observe.workload.model import MoETransformer


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def test_catalogue_names_are_unique_and_prometheus_shaped() -> None:
    names = [m.name for m in catalogue.CATALOGUE]
    assert len(names) == len(set(names))
    for metric in catalogue.CATALOGUE:
        assert metric.name.startswith("observe_")
        assert metric.description.strip()
        assert (metric.buckets is not None) == (metric.kind is Kind.HISTOGRAM)
    assert catalogue.EXPERT_TOKENS.prometheus_name == "observe_moe_expert_tokens_total"
    assert catalogue.INFERENCE_LATENCY.prometheus_name == "observe_inference_latency_seconds"
    assert catalogue.KNOWLEDGE_FRESHNESS.prometheus_name == "observe_knowledge_freshness_seconds"
    assert catalogue.ROUTING_ENTROPY.prometheus_name == "observe_moe_routing_entropy"


def test_the_inference_engine_emits_latency_and_cache_figures() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    with InferenceEngine(model, meter_provider=provider) as engine:
        for prompt in ["a", "b", "a", "a"]:
            engine.generate(prompt, 2)
    found = points(reader)
    assert [p.value for p in found["observe_inference_cache_hits"]] == [2]
    assert [p.value for p in found["observe_inference_cache_misses"]] == [2]
    [latency] = found["observe_inference_latency"]
    assert latency.count == 4
    assert tuple(latency.explicit_bounds) == catalogue.LATENCY_BUCKETS


def test_routing_windows_become_arrays() -> None:
    limiter = LabelLimiter(10_000)
    labels = {"run": "r", "model": "m"}
    layers = LayerFamilies(labels, limiter)
    experts = ExpertFamilies(series_budget.EXPERT_SLOT, labels, limiter)
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny", capacity_factor=0.5))
    config = observe.MonitorConfig(flush_every=2, entropy_slots=4)
    with observe.attach(model, config, sinks=[layers, experts]) as monitor:
        layers.fit(monitor)
        experts.fit(monitor)
        for _ in range(5):
            model(torch.randint(0, 256, (2, 8)))
            monitor.step()
        total = monitor.snapshot()
    families = {f.metric.name: dict(f.points()) for f in experts.families()}
    tokens = families["observe_moe_expert_tokens"]
    for stats in total.layers:
        for expert, n in enumerate(stats.tokens_per_expert):
            assert tokens[(str(stats.layer), str(expert))] == n
    heatmap = families["observe_moe_expert_entropy_assignments"]
    assert {slot for _, _, slot in heatmap} == {"0.25", "0.5", "0.75", "1"}
    assert sum(heatmap.values()) == sum(sum(s.tokens_per_expert) for s in total.layers)
    by_layer = families["observe_moe_entropy_assignments"]
    for (layer, slot), n in by_layer.items():
        assert n == sum(v for (at, _, bound), v in heatmap.items() if (at, bound) == (layer, slot))
    share = families["observe_moe_expert_share"]
    assert {q for _, q in share} == {f"{q:g}" for q in catalogue.EXPERT_SHARE_QUANTILES}
    assert all(0 <= v <= 1 for v in share.values())
    # The store's share: expert detail once per window, none again until the next.
    assert {f.metric.name for f in experts.stored()} == {m.name for m in series_budget.STORED}
    assert experts.stored() == []
    found = {f.metric.name: f for f in layers.families()}
    assert set(found) == {m.name for m in layers.metrics}
    dropped = dict(found["observe_moe_dropped_tokens"].points())
    assert dropped == {(str(s.layer),): s.dropped_tokens for s in total.layers}
    assert {key for key, _ in found["observe_moe_routing_entropy"].points()} == {("0",), ("1",)}
    assert list(found["observe_monitor_steps"].points()) == [((), 5)]
    histogram = found["observe_moe_routing_entropy_windows"]
    assert isinstance(histogram, HistogramFamily)
    assert sum(p.count for _, p in histogram.points()) == 3 * 2  # three windows, two layers


def test_the_series_budget_shows_per_layer_summaries_and_stores_expert_detail() -> None:
    limiter = LabelLimiter()
    experts = ExpertFamilies(series_budget.LAYER, {"run": "r", "model": "m"}, limiter)
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    with observe.attach(model, observe.MonitorConfig(flush_every=1), sinks=[experts]) as monitor:
        experts.fit(monitor)
        model(torch.randint(0, 256, (2, 8)))
        monitor.step()
        monitor.snapshot()
    text = experts.render(openmetrics=False).decode()
    assert "observe_moe_expert_tokens_total{" not in text
    assert "observe_moe_expert_entropy_assignments_total{" not in text
    assert 'observe_moe_expert_share{run="r",model="m",layer="1",quantile="0.5"} ' in text
    assert "observe_moe_entropy_assignments_total{" in text
    stored = {f.metric.name: f for f in experts.stored()}
    assert set(stored) == {m.name for m in series_budget.STORED}
    assert len(stored["observe_moe_expert_tokens"].samples()) == 2 * 4
    with pytest.raises(ObserveError, match="prometheus_detail='experts' is not a detail"):
        series_budget.shown("experts")


def test_label_combinations_over_the_cap_are_counted_not_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = LabelLimiter(3)
    admitted = [limiter.admit("m", i) for i in range(5)] + [limiter.admit("m", 1)]
    assert admitted == [True, True, True, False, False, True]
    assert limiter.admit("other", 99)
    assert limiter.dropped_samples == 2
    assert limiter.admit_shape("dense", 5) == 3  # a whole shape, admitted once
    assert sum("more than 3 label combinations" in r.message for r in caplog.records) == 2


def test_an_unset_limit_is_sized_to_the_models_a_configured_one_is_kept() -> None:
    sized, configured = LabelLimiter(), LabelLimiter(3)
    for limiter in (sized, configured):
        limiter.fit(8)
        limiter.fit(5)  # a smaller model attached later keeps the room the larger needs
    assert (sized.limit, configured.limit) == (8, 3)
    assert all(sized.admit("m", i) for i in range(8))
    assert not sized.admit("m", 8)
