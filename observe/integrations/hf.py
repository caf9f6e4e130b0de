"""observe in a Hugging Face `transformers.Trainer`.

callback = ObserveCallback()
Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
stats = callback.last_snapshot
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from observe.errors import ObserveError
from observe.hooks import Monitor, MonitorConfig, RouterAdapter, Snapshot, WindowSink, attach


class ObserveCallback(TrainerCallback):
    """Attaches a monitor when training begins, steps it after every optimizer step (so one
    step spans all of its gradient-accumulation micro-batches) and closes it at train end.

    `monitor` is None until training begins; `last_snapshot` holds the statistics of the
    whole run, taken just before the monitor closes.
    """

    def __init__(
        self,
        config: MonitorConfig | None = None,
        *,
        sinks: Sequence[WindowSink] = (),
        adapter: RouterAdapter | None = None,
    ) -> None:
        self.config = config
        self.sinks = tuple(sinks)
        self.adapter = adapter
        self.monitor: Monitor | None = None
        self.last_snapshot: Snapshot | None = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if model is None:
            raise ObserveError(
                "ObserveCallback got no model when training began: give the Trainer a model "
                "(Trainer(model=...) or model_init=...)"
            )
        if self.monitor is not None:
            # A train() that raised never reached on_train_end: its hooks are still on.
            self.monitor.close()
        self.monitor = attach(model, self.config, adapter=self.adapter, sinks=self.sinks)
        self.last_snapshot = None

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self.monitor is not None:
            self.monitor.step()

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self.monitor is not None:
            self.last_snapshot = self.monitor.snapshot()
            self.monitor.close()
