"""The reference workload's jobs, monitored: what `observe train`, `observe infer` and the
demo run.

Each job opens a monitoring session (store, /metrics, OTLP) and attaches to the workload's
model from outside, as a user's code would.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from observe.hooks.stats import RoutingStats
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.workload.finetune import FineTuneResult, prepare_fine_tune
from observe.workload.inference import InferenceEngine
from observe.workload.job_config import (
    FineTuneConfig,
    GenerationSettings,
    ServeConfig,
    TrainConfig,
)
from observe.workload.model import MoETransformer
from observe.workload.traffic import TrafficReport, TrafficSpec, plan_requests, replay


@dataclass(frozen=True)
class Training:
    result: FineTuneResult
    routing: RoutingStats
    run_id: str

    def format(self) -> str:
        lines = []
        if self.result.steps:
            steps = self.result.steps
            first, last = steps[0], steps[-1]
            tokens_per_s = sum(s.tokens for s in steps) / sum(s.seconds for s in steps)
            lines.append(
                f"trained to step {last.step} on {self.result.domain}: "
                f"loss {first.lm_loss:.3f} -> {last.lm_loss:.3f}, "
                f"aux loss {last.aux_loss:.3f}, {tokens_per_s:,.0f} tokens/s"
            )
        lines += [
            f"checkpoint: {self.result.checkpoint}  run: {self.run_id}",
            "routing while training:",
            self.routing.format(),
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class Serving:
    report: TrafficReport
    routing: RoutingStats
    run_id: str

    def format(self) -> str:
        return "\n".join(
            [
                self.report.format(),
                f"run: {self.run_id}",
                "routing while serving:",
                self.routing.format(),
            ]
        )


def train(
    settings: Settings,
    job: FineTuneConfig,
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
) -> Training:
    """Fine-tunes the reference model as one monitored run; the checkpoint goes to `out_dir`."""
    run_config = {"fine_tune": _plain(job), "train": _plain(config)}
    with MonitoringSession(settings, model=Path(out_dir).name, config=run_config) as session:
        fine_tune = prepare_fine_tune(config, job, out_dir, meter_provider=session.meter_provider)
        monitor = session.attach(fine_tune.model)
        result = fine_tune.run(lambda _: monitor.step(), progress=progress)
        routing = monitor.snapshot()
    return Training(result, routing, session.run_id)


def serve(
    settings: Settings,
    model: MoETransformer,
    model_name: str,
    config: ServeConfig,
    generation: GenerationSettings,
) -> Serving:
    """Replays `config`'s traffic through an inference engine, as one monitored run."""
    plan = plan_requests(
        TrafficSpec.parse(config.traffic),
        config.requests,
        repeat_share=config.repeat_share,
        seed=config.seed,
    )
    run_config = {"serve": _plain(config), "generation": _plain(generation)}
    with MonitoringSession(settings, model=model_name, config=run_config) as session:
        monitor = session.attach(model)
        with InferenceEngine(
            model,
            cache_size=config.cache_size,
            max_batch_size=config.max_batch_size,
            seed=config.seed,
            on_batch=monitor.step,
            meter_provider=session.meter_provider,
        ) as engine:
            report = replay(engine, plan, concurrency=config.concurrency, settings=generation)
        routing = monitor.snapshot()
    return Serving(report, routing, session.run_id)


def _plain(config: Any) -> dict[str, Any]:
    """A config as JSON values, for the run's record in the store."""
    return dict(json.loads(json.dumps(dataclasses.asdict(config), default=str)))
