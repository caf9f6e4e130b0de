"""The process's OpenTelemetry SDK: a Prometheus `/metrics` endpoint, the store, OTLP.

One `MeterProvider` per monitored run. The Prometheus reader serves scrapes from its own
registry on the run's `MetricsEndpoint` (127.0.0.1 by default, with the TLS and basic auth
of `[metrics]`), with the families kept as arrays (`ArraySource`: the routing figures)
rendered beside them; a periodic reader feeds the store exporter; another, when configured,
an OpenTelemetry Collector over OTLP, which reads the array families through a provider of
their own (`otlp_arrays`). Each periodic reader exports a last time when the provider shuts
down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry

from observe import signals
from observe.catalogue import (
    MODEL_LABEL,
    RANK_LABEL,
    RESOURCE_LABELS,
    RUN_LABEL,
    WORLD_SIZE_LABEL,
)
from observe.distributed import Placement
from observe.errors import ObserveError
from observe.instruments import SCOPE
from observe.lifetime import Deadline
from observe.settings import Settings
from observe.telemetry.array_family import ArraySource
from observe.telemetry.exposition import MetricsEndpoint
from observe.telemetry.limits import MAX_LABEL_LIMIT

logger = logging.getLogger("observe")


class CountingExporter(MetricExporter):
    """Counts an exporter's attempts and failures, for the pipeline's health metrics."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.attempted = 0
        self.failed = 0
        self._lock = threading.Lock()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            result = MetricExportResult.FAILURE
        with self._lock:
            self.attempted += 1
            self.failed += result is MetricExportResult.FAILURE
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class FinalScrape(StrEnum):
    """Whether Prometheus read a closing run's final values."""

    READ = "read"  # a scrape begun after the final flush was answered
    MISSED = "missed"  # prometheus_linger_s ran out first
    NOT_AWAITED = "not awaited"  # no linger, no /metrics, or nobody scraped the run


class Telemetry:
    """The SDK side: readers, exporters and the `/metrics` server of one run."""

    def __init__(
        self,
        settings: Settings,
        *,
        run_id: str,
        model: str,
        exporters: Sequence[MetricExporter] = (),
        placement: Placement | None = None,
        arrays: Sequence[ArraySource] = (),
    ) -> None:
        """`placement`: this rank's place in a distributed run, whose every series then
        carries `rank` and `world_size`; None when the process runs alone. `arrays`: the
        families kept as arrays, for /metrics and OTLP (the store exporter reads its own)."""
        attributes: dict[str, str | int] = {
            "service.name": "observe",
            RUN_LABEL: run_id,
            MODEL_LABEL: model,
        }
        port = settings.prometheus_port
        if placement is not None:
            attributes[RANK_LABEL] = placement.rank
            attributes[WORLD_SIZE_LABEL] = placement.world_size
            # The ranks of one machine each serve /metrics: one port each, which
            # collectors/prometheus.yml lists as one target per rank.
            if port:
                port += placement.local_rank
        readers: list[MetricReader] = []
        # The periodic ones, which export on `force_flush` (benchmarks time an export).
        self.periodic_readers: list[PeriodicExportingMetricReader] = []
        self.metrics_port: int | None = None
        self.endpoint: MetricsEndpoint | None = None
        self._linger_s = settings.prometheus_linger_s
        self.final_scrape = FinalScrape.NOT_AWAITED
        if port is not None:
            # A registry of its own: two runs in one process must not share series.
            registry = CollectorRegistry(auto_describe=True)
            readers.append(
                PrometheusMetricReader(
                    scope_info_enabled=False,
                    resource_attribute_filter=RESOURCE_LABELS.__contains__,
                    registry=registry,
                )
            )
            credentials = settings.metrics.credentials()
            self.endpoint = MetricsEndpoint(
                registry,
                settings.prometheus_host,
                port,
                tls=settings.metrics.server_context(),
                credentials=credentials,
                arrays=[source.render for source in arrays],
            )
            self.metrics_port = self.endpoint.port
            logger.info(
                "observe: serving metrics at %s://%s:%d/metrics%s",
                self.endpoint.scheme,
                settings.prometheus_host,
                self.metrics_port,
                "" if credentials is None else " (basic auth)",
            )
        self.otlp: CountingExporter | None = None
        if settings.otlp_endpoint:
            self.otlp = CountingExporter(_otlp_exporter(settings.otlp_endpoint))
            exporters = (*exporters, self.otlp)
        interval_ms = settings.export_interval_s * 1000
        with signals.blocked():  # each reader starts its export thread here
            self.periodic_readers = [
                PeriodicExportingMetricReader(e, export_interval_millis=interval_ms)
                for e in exporters
            ]
        readers.extend(self.periodic_readers)
        # observe's LabelLimiter caps its instruments, counting what it cuts: the SDK's own
        # cap, which would fold series silently, stays above it.
        uncapped = View(meter_name=SCOPE, aggregation_cardinality_limit=MAX_LABEL_LIMIT)
        resource = Resource.create(attributes)
        self.provider = MeterProvider(resource=resource, metric_readers=readers, views=[uncapped])
        self._array_provider: MeterProvider | None = None
        if self.otlp is not None and arrays:
            from observe.telemetry.otlp_arrays import array_provider

            with signals.blocked():
                self._array_provider = array_provider(arrays, resource, self.otlp, interval_ms)

    def meter(self) -> Meter:
        return self.provider.get_meter(SCOPE)

    def await_final_scrape(self) -> None:
        """Once the run's final values are in: serves them until a scrape has read them
        (`_linger`), for at most `prometheus_linger_s`."""
        self.final_scrape = self._linger()

    def shutdown(self, timeout_s: float) -> None:
        """Exports a last time through every reader within `timeout_s`, then stops
        `/metrics`."""
        deadline = Deadline(timeout_s)
        if self._array_provider is not None:
            # First: it exports through the OTLP exporter, which the main provider closes.
            self._array_provider.shutdown(timeout_millis=deadline.left() * 1000)
        self.provider.shutdown(timeout_millis=deadline.left() * 1000)
        if self.endpoint is not None:
            self.endpoint.close()

    def _linger(self) -> FinalScrape:
        """Prometheus pulls: without a scrape after the final flush, it never sees the run's
        last window. A run nobody scraped is not kept waiting for a first scrape."""
        if self.endpoint is None or not self._linger_s or not self.endpoint.scrapes:
            return FinalScrape.NOT_AWAITED
        if self.endpoint.wait_for_next_scrape(self._linger_s):
            return FinalScrape.READ
        logger.warning(
            "observe: Prometheus did not scrape /metrics within %g s of the run's end, so it "
            "lacks the last window (the store has it): raise prometheus_linger_s to two "
            "scrape intervals",
            self._linger_s,
        )
        return FinalScrape.MISSED


def _otlp_exporter(endpoint: str) -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    if not endpoint.startswith(("http://", "https://")):
        raise ObserveError(
            f"--otlp-endpoint {endpoint!r} is not an http(s) URL: pass the Collector's "
            "OTLP/HTTP address, e.g. http://127.0.0.1:4318"
        )
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    # Cumulative whatever OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE says: Prometheus
    # remote write, where the Collector sends observe's figures, takes no deltas, and a
    # cumulative point lost on the way is made good by the next one.
    instruments = (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    )
    return OTLPMetricExporter(
        endpoint=endpoint.rstrip("/") + "/v1/metrics",
        preferred_temporality=dict.fromkeys(instruments, AggregationTemporality.CUMULATIVE),
    )
