"""Checkpoints round-trip weights and metadata, and refuse files that are not checkpoints."""

import datetime as dt
from pathlib import Path

import pytest
import torch

from observe.errors import ObserveError
from observe.workload.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from observe.workload.config import get_config
from observe.workload.model import MoETransformer


@pytest.mark.slow
def test_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny", capacity_factor=1.5))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randint(0, 256, (1, 4)), labels_BS=torch.randint(0, 256, (1, 4))).loss.backward()
    optimizer.step()
    ended = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    path = save_checkpoint(
        tmp_path, model, step=7, domain="legal", optimizer=optimizer, trained_until=ended
    )
    assert path == tmp_path / CHECKPOINT_FILE
    # weights_only=True is what load uses: the payload holds no pickled objects.
    torch.load(path, weights_only=True)

    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint.config == model.config
    assert (checkpoint.step, checkpoint.domain, checkpoint.trained_until) == (7, "legal", ended)
    assert checkpoint.optimizer_state is not None
    restored = checkpoint.build_model()
    x = torch.randint(0, 256, (2, 9))
    torch.testing.assert_close(restored(x).logits_BSV, model(x).logits_BSV)
    assert load_checkpoint(path).step == 7


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ObserveError, match=r"no checkpoint at .*observe train"):
        load_checkpoint(tmp_path / "nowhere")


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ObserveError, match="not a readable observe checkpoint"):
        load_checkpoint(tmp_path)


def test_foreign_torch_file_is_a_clear_error(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(ObserveError, match="not an observe checkpoint"):
        load_checkpoint(tmp_path)
