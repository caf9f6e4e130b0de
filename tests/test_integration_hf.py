"""ObserveCallback in a real `transformers.Trainer` with gradient accumulation."""

from __future__ import annotations

import os
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

import observe
from observe import catalogue
from observe.settings import Settings

# Models are built from configs; offline mode makes any stray hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import transformers

from observe.integrations.hf import ObserveCallback

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, ACCUMULATION, BATCH, SEQ, TOP_K = 4, 2, 2, 8, 2


class RandomTokens(Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int, vocab: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.input_ids = torch.randint(0, vocab, (n, SEQ), generator=generator)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "labels": self.input_ids[i]}


def tiny_mixtral() -> transformers.MixtralForCausalLM:
    config = transformers.MixtralConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        num_local_experts=4,
        num_experts_per_tok=TOP_K,
    )
    torch.manual_seed(0)
    return transformers.MixtralForCausalLM(config)


def training_args(output_dir: Path, **more: Any) -> transformers.TrainingArguments:
    """The tests' trainer settings on CPU, plus `more` (e.g. DDP's)."""
    return transformers.TrainingArguments(
        output_dir=str(output_dir),
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=ACCUMULATION,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        **more,
    )


def train(model: transformers.PreTrainedModel, tmp_path: Path, *callbacks: Any) -> None:
    dataset = RandomTokens(STEPS * ACCUMULATION * BATCH, model.config.vocab_size)
    transformers.Trainer(
        model=model, args=training_args(tmp_path), train_dataset=dataset, callbacks=[*callbacks]
    ).train()


def test_trainer_steps_the_monitor_once_per_optimizer_step(tmp_path: Path) -> None:
    model = tiny_mixtral()
    callback = ObserveCallback(stream=False)
    assert callback.monitor is None
    train(model, tmp_path, callback)

    monitor, stats = callback.monitor, callback.last_snapshot
    assert monitor is not None and stats is not None
    assert monitor.adapter.name == "transformers" and len(monitor.routers) == 2
    assert monitor.step_count == STEPS
    assert (stats.first_step, stats.last_step) == (1, STEPS)
    for layer in stats.layers:
        assert layer.tokens == STEPS * ACCUMULATION * BATCH * SEQ
        assert sum(layer.tokens_per_expert) == layer.tokens * TOP_K
    assert hooked_modules(model) == []


def hooked_modules(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def test_no_model_is_an_error(tmp_path: Path) -> None:
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    with pytest.raises(observe.ObserveError, match="no model"):
        ObserveCallback(stream=False).on_train_begin(args, state, control)


def test_a_run_that_raised_does_not_block_the_next(tmp_path: Path) -> None:
    model, callback = tiny_mixtral(), ObserveCallback(settings=store_settings(tmp_path))
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    # The first train() raised: the Trainer never called on_train_end.
    callback.on_train_begin(args, state, control, model=model)
    stale, stale_run = callback.monitor, callback.run
    callback.on_train_begin(args, state, control, model=model)
    assert callback.monitor is not stale
    callback.on_train_end(args, state, control)
    assert hooked_modules(model) == []
    assert stale_run is not None and callback.run is not None
    with sqlite3.connect(tmp_path / "observe.db") as db:
        status = dict(db.execute("select id, status from runs").fetchall())
    assert status == {stale_run.run_id: "failed", callback.run.run_id: "finished"}


def store_settings(tmp_path: Path) -> Settings:
    return Settings(
        db_url=f"sqlite:///{tmp_path / 'observe.db'}",
        prometheus_port=0,
        spool_dir=tmp_path / "spool",
        monitor=observe.MonitorConfig(flush_every=1),
    )


class ScrapeBeforeClose(transformers.TrainerCallback):
    """Reads the run's /metrics at train end, before the ObserveCallback after it closes."""

    def __init__(self, observing: ObserveCallback) -> None:
        self.observing = observing
        self.expert_tokens: float | None = None
        self.hook_total = 0

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        run, monitor = self.observing.run, self.observing.monitor
        assert run is not None and monitor is not None and run.metrics_port is not None
        # Waits until every window reached the instruments.
        stats = monitor.snapshot()
        self.hook_total = sum(sum(layer.tokens_per_expert) for layer in stats.layers)
        url = f"http://127.0.0.1:{run.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        name = catalogue.EXPERT_TOKENS.prometheus_name
        self.expert_tokens = sum(
            float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name)
        )


def test_the_callback_streams_to_metrics_and_the_store_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings as the CLI reads them: observe.toml in the working directory. The scraper
    reads /metrics itself before the run ends, so the run need not wait for another."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "observe.toml").write_text(
        f'db_url = "sqlite:///{tmp_path / "observe.db"}"\nprometheus_port = 0\n'
        "prometheus_linger_s = 0\n"
        f'spool_dir = "{tmp_path / "spool"}"\n[monitor]\nflush_every = 1\n'
    )
    model = tiny_mixtral()
    callback = ObserveCallback(model_name="tiny-mixtral")
    scraper = ScrapeBeforeClose(callback)
    train(model, tmp_path, scraper, callback)

    assert callback.run is not None
    expected = STEPS * ACCUMULATION * BATCH * SEQ * TOP_K * 2  # two MoE layers
    assert scraper.hook_total == expected
    assert scraper.expert_tokens == expected
    with sqlite3.connect(tmp_path / "observe.db") as db:
        runs = db.execute("select id, model, status from runs").fetchall()
        (stored,) = db.execute("select sum(tokens) from expert_load").fetchone()
    assert runs == [(callback.run.run_id, "tiny-mixtral", "finished")]
    assert stored == expected
    assert hooked_modules(model) == []
