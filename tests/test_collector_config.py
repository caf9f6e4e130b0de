"""The committed OpenTelemetry Collector configuration, checked without a Collector (none can
be installed here): one metrics pipeline from OTLP/HTTP to Prometheus remote write, every
component it names defined, cumulative series with the resource's labels on each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFIG = Path(__file__).parent.parent / "collectors" / "otel-collector.yaml"


def load() -> dict[str, Any]:
    config = yaml.safe_load(CONFIG.read_text())
    assert isinstance(config, dict)
    return config


def test_the_pipeline_names_only_components_the_file_defines() -> None:
    config = load()
    pipelines = config["service"]["pipelines"]
    assert list(pipelines) == ["metrics"]
    pipeline = pipelines["metrics"]
    for kind in ("receivers", "processors", "exporters"):
        assert pipeline[kind], kind
        assert set(pipeline[kind]) <= set(config[kind]), kind
        # A component defined but in no pipeline is never started: a sign of a typo.
        assert set(config[kind]) <= set(pipeline[kind]), kind
    # The memory limiter first, as the Collector's documentation asks, then batching.
    assert pipeline["processors"] == ["memory_limiter", "batch"]


def test_otlp_http_in_and_remote_write_out_with_the_resources_labels() -> None:
    config = load()
    http = config["receivers"]["otlp"]["protocols"]["http"]
    # observe's --otlp-endpoint speaks OTLP/HTTP on the Collector's default port.
    assert http["endpoint"].endswith(":4318")
    [exporter] = config["service"]["pipelines"]["metrics"]["exporters"]
    assert exporter == "prometheusremotewrite"
    remote_write = config["exporters"][exporter]
    assert remote_write["endpoint"].endswith("/api/v1/write")
    # run, model, rank and world_size live on the resource: without this the series of
    # every rank would collide.
    assert remote_write["resource_to_telemetry_conversion"]["enabled"] is True
    assert remote_write["retry_on_failure"]["enabled"] is True
    assert remote_write["remote_write_queue"]["enabled"] is True
