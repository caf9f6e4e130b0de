"""The demo: fine-tune on one domain, then serve traffic that shifts to another, monitored.

Two monitored runs, one for training and one for serving, each with its store records and
`/metrics` endpoint, run exactly as `observe train` and `observe infer` run them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from observe import jobs
from observe.settings import Settings
from observe.workload.job_config import DemoConfig


@dataclass(frozen=True)
class DemoResult:
    training: jobs.Training
    serving: jobs.Serving

    def format(self) -> str:
        return f"{self.training.format()}\n{self.serving.format()}"


def run_demo(
    config: DemoConfig,
    out_dir: str | os.PathLike[str],
    settings: Settings,
    *,
    progress: bool = True,
) -> DemoResult:
    training = jobs.train(settings, config.fine_tune, config.train, out_dir, progress=progress)
    serving = jobs.serve(
        settings,
        training.result.model,
        Path(out_dir).name,
        config.serve,
        config.generation,
        drift=settings.drift,
        trained_until=training.result.trained_until,
    )
    return DemoResult(training, serving)
