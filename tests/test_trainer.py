"""The bundled fine-tuning loop: schedule, learning, freezing, accumulation and resume."""

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from observe.errors import ObserveError
from observe.workload.checkpoint import load_checkpoint
from observe.workload.config import get_config
from observe.workload.corpus import generate_corpus
from observe.workload.data import BatchSampler, pack_documents
from observe.workload.finetune import FineTuneResult, prepare_fine_tune
from observe.workload.job_config import FineTuneConfig
from observe.workload.model import MoETransformer
from observe.workload.tokenizer import ByteTokenizer
from observe.workload.trainer import TrainConfig, Trainer


def _sampler(batch_size: int, seq_len: int) -> BatchSampler:
    rows = pack_documents(generate_corpus("medical", 300, seed=0), ByteTokenizer(), seq_len)
    return BatchSampler(rows, batch_size, seed=0)


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    config = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert config.lr_at(0) == pytest.approx(1e-4)
    assert config.lr_at(9) == pytest.approx(1e-3)
    assert config.lr_at(10) == pytest.approx(1e-3)
    assert config.lr_at(55) == pytest.approx(0.55e-3)
    assert config.lr_at(100) == pytest.approx(1e-4)
    lrs = [config.lr_at(s) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_loss_falls_on_the_tiny_model() -> None:
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    config = TrainConfig(steps=60, batch_size=8, seq_len=48, lr=3e-3, warmup_steps=5)
    results = Trainer(model, _sampler(8, 48), config).train(progress=False)
    assert [r.step for r in results] == list(range(1, 61))
    first = sum(r.lm_loss for r in results[:5]) / 5
    last = sum(r.lm_loss for r in results[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert all(r.tokens == 8 * 48 and r.tokens_per_s > 0 for r in results)


def test_freeze_below_trains_only_upper_layers() -> None:
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = TrainConfig(steps=3, batch_size=2, seq_len=16, freeze_below=1)
    Trainer(model, _sampler(2, 16), config).train(progress=False)
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p)
        frozen = name.startswith(("embed.", "lm_head.", "layers.0."))
        assert changed != frozen, name


def test_freeze_below_out_of_range_is_a_clear_error() -> None:
    model = MoETransformer(get_config("tiny"))
    with pytest.raises(ObserveError, match="model has 2 layers"):
        Trainer(model, _sampler(2, 16), TrainConfig(steps=1, freeze_below=2))


def test_gradient_accumulation_counts_every_micro_batch() -> None:
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    config = TrainConfig(steps=2, batch_size=2, seq_len=16, grad_accum=3)
    results = Trainer(model, _sampler(2, 16), config).train(progress=False)
    assert [r.tokens for r in results] == [2 * 16 * 3] * 2


def test_accumulated_gradient_equals_one_large_batch() -> None:
    torch.manual_seed(0)
    # Router losses are means per micro-batch, so only the language-model loss adds up exactly.
    config = get_config("tiny", aux_loss_coef=0.0, z_loss_coef=0.0)
    a, b = MoETransformer(config), MoETransformer(config)
    b.load_state_dict(a.state_dict())
    rows = pack_documents(generate_corpus("legal", 50, seed=0), ByteTokenizer(), 16)[:4]
    [large] = Trainer(
        a, BatchSampler(rows, 4), TrainConfig(steps=1, batch_size=4, seq_len=16)
    ).train(progress=False)
    # The same four rows in two micro-batches of two: the mean loss, hence the step, matches.
    [accumulated] = Trainer(
        b, BatchSampler(rows, 2), TrainConfig(steps=1, batch_size=2, seq_len=16, grad_accum=2)
    ).train(progress=False)
    assert accumulated.lm_loss == pytest.approx(large.lm_loss, rel=1e-6)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0, msg=name)


def fine_tune(config: TrainConfig, out: Path, **job: Any) -> FineTuneResult:
    return prepare_fine_tune(config, FineTuneConfig(**job), out).run(progress=False)


def test_fine_tune_saves_and_resumes(tmp_path: Path) -> None:
    config = TrainConfig(steps=3, batch_size=2, seq_len=16)
    first = fine_tune(config, tmp_path / "a", model_size="tiny", domain="finance", docs=50)
    checkpoint = load_checkpoint(first.checkpoint)
    assert (checkpoint.step, checkpoint.domain) == (3, "finance")

    resumed = fine_tune(
        TrainConfig(steps=5, batch_size=2, seq_len=16),
        tmp_path / "b",
        domain="finance",
        resume=tmp_path / "a",
        docs=50,
    )
    assert [r.step for r in resumed.steps] == [4, 5]
    assert load_checkpoint(resumed.checkpoint).step == 5
    assert resumed.model.config == checkpoint.config

    with pytest.raises(ObserveError, match="already trained 3 steps"):
        fine_tune(
            config,
            tmp_path / "c",
            domain="finance",
            resume=tmp_path / "a",
            docs=50,
        )


def test_fine_tune_rejects_a_sequence_longer_than_the_model(tmp_path: Path) -> None:
    with pytest.raises(ObserveError, match="--seq-len 65"):
        fine_tune(
            TrainConfig(steps=1, seq_len=65),
            tmp_path,
            model_size="tiny",
            domain="general",
            docs=20,
        )


def test_sequence_length_follows_the_model_size(tmp_path: Path) -> None:
    """`tiny` holds 64 positions: the default 128 would not fit, so its default is 64."""
    job = prepare_fine_tune(
        TrainConfig(steps=1, batch_size=2),
        FineTuneConfig(model_size="tiny", domain="general", docs=20),
        tmp_path,
    )
    assert job.trainer.config.seq_len == 64
    [step] = job.run(progress=False).steps
    assert step.tokens == 2 * 64
