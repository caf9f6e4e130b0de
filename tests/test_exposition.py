"""What a monitored run's /metrics shows: every series with exactly the labels the catalogue
declares for it, the final values of a finished run, which Prometheus reads, the monitor's
per-layer figures as it measured them, and every series of a model past OpenTelemetry's
default cap, or a count of those a limit cuts."""

from __future__ import annotations

import gzip
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from prometheus_server import StartPrometheus
from starlette.testclient import TestClient

import observe
from observe import catalogue
from observe.catalogue import Kind, Metric
from observe.drift.baseline import Baseline
from observe.hooks import MonitorConfig
from observe.hooks.stats import LayerStats, Window
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.telemetry.provider import FinalScrape
from observe.workload.config import get_config
from observe.workload.data import BatchSampler
from observe.workload.inference import InferenceEngine
from observe.workload.job_config import TrainConfig
from observe.workload.model import MoETransformer
from observe.workload.server.app import Service, Slots, create_app
from observe.workload.server.figures import ServerFigures
from observe.workload.server.openai_api import ServedModel
from observe.workload.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db_url": f"sqlite:///{tmp_path / 'observe.db'}",
        "prometheus_port": 0,
        "spool_dir": tmp_path / "spool",
        "monitor": MonitorConfig(flush_every=2),
    }
    values.update(overrides)
    return Settings(**values)


def scrape(session: MonitoringSession) -> str:
    url = f"http://127.0.0.1:{session.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def observe_samples(text: str) -> list[Sample]:
    """Every observe_* sample of an exposition."""
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("observe_")
    ]


def declared_labels(metric: Metric) -> dict[str, set[str]]:
    """The sample names `metric` may show on /metrics, each with the labels it must carry."""
    labels = set(metric.all_labels)
    name = metric.prometheus_name
    if metric.kind is Kind.HISTOGRAM:
        return {
            f"{name}_bucket": labels | {"le"},
            f"{name}_sum": labels,
            f"{name}_count": labels,
            f"{name}_created": labels,
        }
    if metric.kind is Kind.COUNTER:
        return {name: labels, f"{name.removesuffix('_total')}_created": labels}
    return {name: labels}


@pytest.mark.slow
def test_every_series_carries_exactly_its_catalogue_labels(tmp_path: Path) -> None:
    """Training, serving and drift of a model that drops tokens: every metric shows."""
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny", capacity_factor=0.5))
    batches = [torch.randint(3, 250, (32, 16)) for _ in range(4)]
    with observe.attach(model) as reference, torch.no_grad():
        for ids in batches:
            model(ids)
        baseline = Baseline.capture(reference, model="tiny", methods=("classifier",))
    trained_until = datetime.now(UTC) - timedelta(days=1)
    # The test reads /metrics itself before the run ends: no scrape to wait for after. At
    # expert × slot detail /metrics shows every family.
    options = settings(tmp_path, prometheus_linger_s=0, prometheus_detail="expert_slot")
    with MonitoringSession(options, model="tiny") as session:
        monitor = session.attach(model, baseline=baseline, trained_until=trained_until)
        trainer = Trainer(
            model,
            BatchSampler(torch.randint(3, 250, (16, 17)), 2),
            TrainConfig(steps=4, batch_size=2, seq_len=16),
            meter_provider=session.meter_provider,
        )
        trainer.train(lambda _: monitor.step(), progress=False)
        with InferenceEngine(model, meter_provider=session.meter_provider) as engine:
            for prompt in ["Patient", "Revenue", "Patient"]:
                engine.generate(prompt, 2)
            # The served model's figures: one streamed request through the server's app.
            served = ServedModel("tiny", model.config.max_seq_len, 0)
            figures = ServerFigures(session.meter_provider)
            app = create_app(Service(engine, served, figures, Slots(1)))
            request = {"model": "tiny", "prompt": "Claim", "max_tokens": 2, "stream": True}
            with TestClient(app) as client:
                assert client.post("/v1/completions", json=request).status_code == 200
        with torch.no_grad():  # a serving window large enough for semantic drift
            for ids in batches[:2]:
                model(ids)
                monitor.step()
        monitor.snapshot()
        assert session.drift is not None
        session.drift.join()
        text = scrape(session)
    samples = observe_samples(text)
    declared = {
        sample: (metric, labels)
        for metric in catalogue.CATALOGUE
        for sample, labels in declared_labels(metric).items()
    }
    unknown = {sample.name for sample in samples} - set(declared)
    assert not unknown, f"series the catalogue does not declare: {unknown}"
    for sample in samples:
        assert set(sample.labels) == declared[sample.name][1], sample
    shown = {declared[sample.name][0].name for sample in samples}
    assert shown == {m.name for m in catalogue.CATALOGUE}, {
        m.name for m in catalogue.CATALOGUE
    } - shown


