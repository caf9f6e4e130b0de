"""observe's background threads at the lowest CPU priority, so that they take the cores the
model leaves idle rather than the model's.

Drift scoring, the alert evaluator, store delivery and the monitor's window worker run
beside a model whose own threads keep every core busy. At the same priority the kernel
shares a core between them, and a torch operator split over every core then waits for the
thread that lost its core. At nice 19 they run where the model leaves a core idle (between
batches, while its thread waits for the interpreter lock) and on about 1.5% of a busy one.
Measured in benchmarks/serve_load.py on 2 cores: one run with every background thread at
nice 19 (OpenTelemetry's and /metrics' too) cost 1.1% of throughput, CPU time per request
1.005 of the bare server's; three runs as shipped cost 2.3-4.6%, 1.020-1.042, against
2.7-3.2% and 1.024-1.028 at the same priority: within that machine's noise, not yet shown.
The hooks and their folds stay on the model's own threads, and /metrics keeps its priority
to answer scrapes in time.

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
