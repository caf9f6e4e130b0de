"""A plain fine-tuning loop, written as a user's own would be: monitoring attaches from outside."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from opentelemetry.metrics import MeterProvider
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from observe import catalogue, instruments
from observe.errors import ObserveError
from observe.workload.data import BatchSampler
from observe.workload.job_config import TrainConfig
from observe.workload.model import MoETransformer


@dataclass(frozen=True)
class StepResult:
    step: int
    loss: float
    lm_loss: float
    aux_loss: float
    z_loss: float
    dropped_tokens: int
    lr: float
    tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def freeze_below(model: MoETransformer, k: int) -> None:
    """Freezes the embeddings and layers below `k`; the upper layers and final norm train."""
    n_layers = model.config.n_layers
    if not 0 <= k < n_layers:
        raise ObserveError(
            f"--freeze-below {k} is out of range: the model has {n_layers} layers, "
            f"so pass 0 (train all) to {n_layers - 1}"
        )
    if k == 0:
        return
    model.embed.requires_grad_(False)
    for layer in model.layers[:k]:
        layer.requires_grad_(False)


class Trainer:
    def __init__(
        self,
        model: MoETransformer,
        sampler: BatchSampler,
        config: TrainConfig,
        *,
        start_step: int = 0,
        optimizer_state: dict[str, Any] | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        """Loss and throughput go out through OpenTelemetry, to `meter_provider` or the
        global provider: a no-op unless the application configured one."""
        if start_step >= config.steps:
            raise ObserveError(
                f"the checkpoint has already trained {start_step} steps and --steps is "
                f"{config.steps}: pass a larger --steps to train further"
            )
        self.model = model
        self.sampler = sampler
        self.config = config
        self.step = start_step
        self.use_meter_provider(meter_provider)
        freeze_below(model, config.freeze_below)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            trainable, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95)
        )
        if optimizer_state is not None:
            try:
                self.optimizer.load_state_dict(optimizer_state)
            except ValueError as exc:
                raise ObserveError(
                    f"the checkpoint's optimizer state does not fit these trainable "
                    f"parameters ({exc}): resume with the --freeze-below it was trained with"
                ) from exc

    def train(
        self,
        on_step: Callable[[StepResult], None] | None = None,
        *,
        progress: bool = True,
    ) -> list[StepResult]:
        """Runs to `config.steps`; calls `on_step` after each optimizer step."""
        results = []
        columns = (
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task("train", total=self.config.steps, completed=self.step, stats="")
            while self.step < self.config.steps:
                result = self.train_step()
                results.append(result)
                bar.update(
                    task,
                    advance=1,
                    stats=f"loss {result.loss:.3f}  aux {result.aux_loss:.3f}  "
                    f"{result.tokens_per_s:,.0f} tok/s",
                )
                self._loss.set(result.lm_loss)
                self._tokens_per_s.set(result.tokens_per_s)
                if on_step is not None:
                    on_step(result)
        return results

    def use_meter_provider(self, meter_provider: MeterProvider | None) -> None:
        """Loss and throughput go to `meter_provider` from now on (None: the global one)."""
        meter = instruments.meter(meter_provider, "observe.workload")
        self._loss = instruments.gauge(meter, catalogue.TRAIN_LOSS)
        self._tokens_per_s = instruments.gauge(meter, catalogue.TRAIN_TOKENS_PER_SECOND)

    def train_step(self) -> StepResult:
        config = self.config
        self.model.train()
        device = next(self.model.parameters()).device
        lr = config.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        totals = torch.zeros(4)
        dropped = tokens = 0
        for _ in range(config.grad_accum):
            input_ids, labels = self.sampler.next_batch()
            tokens += input_ids.numel()
            out = self.model(input_ids.to(device), labels_BS=labels.to(device))
            assert out.loss is not None and out.lm_loss is not None
            (out.loss / config.grad_accum).backward()
            parts = [out.loss, out.lm_loss, out.aux_loss, out.z_loss]
            totals += torch.stack([p.detach().float().cpu() for p in parts])
            dropped += int(out.dropped_tokens_L.sum())
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss, lm_loss, aux_loss, z_loss = (totals / config.grad_accum).tolist()
        return StepResult(
            step=self.step,
            loss=loss,
            lm_loss=lm_loss,
            aux_loss=aux_loss,
            z_loss=z_loss,
            dropped_tokens=dropped,
            lr=lr,
            tokens=tokens,
            seconds=time.perf_counter() - started,
        )
