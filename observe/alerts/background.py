"""The alert evaluator of a monitored run: a daemon thread that evaluates the rules on the
run's stored series every interval, and once more when stopped, and records in the store
when alerts fire and resolve.

It never raises into the run: a failed evaluation is logged (once until one succeeds) and
tried again at the next interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

from observe import priority
from observe.alerts.evaluate import Evaluator
from observe.alerts.rules import Rule
from observe.store import alerting
from observe.store.engine import connect

logger = logging.getLogger("observe")


class BackgroundEvaluator:
    def __init__(self, rules: Iterable[Rule], url: str, run_id: str, interval_s: float) -> None:
        self._rules = tuple(rules)
        self._url = url
        self._run_id = run_id
        # Made at the first evaluation, on the thread: connecting never holds up the run.
        self._evaluator: Evaluator | None = None
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name="observe-alerts", daemon=True)
        priority.start_background(self._thread)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.evaluate()
        # Stopped by shutdown, which comes after delivery: the run's last samples are in.
        self.evaluate()
        if self._evaluator is not None:
            self._evaluator.engine.dispose()

    def evaluate(self, at: datetime | None = None) -> None:
        """Evaluates every rule at `at` (default now) and records what fired or resolved."""
        try:
            if self._evaluator is None:
                # An engine of its own: the session's Store is not thread-safe.
                self._evaluator = Evaluator(self._rules, connect(self._url), self._run_id)
            _, events = self._evaluator.evaluate(at or datetime.now(UTC))
            alerting.record_events(self._evaluator.engine, events)
        except Exception as exc:  # whatever broke, the run goes on; the next interval retries
            if not self._failing:
                logger.warning("observe: alert evaluation failed, retrying each interval: %s", exc)
            self._failing = True
        else:
            self._failing = False

    def shutdown(self, timeout_s: float) -> None:
        """Stops the thread, which evaluates a last time, and waits for it at most
        `timeout_s`: a store that stopped answering holds up that thread, never the caller."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning(
                "observe: the last alert evaluation did not finish in time (the store did not "
                "answer): alerts at the run's end are not recorded"
            )
