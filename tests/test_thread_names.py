"""observe's threads carry their names to the operating system, where `top -H`, `ps -L`
and perf show them; the thread that starts them keeps its own."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from observe import signals
from observe.thread_names import MAX_OS_NAME_BYTES
from observe.workload.config import get_config
from observe.workload.inference import InferenceEngine
from observe.workload.model import MoETransformer

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="threads are named on Linux")


def os_name(native_id: int | None) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().rstrip("\n")


@contextmanager
def started(name: str) -> Iterator[threading.Thread]:
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name=name)
    signals.start(thread)
    try:
        yield thread
    finally:
        release.set()
        thread.join()


def test_a_started_thread_has_its_name_for_the_os_and_its_starter_keeps_its_own() -> None:
    own = os_name(threading.get_native_id())
    with started("observe-drift") as thread:
        assert os_name(thread.native_id) == "observe-drift"
    assert os_name(threading.get_native_id()) == own


def test_a_long_name_is_cut_to_what_the_kernel_keeps() -> None:
    with started("observe-inference") as thread:
        assert os_name(thread.native_id) == "observe-inference"[:MAX_OS_NAME_BYTES]


def test_the_engine_thread_shows_under_its_name() -> None:
    model = MoETransformer(get_config("tiny")).eval()
    with InferenceEngine(model, max_batch_size=2) as engine:
        engine.generate("hello", max_new_tokens=2)
        names = {path.read_text().rstrip("\n") for path in Path("/proc/self/task").glob("*/comm")}
    assert "observe-inference"[:MAX_OS_NAME_BYTES] in names
