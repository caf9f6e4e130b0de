"""A cap on label combinations per metric: OpenTelemetry Python keeps every one it sees."""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable

logger = logging.getLogger("observe")


class LabelLimiter:
    """Admits the first `limit` label combinations of each metric; counts what it refuses."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped_samples = 0
        self._seen: dict[str, set[Hashable]] = {}
        self._lock = threading.Lock()

    def admit(self, metric: str, labels: Hashable) -> bool:
        with self._lock:
            seen = self._seen.setdefault(metric, set())
            if labels in seen:
                return True
            if len(seen) < self.limit:
                seen.add(labels)
                return True
            if not self.dropped_samples:
                logger.warning(
                    "observe: %s has more than %d label combinations; further ones are "
                    "dropped and counted in observe_pipeline_dropped_samples_total"
                    '{reason="label_limit"} (raise label_limit to keep them)',
                    metric,
                    self.limit,
                )
            self.dropped_samples += 1
            return False
