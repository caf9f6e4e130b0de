"""observe's background threads at the lowest CPU priority: they never take a core from the
model they monitor.

Drift scoring, the alert evaluator, store delivery and the monitor's window worker run
beside a model whose own threads keep every core busy. At the same priority the kernel
shares a core between them, and a torch operator split over every core then waits for the
thread that lost its core: on `observe serve`'s 2 cores, each CPU second of observe's work
cost the model more than that. At nice 19 they run on the cores the model leaves idle
(between batches, while its thread waits for the interpreter lock) and on about 1.5% of a
busy one; benchmarks/serve_load.py measured the monitored server's CPU time per request at
1.005 of the bare server's, against 1.024-1.030 at the same priority. The hooks and their
folds stay on the model's own threads, and /metrics keeps its priority, to answer scrapes.

Linux only: elsewhere the threads keep their priority.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

from observe import signals

BACKGROUND_NICE = 19


def start_background(thread: threading.Thread) -> None:
    """Starts `thread` as `signals.start` does, at nice `BACKGROUND_NICE`."""
    signals.start(thread)
    # On Linux a thread's id names it to setpriority; elsewhere it could name a process.
    if sys.platform != "linux" or thread.native_id is None:
        return
    # Gone already, or a sandbox that refuses: it runs at its starter's priority.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, thread.native_id, BACKGROUND_NICE)
