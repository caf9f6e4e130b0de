"""observe in a Hugging Face `transformers.Trainer`.

callback = ObserveCallback()  # a monitoring session per train(): /metrics and the store
Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
stats = callback.last_snapshot
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from observe.errors import ObserveError
from observe.hooks.adapters import RouterAdapter
from observe.hooks.config import MonitorConfig
from observe.hooks.monitor import Monitor, attach
from observe.hooks.stats import RoutingStats
from observe.hooks.worker import WindowSink
from observe.pipeline import MonitoringSession
from observe.settings import Settings, load_settings


class ObserveCallback(TrainerCallback):
    """Attaches a monitor when training begins, steps it after every optimizer step (so one
    step spans all of its gradient-accumulation micro-batches) and closes it at train end.

    By default each `train()` is a monitored run, as `observe train` makes one: a session
    with settings from `observe.toml` and `OBSERVE_*` (or `settings`) serves `/metrics`,
    writes the store and closes when training ends. `session` runs in a session of yours
    instead, which you close; `stream=False` keeps statistics in the process only.

    `monitor` and `run` are None until training begins; `last_snapshot` holds the
    statistics of the whole run, taken just before the monitor closes.
    """

    def __init__(
        self,
        config: MonitorConfig | None = None,
        *,
        stream: bool = True,
        settings: Settings | None = None,
        session: MonitoringSession | None = None,
        model_name: str | None = None,
        sinks: Sequence[WindowSink] = (),
        adapter: RouterAdapter | None = None,
    ) -> None:
        if session is not None and not stream:
            raise ObserveError(
                "ObserveCallback got a session and stream=False: pass one or the other"
            )
        self.config = config
        self.stream = stream
        self.settings = settings
        self.model_name = model_name
        self.sinks = tuple(sinks)
        self.adapter = adapter
        self._own_session = stream and session is None
        self.run: MonitoringSession | None = session
        self.monitor: Monitor | None = None
        self.last_snapshot: RoutingStats | None = None

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
        # A train() that raised never reached on_train_end: its hooks are still on.
        self._close("failed")
        self.last_snapshot = None
        if self._own_session:
            self.run = MonitoringSession(
                self.settings or load_settings(),
                model=self.model_name or _model_name(model),
                config=_run_config(args),
            )
        if self.run is not None:
            self.monitor = self.run.attach(
                model, self.config, adapter=self.adapter, sinks=self.sinks
            )
        else:
            self.monitor = attach(model, self.config, adapter=self.adapter, sinks=self.sinks)

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
        self._close("finished")

    def _close(self, status: str) -> None:
        if self.monitor is not None:
            self.monitor.close()
        if self._own_session and self.run is not None:
            self.run.close(status)


def _model_name(model: nn.Module) -> str:
    """The model's hub name or local path as Transformers keeps it, else its class."""
    config = getattr(model, "config", None)
    name = str(getattr(config, "name_or_path", "") or "").rstrip("/").rpartition("/")[2]
    return name or type(model).__name__


def _run_config(args: TrainingArguments) -> dict[str, Any]:
    return {
        "trainer": "transformers",
        "max_steps": args.max_steps,
        "learning_rate": args.learning_rate,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
    }
