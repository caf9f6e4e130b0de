"""ObserveCallback in a real `transformers.Trainer` with gradient accumulation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import observe

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


def test_trainer_steps_the_monitor_once_per_optimizer_step(tmp_path: Path) -> None:
    model = tiny_mixtral()
    callback = ObserveCallback()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=ACCUMULATION,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    dataset = RandomTokens(STEPS * ACCUMULATION * BATCH, model.config.vocab_size)
    assert callback.monitor is None
    transformers.Trainer(
        model=model, args=args, train_dataset=dataset, callbacks=[callback]
    ).train()

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
        ObserveCallback().on_train_begin(args, state, control)


def test_a_run_that_raised_does_not_block_the_next(tmp_path: Path) -> None:
    model, callback = tiny_mixtral(), ObserveCallback()
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    # The first train() raised: the Trainer never called on_train_end.
    callback.on_train_begin(args, state, control, model=model)
    stale = callback.monitor
    callback.on_train_begin(args, state, control, model=model)
    assert callback.monitor is not stale
    callback.on_train_end(args, state, control)
    assert hooked_modules(model) == []
