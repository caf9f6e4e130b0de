"""The reference workload's jobs, monitored: what `observe train`, `observe infer` and the
demo run.

Each job opens a monitoring session (store, /metrics, OTLP) and attaches to the workload's
model from outside, as a user's code would. Training ends by recording the checkpoint's
drift baseline; serving scores drift against it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from observe.drift.baseline import Baseline
from observe.drift.config import DriftConfig
from observe.errors import ObserveError
from observe.hooks.config import MonitorConfig
from observe.hooks.monitor import Monitor, attach
from observe.hooks.stats import RoutingStats
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.store.baselines import StoredDrift, drift_results
from observe.store.engine import connect, resolve_url
from observe.store.storable import check
from observe.workload.data import reference_prompts
from observe.workload.finetune import FineTuneResult, prepare_fine_tune
from observe.workload.inference import InferenceEngine, Response
from observe.workload.job_config import (
    FineTuneConfig,
    GenerationSettings,
    ServeConfig,
    ServerConfig,
    TrainConfig,
)
from observe.workload.model import MoETransformer
from observe.workload.tokenizer import ByteTokenizer
from observe.workload.traffic import (
    PlannedRequest,
    TrafficReport,
    TrafficSpec,
    plan_requests,
    replay,
)

logger = logging.getLogger("observe")

# Reference prompts a training run's baseline samples, and how many go through at once.
BASELINE_PROMPTS = 5000
BASELINE_BATCH = 64
# Keeps the baseline's prompts apart from the ones `observe infer` draws (seed 0, 1, ...).
BASELINE_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class Training:
    result: FineTuneResult
    routing: RoutingStats
    run_id: str
    baseline: Baseline

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
            f"drift baseline {self.baseline.id} for model {self.baseline.model!r}: "
            f"{BASELINE_PROMPTS} reference prompts of {self.result.domain}",
            "routing while training:",
            self.routing.format(),
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class Phase:
    """One phase of a traffic mix, and the monitor steps that served it."""

    index: int
    mix: str
    first_step: int
    last_step: int


@dataclass(frozen=True)
class Serving:
    report: TrafficReport
    routing: RoutingStats
    run_id: str
    phases: tuple[Phase, ...]
    # Every drift score of the run, from the store; empty when drift was off.
    drift: tuple[StoredDrift, ...]

    def format(self) -> str:
        lines = [self.report.format(), f"run: {self.run_id}"]
        if self.drift:
            lines.append("drift per traffic phase (windows over the threshold, mean score):")
            lines += [self._phase_drift(phase) for phase in self.phases]
        lines += ["routing while serving:", self.routing.format()]
        return "\n".join(lines)

    def _phase_drift(self, phase: Phase) -> str:
        scores = [
            d for d in self.drift if phase.first_step <= (d.last_step or 0) <= phase.last_step
        ]
        parts = []
        for method in sorted({d.method for d in scores}):
            of_method = [d for d in scores if d.method == method]
            mean = sum(d.score for d in of_method) / len(of_method)
            drifted = sum(d.drifted for d in of_method)
            if judged := [d for d in of_method if d.threshold is not None]:
                parts.append(f"{method} {drifted}/{len(judged)} over, mean {mean:.3f}")
            else:
                parts.append(f"{method} mean {mean:.3f}")
        return f"phase {phase.index + 1} ({phase.mix}): {'; '.join(parts) or 'no window scored'}"


def train(
    settings: Settings,
    job: FineTuneConfig,
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
) -> Training:
    """Fine-tunes the reference model as one monitored run; the checkpoint goes to
    `out_dir`, and its drift baseline becomes the model's active one."""
    model_name = Path(out_dir).name
    # Both go into the store, the data's name only with the baseline once training is done.
    check("model name (the --out directory's name)", model_name, identifier=True)
    check("training data's name", job.source)
    run_config = {"fine_tune": _plain(job), "train": _plain(config)}
    # Built first: bad input (data, model size, resume, steps) fails before a run exists.
    fine_tune = prepare_fine_tune(config, job, out_dir)
    with MonitoringSession(settings, model=model_name, config=run_config) as session:
        fine_tune.trainer.use_meter_provider(session.meter_provider)
        monitor = session.attach(fine_tune.model)
        result = fine_tune.run(lambda _: monitor.step(), progress=progress)
        routing = monitor.snapshot()
        monitor.close()
        prompts = reference_prompts(
            job.domain,
            None if job.data is None else str(job.data),
            BASELINE_PROMPTS,
            config.seed + BASELINE_SEED_OFFSET,
        )
        baseline = record_baseline(
            result.model,
            prompts,
            settings.monitor,
            name=model_name,
            live_methods=settings.drift.methods,
            checkpoint=str(result.checkpoint),
            domain=result.domain,
            trained_until=result.trained_until,
            run_id=session.run_id,
        ).save(session.store)
    return Training(result, routing, session.run_id, baseline)


