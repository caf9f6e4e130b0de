"""The demo: fine-tune on one domain, then serve traffic that shifts to another, monitored.

It uses observe as a user's application would: the workload knows nothing of monitoring,
and a monitoring session attaches to its model from outside, one run for training and one
for serving, each with its store records and `/metrics` endpoint.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from observe.hooks import Snapshot
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.workload.finetune import FineTuneResult, prepare_fine_tune
from observe.workload.generation import GenerationSettings
from observe.workload.inference import InferenceEngine
from observe.workload.traffic import TrafficReport, TrafficSpec, plan_requests, replay
from observe.workload.trainer import TrainConfig


@dataclass(frozen=True)
class DemoConfig:
    model: str = "small"
    domain: str = "medical"
    # Serving starts on the training domain and shifts halfway: real drift to monitor.
    traffic: str = "medical;finance"
    train_steps: int = 120
    batch_size: int = 8
    seq_len: int = 128
    requests: int = 200
    repeat_share: float = 0.3
    concurrency: int = 8
    max_new_tokens: int = 24
    seed: int = 0


@dataclass(frozen=True)
class DemoResult:
    training: FineTuneResult
    serving: TrafficReport
    training_routing: Snapshot
    serving_routing: Snapshot
    runs: tuple[str, str]

    def format(self) -> str:
        steps = self.training.steps
        first, last = steps[0], steps[-1]
        tokens_per_s = sum(s.tokens for s in steps) / sum(s.seconds for s in steps)
        return "\n".join(
            [
                f"trained {last.step} steps on {self.training.domain}: "
                f"loss {first.lm_loss:.3f} -> {last.lm_loss:.3f}, "
                f"aux loss {last.aux_loss:.3f}, {tokens_per_s:,.0f} tokens/s",
                f"checkpoint: {self.training.checkpoint}",
                f"runs in the store: {self.runs[0]} (training), {self.runs[1]} (serving)",
                "routing while training:",
                self.training_routing.format(),
                self.serving.format(),
                "routing while serving:",
                self.serving_routing.format(),
            ]
        )


def run_demo(
    config: DemoConfig,
    out_dir: str | os.PathLike[str],
    settings: Settings,
    *,
    progress: bool = True,
) -> DemoResult:
    spec = TrafficSpec.parse(config.traffic)
    model_name = Path(out_dir).name
    with MonitoringSession(settings, model=model_name, config=dataclasses.asdict(config)) as train:
        job = prepare_fine_tune(
            TrainConfig(
                steps=config.train_steps,
                batch_size=config.batch_size,
                seq_len=config.seq_len,
                seed=config.seed,
            ),
            out_dir,
            config_name=config.model,
            domain=config.domain,
            meter_provider=train.meter_provider,
        )
        monitor = train.attach(job.model)
        training = job.run(lambda _: monitor.step(), progress=progress)
        training_routing = monitor.snapshot()

    plan = plan_requests(spec, config.requests, repeat_share=config.repeat_share, seed=config.seed)
    generation = GenerationSettings(max_new_tokens=config.max_new_tokens)
    with MonitoringSession(settings, model=model_name, config={"traffic": config.traffic}) as serve:
        monitor = serve.attach(training.model)
        with InferenceEngine(
            training.model,
            seed=config.seed,
            on_batch=monitor.step,
            meter_provider=serve.meter_provider,
        ) as engine:
            serving = replay(engine, plan, concurrency=config.concurrency, settings=generation)
        serving_routing = monitor.snapshot()
    return DemoResult(
        training, serving, training_routing, serving_routing, (train.run_id, serve.run_id)
    )
