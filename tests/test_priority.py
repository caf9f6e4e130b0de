"""observe's background threads run at the lowest CPU priority; the model's do not."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from observe import priority
from observe.drift.baseline import Baseline
from observe.drift.live import DriftSink

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="priorities are set on Linux")


def nice(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


def test_a_background_thread_starts_at_the_lowest_priority_and_its_starter_keeps_its_own() -> None:
    own = nice(threading.current_thread())
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    priority.start_background(thread)
    try:
        assert nice(thread) == priority.BACKGROUND_NICE
        assert nice(threading.current_thread()) == own
    finally:
        release.set()
        thread.join()


def test_the_drift_thread_is_a_background_thread() -> None:
    rng = np.random.default_rng(0)
    baseline = Baseline.from_samples(
        {"attention": rng.normal(size=(400, 8))},
        {},
        model="synthetic",
        window_rows=64,
        methods=("distance",),
        live_methods=("distance",),
    )
    sink = DriftSink(baseline)
    try:
        assert nice(sink._thread) == priority.BACKGROUND_NICE
    finally:
        sink.close()
