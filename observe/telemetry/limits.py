"""A cap on label combinations per metric, sized to the model unless one is configured.

OpenTelemetry's SDK has a cap of its own (2,000 attribute sets per instrument by default)
past which it folds series, silently, into one `otel_metric_overflow` series. observe's
instruments are capped here instead, where every refusal is counted and logged, and the
SDK's cap on them is raised to `MAX_LABEL_LIMIT`, which this one never exceeds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable

from observe.catalogue import LABEL_LIMIT

logger = logging.getLogger("observe")

# Far past what one Prometheus target should carry: only a guard against runaway labels.
MAX_LABEL_LIMIT = 1_000_000


class LabelLimiter:
    """Admits the first `limit` label combinations of each metric; counts what it refuses.

    With `configured` None, the limit is sized to the models attached (`fit`)."""

    def __init__(self, configured: int | None = None) -> None:
        self.configured = configured
        self.limit = configured or 0
        self.dropped_samples = 0
        self._seen: dict[str, set[Hashable]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def fit(self, combinations: int) -> None:
        """Makes room for a model's `combinations` per metric, unless a limit was configured."""
        if self.configured is None:
            with self._lock:
                self.limit = min(max(self.limit, combinations), MAX_LABEL_LIMIT)

    def admit_shape(self, metric: str, points: int) -> int:
        """How many of a dense family's `points` are admitted, the first in row-major
        order: its whole shape is admitted once (at fit), not each label set each window."""
        with self._lock:
            kept = min(points, self.limit)
        if kept < points:
            self._warn(metric)
        return kept

    def refuse(self, samples: int) -> None:
        """Counts `samples` refused by a shape admitted with `admit_shape`."""
        with self._lock:
            self.dropped_samples += samples

    def admit(self, metric: str, labels: Hashable) -> bool:
        with self._lock:
            seen = self._seen.setdefault(metric, set())
            if labels in seen:
                return True
            if len(seen) < self.limit:
                seen.add(labels)
                return True
            self.dropped_samples += 1
        self._warn(metric)
        return False

    def _warn(self, metric: str) -> None:
        with self._lock:
            if metric in self._warned:
                return
            self._warned.add(metric)
        logger.warning(
            "observe: %s has more than %d label combinations (label_limit); further "
            "ones are dropped and counted in observe_pipeline_dropped_samples_total"
            '{reason="%s"}: raise label_limit, leave it unset to size it from the '
            'model, or cut per-expert series with prometheus_detail = "layer"',
            metric,
            self.limit,
            LABEL_LIMIT,
        )