class Windows:
    """A sink keeping every window the monitor flushes."""

    def __init__(self) -> None:
        self.seen: list[Window] = []

    def consume(self, window: Window) -> None:
        self.seen.append(window)


def test_per_layer_families_on_metrics_are_the_monitors_figures(tmp_path: Path) -> None:
    """Each per-layer family read back from /metrics: the last window's gauges, and the
    counts and entropy histogram of every window, as the monitor measured them."""
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny", capacity_factor=0.5))  # it drops tokens
    windows = Windows()
    with MonitoringSession(settings(tmp_path, prometheus_linger_s=0), model="tiny") as session:
        monitor = session.attach(model, sinks=[windows])
        forward_steps(monitor, model, 6)  # flush_every=2: three windows
        total = monitor.snapshot()
        text = scrape(session)
    samples = observe_samples(text)

    def by_layer(metric: Metric, suffix: str = "") -> dict[str, float]:
        name = metric.prometheus_name + suffix
        found = {s.labels["layer"]: s.value for s in samples if s.name == name}
        assert found, f"{name} is missing from /metrics"
        return found

    assert len(windows.seen) == 3
    last = windows.seen[-1].routing.layers
    gauges: dict[Metric, Callable[[LayerStats], float]] = {
        catalogue.ROUTING_ENTROPY: lambda s: s.routing_entropy,
        catalogue.LOAD_IMBALANCE: lambda s: s.load_imbalance,
        catalogue.DEAD_EXPERTS: lambda s: len(s.dead_experts),
        catalogue.TOP1_PROBABILITY: lambda s: s.top1_probability,
        catalogue.AUX_LOSS: lambda s: s.aux_loss,
        catalogue.Z_LOSS: lambda s: s.z_loss,
    }
    for metric, value in gauges.items():
        assert by_layer(metric) == {str(s.layer): value(s) for s in last}, metric.name
    assert by_layer(catalogue.DROPPED_TOKENS) == {
        str(s.layer): s.dropped_tokens for s in total.layers
    }
    assert by_layer(catalogue.ROUTER_NONFINITE_TOKENS) == {
        str(s.layer): s.nonfinite_tokens for s in total.layers
    }
    histogram = catalogue.ROUTING_ENTROPY_WINDOWS
    entropies = {
        str(s.layer): [w.routing.layer(s.layer).routing_entropy for w in windows.seen]
        for s in total.layers
    }
    assert by_layer(histogram, "_count") == {k: len(v) for k, v in entropies.items()}
    assert by_layer(histogram, "_sum") == {k: sum(v) for k, v in entropies.items()}
    buckets = [s for s in samples if s.name == f"{histogram.prometheus_name}_bucket"]
    for layer, values in entropies.items():
        counts = {s.labels["le"]: s.value for s in buckets if s.labels["layer"] == layer}
        below = {f"{bound}": sum(v <= bound for v in values) for bound in histogram.buckets or ()}
        assert counts == {**below, "+Inf": len(values)}
    [steps] = of(catalogue.MONITOR_STEPS, samples)
    assert steps.value == total.last_step - total.first_step + 1 == 6
    [rate] = of(catalogue.ROUTER_SAMPLE_RATE, samples)
    assert rate.value == total.router_sample_rate


def forward_steps(monitor: observe.Monitor, model: MoETransformer, steps: int) -> None:
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randint(3, 250, (2, 8)))
            monitor.step()


@pytest.mark.slow
def test_prometheus_reads_a_finished_runs_last_window(
    tmp_path: Path, prometheus: StartPrometheus
) -> None:
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    # No window is flushed before the run ends: only the final flush has the tokens.
    options = settings(tmp_path, prometheus_linger_s=60, monitor=MonitorConfig(flush_every=100))
    session = MonitoringSession(options, model="tiny")
    with prometheus([f"127.0.0.1:{session.metrics_port}"]) as server:
        assert server.wait_for('up{job="observe"}', 1) == 1  # Prometheus scrapes the run
        monitor = session.attach(model)
        forward_steps(monitor, model, 5)
        session.close()
        stats = monitor.snapshot()
        total = sum(layer.tokens * model.config.top_k for layer in stats.layers)
        assert total == sum(sum(layer.tokens_per_expert) for layer in stats.layers) > 0
        # The target is gone now: the last sample before it went is the run's final value.
        promql = (
            f'sum(last_over_time(observe_moe_expert_tokens_total{{run="{session.run_id}"}}[5m]))'
        )
        assert server.wait_for(promql, total) == total
    assert session.telemetry.final_scrape is FinalScrape.READ


