"""The pipeline's own health, as metrics: deliveries, failures, spool, drops."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from observe import catalogue
from observe.instruments import observable
from observe.store.delivery import Delivery
from observe.telemetry.limits import LabelLimiter
from observe.telemetry.provider import CountingExporter
from observe.telemetry.store_exporter import StoreExporter

Reading = Callable[[], Iterable[tuple[float, dict[str, str]]]]


def register_health(
    meter: Meter,
    delivery: Delivery,
    limiter: LabelLimiter,
    exporter: StoreExporter,
    otlp: CountingExporter | None = None,
) -> None:
    def exports() -> Iterable[tuple[float, dict[str, str]]]:
        yield delivery.stats().exports_attempted, catalogue.EXPORTS.attributes("store")
        if otlp is not None:
            yield otlp.attempted, catalogue.EXPORTS.attributes("otlp")

    def failures() -> Iterable[tuple[float, dict[str, str]]]:
        yield delivery.stats().exports_failed, catalogue.EXPORT_FAILURES.attributes("store")
        if otlp is not None:
            yield otlp.failed, catalogue.EXPORT_FAILURES.attributes("otlp")

    def spooled() -> Iterable[tuple[float, dict[str, str]]]:
        yield delivery.stats().spooled_samples, {}

    def dropped() -> Iterable[tuple[float, dict[str, str]]]:
        dropped = catalogue.DROPPED_SAMPLES
        yield delivery.stats().dropped_samples, dropped.attributes(catalogue.SPOOL_FULL)
        yield limiter.dropped_samples, dropped.attributes(catalogue.LABEL_LIMIT)
        yield exporter.refused_samples, dropped.attributes(catalogue.UNSTORABLE_LABEL)

    observable(meter, catalogue.EXPORTS, _observe(exports))
    observable(meter, catalogue.EXPORT_FAILURES, _observe(failures))
    observable(meter, catalogue.SPOOLED_SAMPLES, _observe(spooled))
    observable(meter, catalogue.DROPPED_SAMPLES, _observe(dropped))


def _observe(reading: Reading) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, labels) for value, labels in reading()]

    return callback
