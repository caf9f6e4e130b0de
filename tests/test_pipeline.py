"""A monitored run end to end: a real Prometheus scrapes it, the store keeps it, OTLP gets it."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
import sqlalchemy as sa
import torch
from conftest import libpq_url
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE
from pg_cluster import PgCluster
from prometheus_server import StartPrometheus, free_port

from observe import catalogue
from observe.errors import ObserveError
from observe.hooks import MonitorConfig, RoutingStats
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.store.queries import query
from observe.workload.finetune import prepare_fine_tune
from observe.workload.inference import InferenceEngine
from observe.workload.job_config import FineTuneConfig
from observe.workload.trainer import StepResult, TrainConfig


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db_url": f"sqlite:///{tmp_path / 'observe.db'}",
        "prometheus_port": 0,
        "spool_dir": tmp_path / "spool",
        "export_interval_s": 0.5,
        "monitor": MonitorConfig(flush_every=2),
    }
    values.update(overrides)
    return Settings(**values)


def run_workload(session: MonitoringSession, out: Path, steps: int = 6) -> RoutingStats:
    """Trains the tiny model, then serves a few requests, both monitored."""
    torch.manual_seed(0)
    job = prepare_fine_tune(
        TrainConfig(steps=steps, batch_size=2, seq_len=32),
        FineTuneConfig(model_size="tiny", domain="medical", docs=40),
        out,
        meter_provider=session.meter_provider,
    )
    monitor = session.attach(job.model)
    job.run(lambda _: monitor.step(), progress=False)
    with InferenceEngine(job.model, meter_provider=session.meter_provider) as engine:
        for prompt in ["Patient", "Revenue", "Patient"]:
            engine.generate(prompt, 3)
    return monitor.snapshot()


def total_tokens(snapshot: RoutingStats) -> int:
    return sum(sum(layer.tokens_per_expert) for layer in snapshot.layers)


@pytest.mark.slow
def test_prometheus_scrapes_a_running_workload(tmp_path: Path, prometheus: StartPrometheus) -> None:
    # Prometheus stops before the session closes: no scrape to wait for.
    options = settings(tmp_path, prometheus_linger_s=0)
    with MonitoringSession(options, model="tiny-test") as session:
        snapshot = run_workload(session, tmp_path / "run")
        run = session.run_id
        assert session.metrics_port is not None
        with prometheus([f"127.0.0.1:{session.metrics_port}"]) as server:
            tokens = f'sum(observe_moe_expert_tokens_total{{run="{run}"}})'
            assert server.wait_for(tokens, total_tokens(snapshot)) == total_tokens(snapshot)
            per_layer = server.query(
                f'sum by (layer) (observe_moe_expert_tokens_total{{run="{run}"}})'
            )
            assert {r["metric"]["layer"]: float(r["value"][1]) for r in per_layer} == {
                str(s.layer): sum(s.tokens_per_expert) for s in snapshot.layers
            }
            names = {
                r["metric"]["__name__"]
                for r in server.query(f'{{__name__=~"observe_.+", run="{run}", model="tiny-test"}}')
            }
    # Dropped tokens are absent: the tiny model has no capacity limit.
    expected = {
        m.prometheus_name
        for m in (
            catalogue.EXPERT_TOKENS,
            catalogue.ENTROPY_ASSIGNMENTS,  # per expert only in the store, by default
            catalogue.EXPERT_SHARE,
            catalogue.ROUTING_ENTROPY,
            catalogue.LOAD_IMBALANCE,
            catalogue.DEAD_EXPERTS,
            catalogue.TOP1_PROBABILITY,
            catalogue.AUX_LOSS,
            catalogue.Z_LOSS,
            catalogue.MONITOR_STEPS,
            catalogue.TRAIN_LOSS,
            catalogue.TRAIN_TOKENS_PER_SECOND,
            catalogue.CACHE_HITS,
            catalogue.CACHE_MISSES,
            catalogue.EXPORTS,
            catalogue.EXPORT_FAILURES,
            catalogue.SPOOLED_SAMPLES,
            catalogue.DROPPED_SAMPLES,
        )
    }
    expected |= {
        f"{m.prometheus_name}_bucket"
        for m in (catalogue.INFERENCE_LATENCY, catalogue.ROUTING_ENTROPY_WINDOWS)
    }
    assert expected <= names, expected - names


def test_the_store_holds_what_the_hooks_counted(tmp_path: Path, pg_url: str) -> None:
    with MonitoringSession(settings(tmp_path, db_url=pg_url), model="tiny-test") as session:
        snapshot = run_workload(session, tmp_path / "run")
        run = session.run_id
    engine = sa.create_engine(pg_url)
    with engine.connect() as db:
        loads = db.execute(
            sa.text("select sum(tokens) from expert_load where run_id = :run"), {"run": run}
        ).scalar()
        windows = (
            db.execute(
                sa.text(
                    """
                select distinct on (h.series_id) h.count from histogram_samples h
                join series on series.id = h.series_id
                where series.run_id = :run and series.name = :name
                order by h.series_id, h.time desc
                """
                ),
                {"run": run, "name": catalogue.ROUTING_ENTROPY_WINDOWS.name},
            )
            .scalars()
            .all()
        )
        status = db.execute(
            sa.text("select status from runs where id = :run"), {"run": run}
        ).scalar()
    # Counters are cumulative: the newest sample of each series holds its total.
    latest = sum(_newest(engine, run, catalogue.EXPERT_TOKENS.name).values())
    # The per-layer figures too: each export's, the newest the run's final ones.
    [steps] = _newest(engine, run, catalogue.MONITOR_STEPS.name).values()
    engine.dispose()
    assert loads == total_tokens(snapshot)
    assert latest == total_tokens(snapshot)
    assert steps == snapshot.last_step - snapshot.first_step + 1
    assert len(windows) == len(snapshot.layers) and all(n > 0 for n in windows)
    assert status == "finished"


def _newest(engine: sa.Engine, run: str, metric: str) -> dict[str, float]:
    """The newest value of each of the run's series of `metric`, by its labels."""
    return {
        json.dumps(dict(r.labels), sort_keys=True): r.value for r in query(engine, metric, run=run)
    }