@pytest.mark.parametrize(("linger_s", "scraped"), [(0.0, True), (10.0, False)])
def test_a_run_ends_without_waiting_when_no_scrape_is_due(
    tmp_path: Path, linger_s: float, scraped: bool
) -> None:
    """Lingering off, or a run nobody scraped: close does not wait for a scrape."""
    model = MoETransformer(get_config("tiny"))
    session = MonitoringSession(settings(tmp_path, prometheus_linger_s=linger_s), model="tiny")
    with session:
        forward_steps(session.attach(model), model, 2)
        if scraped:
            scrape(session)
    assert session.telemetry.final_scrape is FinalScrape.NOT_AWAITED
    assert session.telemetry.endpoint is not None
    assert session.telemetry.endpoint.scrapes == int(scraped)


def samples_after_windows(tmp_path: Path, windows: int, **options: Any) -> list[Sample]:
    """/metrics after `windows` flushes of a tiny model; `options` override its config, or
    set the label_limit or the prometheus_detail (`detail`)."""
    limit = options.pop("label_limit", None)
    detail = options.pop("detail", "expert")
    model = MoETransformer(get_config("tiny", **options))
    options = settings(tmp_path, label_limit=limit, prometheus_detail=detail, prometheus_linger_s=0)
    with MonitoringSession(options, model="tiny") as session:
        monitor = session.attach(model)
        forward_steps(monitor, model, 2 * windows)  # flush_every=2
        monitor.snapshot()
        return observe_samples(scrape(session))


def of(metric: Metric, samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.name == metric.prometheus_name]


def dropped_over_limit(samples: list[Sample]) -> float:
    [dropped] = [
        s for s in of(catalogue.DROPPED_SAMPLES, samples) if s.labels["reason"] == "label_limit"
    ]
    return dropped.value


def test_a_model_past_opentelemetrys_default_cap_shows_every_series(tmp_path: Path) -> None:
    """2 layers × 64 experts × 16 entropy slots: 2,048 series, over the SDK's 2,000."""
    samples = samples_after_windows(tmp_path, 1, n_routed_experts=64, detail="expert_slot")
    heatmap = of(catalogue.EXPERT_ENTROPY_ASSIGNMENTS, samples)
    assert len(heatmap) == len({tuple(sorted(s.labels.items())) for s in heatmap}) == 2048
    assert len(of(catalogue.EXPERT_TOKENS, samples)) == 2 * 64
    assert not [s for s in samples if "otel_metric_overflow" in s.labels]
    assert dropped_over_limit(samples) == 0


def test_the_heatmap_is_layer_by_slot_unless_asked(tmp_path: Path) -> None:
    """By default /metrics shows the heatmap summed over experts; the store keeps it all."""
    samples = samples_after_windows(tmp_path, 1)
    assert not of(catalogue.EXPERT_ENTROPY_ASSIGNMENTS, samples)
    assert len(of(catalogue.ENTROPY_ASSIGNMENTS, samples)) == 2 * 16
    assert len(of(catalogue.EXPERT_TOKENS, samples)) == 2 * 4
    assert len(of(catalogue.EXPERT_SHARE, samples)) == 2 * len(catalogue.EXPERT_SHARE_QUANTILES)


def test_a_configured_limit_that_cuts_a_metric_is_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """2 layers × 4 experts × 16 slots: 128 heatmap series, 100 kept; 28 cut per window."""
    samples = samples_after_windows(tmp_path, 3, label_limit=100, detail="expert_slot")
    assert len(of(catalogue.EXPERT_ENTROPY_ASSIGNMENTS, samples)) == 100
    assert len(of(catalogue.EXPERT_TOKENS, samples)) == 8  # under the limit: whole
    assert not [s for s in samples if "otel_metric_overflow" in s.labels]
    assert dropped_over_limit(samples) == 28 * 3
    warnings = [r for r in caplog.records if "label_limit" in r.getMessage()]
    assert len(warnings) == 1
    assert catalogue.EXPERT_ENTROPY_ASSIGNMENTS.name in warnings[0].getMessage()


def test_openmetrics_and_gzip_scrapes_carry_the_array_families(tmp_path: Path) -> None:
    """Prometheus asks for OpenMetrics and gzip: the arrays' text sits before `# EOF`."""
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    with MonitoringSession(settings(tmp_path, prometheus_linger_s=0), model="tiny") as session:
        forward_steps(session.attach(model), model, 2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{session.metrics_port}/metrics",
            headers={
                "Accept": "application/openmetrics-text;version=1.0.0",
                "Accept-Encoding": "gzip",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            text = gzip.decompress(response.read()).decode()
    families = {f.name: f for f in openmetrics_families(text)}
    assert text.endswith("# EOF\n")
    tokens = families["observe_moe_expert_tokens"]
    assert tokens.type == "counter"
    assert len(tokens.samples) == 2 * 4
    assert {s.name for s in tokens.samples} == {"observe_moe_expert_tokens_total"}