def record_baseline(
    model: MoETransformer,
    prompts: Sequence[str],
    monitor_config: MonitorConfig,
    *,
    name: str,
    live_methods: Sequence[str] = DriftConfig().methods,
    checkpoint: str | None = None,
    domain: str | None = None,
    trained_until: datetime | None = None,
    run_id: str | None = None,
) -> Baseline:
    """The model's drift baseline: `prompts` through it as served traffic would go (left
    padded, no generation), sampled by a monitor of its own; calibrated at every window
    size for `live_methods`, those serving will score."""
    config = dataclasses.replace(
        monitor_config,
        reservoir_size=len(prompts),
        metrics=frozenset({"routing", "hidden_states"}),
        hidden_state_sample_rate=1.0,
        router_sample_rate=1.0,
    )
    tokenizer = ByteTokenizer()
    device = model.lm_head.weight.device
    limit = model.config.max_seq_len
    model.eval()
    with attach(model, config) as monitor, torch.inference_mode():
        for start in range(0, len(prompts), BASELINE_BATCH):
            input_ids, mask = tokenizer.encode_batch(prompts[start : start + BASELINE_BATCH])
            model(input_ids[:, -limit:].to(device), attention_mask=mask[:, -limit:].to(device))
            monitor.step()
        return Baseline.capture(
            monitor,
            model=name,
            live_methods=live_methods,
            checkpoint=checkpoint,
            domain=domain,
            trained_until=trained_until,
            run_id=run_id,
        )


def serve(
    settings: Settings,
    model: MoETransformer,
    model_name: str,
    config: ServeConfig,
    generation: GenerationSettings,
    *,
    drift: DriftConfig | None = None,
    trained_until: datetime | None = None,
) -> Serving:
    """Replays `config`'s traffic through an inference engine, as one monitored run, phase
    by phase; with `drift`, each window is scored against the model's active baseline."""
    spec = TrafficSpec.parse(config.traffic)
    plan = plan_requests(spec, config.requests, repeat_share=config.repeat_share, seed=config.seed)
    run_config = {"serve": _plain(config), "generation": _plain(generation)}
    with MonitoringSession(settings, model=model_name, config=run_config) as session:
        monitor = _attach_serving(session, model, drift, trained_until)
        phases: list[Phase] = []
        responses: list[tuple[PlannedRequest, Response]] = []
        seconds = 0.0
        with _monitored_engine(session, model, monitor, config) as engine:
            for index, phase in enumerate(spec.phases):
                requests = [p for p in plan if p.phase == index]
                if not requests:
                    continue
                first_step = monitor.step_count + 1
                report = replay(
                    engine, requests, concurrency=config.concurrency, settings=generation
                )
                # No window spans two phases, nor does a drift window: drift per phase reads
                # clean ones. The engine steps the monitor after its answers: joined first,
                # so that no step comes after the phase's flush. The snapshot waits until
                # the phase's last window reached the drift sink, so that the cut comes after.
                engine.join()
                monitor.snapshot()
                if monitor.drift is not None:
                    monitor.drift.cut()
                mix = ",".join(
                    f"{d}={w:g}" for d, w in zip(phase.domains, phase.weights, strict=True)
                )
                phases.append(Phase(index, mix, first_step, monitor.step_count))
                responses += report.responses
                seconds += report.seconds
        routing = monitor.snapshot()
    scores = _stored_drift(settings, session.run_id) if drift else ()
    return Serving(
        TrafficReport(tuple(responses), seconds), routing, session.run_id, tuple(phases), scores
    )


