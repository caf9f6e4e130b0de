"""Knowledge freshness: seconds since the serving model's training data ended."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from observe import catalogue
from observe.instruments import observable


def register_freshness(meter: Meter, trained_until: datetime) -> None:
    """A gauge read at collection time, so it grows while the model serves."""

    def read(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation((datetime.now(UTC) - trained_until).total_seconds())]

    observable(meter, catalogue.KNOWLEDGE_FRESHNESS, read)
