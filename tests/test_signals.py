"""Every thread a monitored run starts blocks SIGINT and SIGTERM, so they reach the main
thread: one that lands on another thread would not wake a main thread that sleeps or waits,
and Ctrl-C or SIGTERM would seem ignored until the wait ends."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch

from observe.drift.baseline import Baseline
from observe.hooks.config import MonitorConfig
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.workload.config import get_config
from observe.workload.inference import InferenceEngine
from observe.workload.model import MoETransformer


def blocked_signals(thread: threading.Thread) -> set[int]:
    """The signals `thread` blocks, from the kernel's view of it."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    mask = int(
        next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16
    )
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def test_every_thread_of_a_monitored_run_leaves_signals_to_the_main_thread(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'observe.db'}",
        prometheus_port=0,
        spool_dir=tmp_path / "spool",
        prometheus_linger_s=0,
        monitor=MonitorConfig(flush_every=1),
    )
    before = set(threading.enumerate())
    with MonitoringSession(settings, model="tiny") as session:
        with torch.no_grad():
            monitor = session.attach(model)
            for _ in range(2):  # 128 sequences: a baseline's fewest
                model(torch.randint(3, 250, (64, 16)))
                monitor.step()
            reference = Baseline.capture(monitor, model="tiny", methods=("distance",))
        monitor.close()
        drifting = session.attach(model, baseline=reference)
        with InferenceEngine(model, meter_provider=session.meter_provider) as engine:
            engine.generate("Patient", 2)
            drifting.step()
            started = [t for t in threading.enumerate() if t not in before and t.is_alive()]
            names = {t.name for t in started}
            assert {"observe-delivery", "observe-flush", "observe-drift", "observe-metrics",
                    "observe-inference"} <= names, names  # fmt: skip
            leaking = [t.name for t in started if not {signal.SIGINT, signal.SIGTERM}
                       <= blocked_signals(t)]  # fmt: skip
    assert not leaking, leaking
    # The main thread itself still takes them.
    assert signal.SIGTERM not in blocked_signals(threading.main_thread())