def serve_http(
    settings: Settings,
    model: MoETransformer,
    model_name: str,
    config: ServerConfig,
    *,
    drift: DriftConfig | None = None,
    trained_until: datetime | None = None,
) -> str:
    """Serves `model` over an OpenAI-compatible HTTP API until SIGTERM or Ctrl-C, as one
    monitored run, each window scored for drift against the model's active baseline when
    `drift` is given; returns the run's id once it ended."""
    # Imported here: only this job needs FastAPI and uvicorn.
    from observe.workload.server import http
    from observe.workload.server.app import Service, Slots, create_app
    from observe.workload.server.figures import ServerFigures
    from observe.workload.server.openai_api import ServedModel

    sock = http.bind(config.host, config.port)
    run_config = {"server": _plain(config)}
    with (
        contextlib.closing(sock),
        MonitoringSession(settings, model=model_name, config=run_config) as session,
    ):
        monitor = _attach_serving(session, model, drift, trained_until)
        with _monitored_engine(session, model, monitor, config) as engine:
            served = ServedModel(model_name, model.config.max_seq_len, int(time.time()))
            service = Service(
                engine, served, ServerFigures(session.meter_provider), Slots(config.max_queue)
            )
            host, port = sock.getsockname()[:2]
            logger.info(
                "observe: OpenAI-compatible API of %s at http://%s:%d/v1 (run %s); try:\n  curl -s "
                "http://%s:%d/v1/completions -H 'Content-Type: application/json' "
                '-d \'{"model": "%s", "prompt": "Hello", "max_tokens": 16}\'',
                model_name, host, port, session.run_id, host, port, model_name,
            )  # fmt: skip

            def draining() -> None:
                service.ready = False

            # What start-up made (imports, the model, the session) stays for the server's
            # life: out of the collector's full passes, which walk every tracked object while
            # the model's thread waits. observe's imports alone take a full pass from 201k
            # objects to 539k (92 to 252 ms here).
            gc.freeze()
            try:
                http.Server(create_app(service), config.drain_s, draining).run(sockets=[sock])
            finally:
                # A caller that goes on (a test, a notebook) collects them again.
                gc.unfreeze()
    return session.run_id


def _monitored_engine(
    session: MonitoringSession,
    model: MoETransformer,
    monitor: Monitor,
    config: ServeConfig | ServerConfig,
) -> InferenceEngine:
    """An engine whose batches are the monitor's steps and whose figures join the run's."""
    return InferenceEngine(
        model,
        cache_size=config.cache_size,
        max_batch_size=config.max_batch_size,
        seed=config.seed,
        on_batch=monitor.step,
        meter_provider=session.meter_provider,
    )


def _attach_serving(
    session: MonitoringSession,
    model: MoETransformer,
    drift: DriftConfig | None,
    trained_until: datetime | None,
) -> Monitor:
    if drift is not None:
        try:
            baseline = Baseline.load(session.store, model=session.model)
        except ObserveError as exc:
            logger.warning("observe: drift is off: %s", exc)
        else:
            return session.attach(
                model, drift=drift, baseline=baseline, trained_until=trained_until
            )
    return session.attach(model, trained_until=trained_until)


def _stored_drift(settings: Settings, run_id: str) -> tuple[StoredDrift, ...]:
    """The run's drift scores as the store has them, once its delivery has closed."""
    try:
        engine = connect(resolve_url(settings.db_url))
    except ObserveError as exc:
        logger.warning("observe: cannot read run %s's drift back: %s", run_id, exc)
        return ()
    try:
        return tuple(drift_results(engine, run_id))
    finally:
        engine.dispose()


def _plain(config: Any) -> dict[str, Any]:
    """A config as JSON values, for the run's record in the store."""
    return dict(json.loads(json.dumps(dataclasses.asdict(config), default=str)))
