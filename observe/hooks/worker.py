"""The monitor's worker thread: flushed windows become statistics, handed to sinks."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from observe import priority
from observe.hooks.stats import LayerStats, RoutingStats, RoutingTotals, Window

if TYPE_CHECKING:
    import torch

    from observe.hooks.buffers import WindowSums

_Flushed = tuple["WindowSums", list["torch.Tensor"], int, int]

logger = logging.getLogger("observe")


class WindowSink(Protocol):
    """Receives the statistics of each flushed window, on the monitor's worker thread.

    A sink with a true `wants_hidden_states` attribute also gets each window's sample of
    pooled hidden states; for the others the monitor does not take one.
    """

    def consume(self, window: Window) -> None: ...


class WindowWorker:
    """Keeps a run's totals and gives each window's statistics to the sinks, off the
    training thread: it waits for the device copy, which the training loop must not."""

    def __init__(
        self,
        totals: RoutingTotals,
        names: list[str],
        drops_L: list[bool],
        attention_names: list[str],
        sinks: Sequence[WindowSink],
    ) -> None:
        self.totals = totals
        self.names = names
        self.drops_L = drops_L
        self.attention_names = attention_names
        self.sinks = tuple(sinks)
        self._windows: queue.Queue[_Flushed | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._failed_sinks: set[int] = set()
        self._failed = False
        # Time spent on windows (waiting for the device copy included), for benchmarks.
        self.busy_ns = 0

    def put(
        self, sums: WindowSums, hidden: list[torch.Tensor], first_step: int, last_step: int
    ) -> None:
        """`hidden`: each attention layer's window sample, copied by the same flush."""
        self._windows.put((sums, hidden, first_step, last_step))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="observe-flush", daemon=True)
            priority.start_background(self._thread)

    def total_stats(self) -> tuple[LayerStats, ...]:
        """Statistics of every window put so far; waits until they are processed."""
        self._windows.join()
        return self.totals.layer_stats(self.names, self.drops_L)

    def close(self) -> None:
        """Processes what was put, then stops the thread."""
        self._windows.put(None)
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while (item := self._windows.get()) is not None:
            sums, hidden, first_step, last_step = item
            started = time.perf_counter_ns()
            try:
                sums.wait()
                one = self.totals.add(sums)
                # A window of no step and no router call: a global monitor flushes one
                # whenever asked, as every rank must take part, but it tells sinks nothing.
                if self.sinks and (last_step >= first_step or bool(sums.calls_L.any())):
                    estimates = one.estimates()
                    stats = one.layer_stats(self.names, self.drops_L, estimates)
                    samples = {
                        # Empty when no sink wants the samples: the monitor took none.
                        name: rows.numpy()
                        for name, rows in zip(self.attention_names, hidden, strict=False)
                    }
                    routing = RoutingStats(first_step, last_step, stats, self.totals.sample_rate)
                    _, tokens_LE, histogram_LES = estimates
                    self._hand_to_sinks(Window(routing, samples, tokens_LE, histogram_LES))
            except Exception:
                # The thread lives on: were it to die, every later window would wait in the
                # queue for ever, and snapshot() and close() with them.
                if not self._failed:
                    self._failed = True
                    logger.exception("observe: a flushed window could not be processed")
            finally:
                self.busy_ns += time.perf_counter_ns() - started
                self._windows.task_done()
        self._windows.task_done()

    def _hand_to_sinks(self, window: Window) -> None:
        for sink in self.sinks:
            try:
                sink.consume(window)
            except Exception:
                # Logged once per sink: a broken sink must not flood the log every flush.
                if id(sink) not in self._failed_sinks:
                    self._failed_sinks.add(id(sink))
                    logger.exception(
                        "observe: sink %r failed; its later failures are not logged", sink
                    )
