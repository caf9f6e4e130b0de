"""One fine-tuning job from data to checkpoint: what `observe train` and the demo run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from opentelemetry.metrics import MeterProvider

from observe.errors import ObserveError
from observe.workload.checkpoint import load_checkpoint, save_checkpoint
from observe.workload.config import DEFAULT_MODEL_SIZE, describe_config, get_config
from observe.workload.data import BatchSampler, domain_texts, pack_documents
from observe.workload.job_config import FineTuneConfig, TrainConfig
from observe.workload.model import MoETransformer
from observe.workload.tokenizer import ByteTokenizer
from observe.workload.trainer import StepResult, Trainer


@dataclass(frozen=True)
class FineTuneResult:
    checkpoint: Path
    model: MoETransformer
    steps: list[StepResult]
    domain: str
    # When the training data ended, as the checkpoint records it.
    trained_until: dt.datetime


@dataclass
class FineTuneJob:
    """A model and trainer ready to run: monitoring attaches to `model` before `run`."""

    model: MoETransformer
    trainer: Trainer
    out_dir: Path
    # The training data's domain, or the data file's name.
    domain: str

    def run(
        self, on_step: Callable[[StepResult], None] | None = None, *, progress: bool = True
    ) -> FineTuneResult:
        """Trains to the configured step count and saves a checkpoint in `out_dir`."""
        steps = self.trainer.train(on_step, progress=progress)
        trained_until = dt.datetime.now(dt.UTC)
        path = save_checkpoint(
            self.out_dir,
            self.model,
            step=self.trainer.step,
            domain=self.domain,
            optimizer=self.trainer.optimizer,
            trained_until=trained_until,
        )
        return FineTuneResult(path, self.model, steps, self.domain, trained_until)


def prepare_fine_tune(
    train_config: TrainConfig,
    job: FineTuneConfig,
    out_dir: str | os.PathLike[str],
    *,
    meter_provider: MeterProvider | None = None,
) -> FineTuneJob:
    """Builds the model, data and trainer for a built-in domain or a user's file.

    With `job.resume`, the checkpoint's weights, optimizer state and step carry on to
    `train_config.steps` in all; a `job.model_size` that differs from its model is an error.
    """
    data_file = None if job.data is None else str(job.data)
    texts = domain_texts(job.domain, data_file, job.docs, train_config.seed)
    torch.manual_seed(train_config.seed)
    if job.resume is None:
        model = MoETransformer(
            get_config(job.model_size or DEFAULT_MODEL_SIZE, capacity_factor=job.capacity_factor)
        )
        start_step, optimizer_state = 0, None
    else:
        checkpoint = load_checkpoint(job.resume)
        # The capacity is no part of a model's size: a resumed run may set another.
        if job.capacity_factor is not None:
            checkpoint = dataclasses.replace(
                checkpoint,
                config=dataclasses.replace(checkpoint.config, capacity_factor=job.capacity_factor),
            )
        shape = dataclasses.replace(checkpoint.config, capacity_factor=None)
        if job.model_size is not None and get_config(job.model_size) != shape:
            raise ObserveError(
                f"--model-size {job.model_size} does not match the checkpoint in "
                f"{job.resume}, whose model is {describe_config(checkpoint.config)}: leave "
                "--model-size out to resume it, or train a new model without --resume"
            )
        model = checkpoint.build_model()
        start_step, optimizer_state = checkpoint.step, checkpoint.optimizer_state
    train_config = train_config.for_model(model.config.max_seq_len)
    assert train_config.seq_len is not None
    rows = pack_documents(texts, ByteTokenizer(), train_config.seq_len)
    # A resumed run draws fresh batches rather than replaying the first run's.
    sampler = BatchSampler(rows, train_config.batch_size, seed=train_config.seed + start_step)
    trainer = Trainer(
        model,
        sampler,
        train_config,
        start_step=start_step,
        optimizer_state=optimizer_state,
        meter_provider=meter_provider,
    )
    return FineTuneJob(model, trainer, Path(out_dir), job.source)