def test_a_wrong_store_url_fails_before_anything_starts(tmp_path: Path) -> None:
    url = f"postgresql://observe:s3cret@127.0.0.1:{free_port()}/observe"
    with pytest.raises(ObserveError) as error:
        MonitoringSession(settings(tmp_path, db_url=url), model="tiny-test")
    assert "s3cret" not in str(error.value)
    assert "***" in str(error.value)


class OtlpReceiver(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        OtlpReceiver.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_otlp_export_reaches_a_collector_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Remote write, where a Collector sends these, takes cumulative figures only: a user's
    # preference for deltas must not reach observe's export.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OtlpReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        # No periodic export comes due during the run: what arrives, closing sent.
        options = settings(
            tmp_path, otlp_endpoint=endpoint, prometheus_port=None, export_interval_s=600.0
        )
        with MonitoringSession(options, model="tiny-test") as session:
            snapshot = run_workload(session, tmp_path / "run", steps=2)
            assert session.telemetry.otlp is not None
    finally:
        server.shutdown()
    assert OtlpReceiver.bodies
    # A short job's final state reaches the collector: the array families through a
    # provider of their own, in a request of their own; cumulative, with the run's labels.
    requests = [ExportMetricsServiceRequest.FromString(body) for body in OtlpReceiver.bodies]
    found = [
        (resource, metric)
        for request in requests
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == catalogue.EXPERT_TOKENS.name
    ]
    resource, expert_tokens = found[-1]
    attributes = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert attributes[catalogue.RUN_LABEL] == session.run_id
    assert expert_tokens.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
    tokens = [point.as_int for point in expert_tokens.sum.data_points]
    assert len(tokens) == 2 * 4  # a series per layer and expert
    assert sum(tokens) == total_tokens(snapshot)
    # The per-layer figures come the same way, the entropy histogram as a histogram.
    last = {
        metric.name: metric
        for request in requests
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    entropy = last[catalogue.ROUTING_ENTROPY.name].gauge.data_points
    assert {p.attributes[0].value.string_value for p in entropy} == {"0", "1"}
    [steps] = last[catalogue.MONITOR_STEPS.name].sum.data_points
    assert steps.as_int == snapshot.last_step - snapshot.first_step + 1
    windows = last[catalogue.ROUTING_ENTROPY_WINDOWS.name].histogram
    assert windows.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
    assert len(windows.data_points) == 2  # a series per layer
    for point in windows.data_points:
        assert point.count == sum(point.bucket_counts) > 0
        assert list(point.explicit_bounds) == list(catalogue.ENTROPY_BUCKETS)
        assert point.min <= point.sum / point.count <= point.max
    assert session.telemetry.otlp.failed == 0


@pytest.mark.slow
def test_a_store_outage_mid_run_loses_nothing(tmp_path: Path, throwaway_pg: PgCluster) -> None:
    database = f"outage_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(throwaway_pg.url()), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    url = throwaway_pg.url(database=database)
    options = settings(tmp_path, db_url=url, prometheus_port=None, close_timeout_s=60.0)
    session = MonitoringSession(options, model="tiny-test")
    torch.manual_seed(0)
    job = prepare_fine_tune(
        TrainConfig(steps=12, batch_size=2, seq_len=32),
        FineTuneConfig(model_size="tiny", domain="finance", docs=40),
        tmp_path / "run",
        meter_provider=session.meter_provider,
    )
    monitor = session.attach(job.model)
    stopped_at = []

    def on_step(result: StepResult) -> None:
        monitor.step()
        if result.step == 4:
            throwaway_pg.stop()  # the store goes away mid-run...
        if result.step == 9:
            # Delivery runs at the lowest priority: on a busy machine it may not yet have
            # tried the windows of steps 6 and 8, so it gets a bounded while to.
            deadline = time.monotonic() + 30
            while not session.delivery.stats().spooled_samples and time.monotonic() < deadline:
                time.sleep(0.05)
            stopped_at.append(session.delivery.stats().spooled_samples)
            throwaway_pg.start()  # ...and comes back

    try:
        job.run(on_step, progress=False)
        snapshot = monitor.snapshot()
    finally:
        if not throwaway_pg.running():
            throwaway_pg.start()
    session.close()
    # While it was down, the run went on and what it measured waited in the spool.
    assert stopped_at and stopped_at[0] > 0
    engine = sa.create_engine(url)
    with engine.connect() as db:
        loads = db.execute(
            sa.text("select sum(tokens) from expert_load where run_id = :run"),
            {"run": session.run_id},
        ).scalar()
    engine.dispose()
    assert loads == total_tokens(snapshot)
    assert session.delivery.stats().spooled_samples == 0


def test_concurrent_runs_take_separate_spool_slots(tmp_path: Path) -> None:
    options = settings(tmp_path, prometheus_port=None)
    with (
        MonitoringSession(options, model="a") as first,
        MonitoringSession(options, model="b") as second,
    ):
        assert first.delivery is not second.delivery
    [store_spool] = (tmp_path / "spool").iterdir()  # one store, one directory
    assert sorted(p.name for p in store_spool.iterdir()) == ["slot-0", "slot-1", "store.json"]


@pytest.mark.slow
def test_distributed_runs_label_every_series_with_the_rank(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prometheus: StartPrometheus,
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")  # as torchrun --standalone sets it
    monkeypatch.delenv("OBSERVE_RUN_ID", raising=False)
    # Prometheus stops before the session closes: no scrape to wait for.
    options = settings(tmp_path, prometheus_linger_s=0)
    with MonitoringSession(options, model="tiny-test") as session:
        run_workload(session, tmp_path / "run", steps=2)
        with prometheus([f"127.0.0.1:{session.metrics_port}"]) as server:
            promql = f'count(observe_moe_expert_tokens_total{{run="{session.run_id}"}})'
            assert server.wait_for(promql, 8) == 8  # 2 layers × 4 experts
            ranks = {r["metric"].get("rank") for r in server.query(f'{{run="{session.run_id}"}}')}
    assert ranks == {"1"}
    engine = sa.create_engine(settings(tmp_path).db_url or "")
    with engine.connect() as db:
        labels = db.execute(sa.text("select labels from series")).scalars().all()
    engine.dispose()
    assert labels and all(
        (json_labels(label).get("rank"), json_labels(label).get("world_size")) == ("1", "2")
        for label in labels
    )
    assert session.run_id == "tiny-test-job-1"


def json_labels(value: Any) -> dict[str, str]:
    return value if isinstance(value, dict) else json.loads(value)


def test_a_taken_metrics_port_fails_the_run_cleanly(tmp_path: Path) -> None:
    with MonitoringSession(settings(tmp_path), model="first") as first:
        taken = settings(tmp_path, prometheus_port=first.metrics_port)
        with pytest.raises(ObserveError, match="another --prometheus-port"):
            MonitoringSession(taken, model="second")
    engine = sa.create_engine(taken.db_url or "")
    with engine.connect() as db:
        statuses = dict(db.execute(sa.text("select model, status from runs")).all())
    engine.dispose()
    assert statuses == {"first": "finished", "second": "failed"}
