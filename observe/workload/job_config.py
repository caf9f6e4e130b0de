"""What the reference workload's jobs are told: training, fine-tuning, serving, the demo.

Each setting has one owner here: a frozen dataclass field with its default, its check and
its help text, from which the `observe` commands build their options. Torch-free, so that
`observe --help` loads no torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from observe.errors import ObserveError

# Tokens per training sequence unless told: capped at the model size's max_seq_len.
DEFAULT_SEQ_LEN = 128
# Stop sequences a request may give: as many as OpenAI's API takes, which `observe serve` speaks.
MAX_STOPS = 4


def setting(default: Any, help: str) -> Any:
    """A dataclass field whose help text the CLI shows for its option."""
    return field(default=default, metadata={"help": help})


def check_stops(stops: Sequence[str]) -> None:
    """ObserveError unless `stops` are at most MAX_STOPS non-empty strings."""
    if len(stops) > MAX_STOPS:
        raise ObserveError(f"{len(stops)} stop sequences given: pass at most {MAX_STOPS}")
    for stop in stops:
        if not isinstance(stop, str) or not stop:
            raise ObserveError(
                f"stop sequence {stop!r} is not a non-empty string: drop it or give its text"
            )


def _at_least_one(config: Any, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise ObserveError(f"{name}={getattr(config, name)} must be at least 1")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = setting(100, "Optimizer steps in all, a resumed run's included.")
    batch_size: int = setting(8, "Sequences per micro-batch.")
    seq_len: int | None = setting(
        None, f"Tokens per sequence; default {DEFAULT_SEQ_LEN}, or the model's limit if less."
    )
    grad_accum: int = setting(
        1, "Micro-batches per optimizer step; the effective batch is batch-size × grad-accum."
    )
    lr: float = setting(2e-3, "Peak learning rate.")
    min_lr_ratio: float = setting(0.1, "Final learning rate, as a share of the peak.")
    warmup_steps: int = setting(10, "Warm-up steps before cosine decay.")
    weight_decay: float = setting(0.1, "AdamW weight decay.")
    grad_clip: float = setting(1.0, "Gradient norm clip.")
    freeze_below: int = setting(
        0, "Train only layers from this index up (the domain-adapter recipe); 0 trains all."
    )
    seed: int = setting(0, "Seed for data, weights and batches.")

    def __post_init__(self) -> None:
        _at_least_one(self, "steps", "batch_size", "grad_accum")
        if self.seq_len is not None:
            _at_least_one(self, "seq_len")
        if self.lr <= 0:
            raise ObserveError(f"lr={self.lr} must be positive")

    def for_model(self, max_seq_len: int) -> TrainConfig:
        """With `seq_len` resolved for a model of `max_seq_len` positions, or an error."""
        if self.seq_len is None:
            return dataclasses.replace(self, seq_len=min(DEFAULT_SEQ_LEN, max_seq_len))
        if self.seq_len > max_seq_len:
            raise ObserveError(
                f"--seq-len {self.seq_len} is longer than the model's max_seq_len="
                f"{max_seq_len}: pass --seq-len {max_seq_len} or less"
            )
        return self

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to min_lr_ratio × lr at the last step."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class FineTuneConfig:
    """What a fine-tuning job trains and on what."""

    model_size: str | None = setting(
        None, "Model size: tiny, small (the default) or bench; a resumed run keeps its own."
    )
    domain: str | None = setting(None, "Built-in corpus: medical, finance, legal or general.")
    data: Path | None = setting(
        None, "Your own text: .txt (a document per line) or .jsonl (a 'text' field)."
    )
    docs: int = setting(2000, "Documents generated for a built-in domain.")
    capacity_factor: float | None = setting(
        None, "Expert capacity as a multiple of a fair share; assignments past it are dropped."
    )
    resume: Path | None = setting(
        None, "Checkpoint directory to continue from; its model size wins."
    )

    def __post_init__(self) -> None:
        _at_least_one(self, "docs")
        if self.capacity_factor is not None and not self.capacity_factor > 0:
            raise ObserveError(
                f"capacity_factor={self.capacity_factor} must be positive, or unset for no limit"
            )

    @property
    def source(self) -> str:
        """The training data's domain, or the data file's name."""
        return self.data.name if self.data is not None else str(self.domain)


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = setting(32, "Tokens generated per request.")
    top_p: float | None = setting(
        None,
        "Nucleus sampling from the most likely tokens whose probabilities reach top-p; "
        "greedy when unset.",
    )
    temperature: float = setting(
        1.0, "Divides the logits before nucleus sampling; greedy decoding ignores it."
    )
    seed: int | None = setting(
        None,
        "Seed for this request's nucleus sampling, the same whatever batch it lands in; "
        "the engine's seed when unset.",
    )
    stop: tuple[str, ...] = setting(
        (), f"Up to {MAX_STOPS} sequences, any of which ends the output just before itself."
    )

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ObserveError(
                f"max_new_tokens={self.max_new_tokens} must be at least 1: ask for one or more "
                "new tokens"
            )
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ObserveError(
                f"top_p={self.top_p} must be in (0, 1]: use e.g. 0.9, or None for greedy decoding"
            )
        if not self.temperature > 0:
            raise ObserveError(
                f"temperature={self.temperature} must be positive: use e.g. 1.0, lower for "
                "more conservative samples"
            )
        # A tuple, not a list: settings are hashed as part of the response cache's key.
        if not isinstance(self.stop, tuple):
            raise ObserveError(
                f"stop={self.stop!r} is not a tuple: pass the stop sequences as a tuple of strings"
            )
        check_stops(self.stop)


@dataclass(frozen=True)
class ServeConfig:
    """A replayed traffic mix and the inference engine that serves it."""

    traffic: str = setting(
        "medical;finance",
        "Domains per phase, phases in order: 'medical=1;finance=0.7,general=0.3'.",
    )
    requests: int = setting(200, "Requests to replay.")
    repeat_share: float = setting(0.3, "Share of requests that repeat an earlier prompt.")
    concurrency: int = setting(8, "Requests in flight at once.")
    cache_size: int = setting(256, "Responses kept in the LRU cache.")
    max_batch_size: int = setting(8, "Requests batched together.")
    seed: int = setting(0, "Seed for the traffic plan and sampling.")

    def __post_init__(self) -> None:
        _at_least_one(self, "requests", "concurrency", "max_batch_size")


@dataclass(frozen=True)
class ServerConfig:
    """`observe serve`: the model behind an OpenAI-compatible HTTP API."""

    host: str = setting("127.0.0.1", "Address to listen on; 0.0.0.0 reaches other machines.")
    port: int = setting(8000, "Port to listen on; 0 takes a free one.")
    max_queue: int = setting(
        64, "Generation requests held at once, queued or generating; past it, 429."
    )
    cache_size: int = setting(256, "Responses kept in the LRU cache.")
    max_batch_size: int = setting(8, "Requests batched together.")
    seed: int = setting(0, "Sampling seed of requests that bring none.")
    drain_s: float = setting(
        10.0, "Seconds in-flight requests have to finish after SIGTERM or Ctrl-C."
    )

    def __post_init__(self) -> None:
        _at_least_one(self, "max_queue", "max_batch_size")
        if not 0 <= self.port <= 65535:
            raise ObserveError(f"port={self.port} is not a TCP port: pass 0–65535")
        if self.cache_size < 0:
            raise ObserveError(f"cache_size={self.cache_size} is negative: pass 0 to disable")
        if not self.drain_s > 0:
            raise ObserveError(f"drain_s={self.drain_s} must be positive: e.g. 10 (seconds)")


@dataclass(frozen=True)
class DemoConfig:
    """Fine-tune on one domain, then serve traffic that starts there and shifts away."""

    fine_tune: FineTuneConfig = FineTuneConfig(domain="medical")
    train: TrainConfig = TrainConfig(steps=120)
    # Serving starts on the training domain and shifts halfway: real drift to monitor.
    serve: ServeConfig = ServeConfig(requests=400)
    generation: GenerationSettings = GenerationSettings(max_new_tokens=24)
    # Sequences per drift window (the monitor's window_sample_size, observe's default 512),
    # set for a run of a minute: 200 requests a phase, some answered from the cache, fill
    # two drift windows of 64, and the drift alert pages at the second in a row over its
    # threshold. Windows of 512 would take a phase of about 1,500 requests.
    drift_window: int = 64
