"""Checkpoints: weights plus what a later reader must know (config, step, domain, when)."""

from __future__ import annotations

import datetime as dt
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from observe.errors import ObserveError
from observe.workload.config import MoEConfig, describe_config
from observe.workload.model import MoETransformer

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    config: MoEConfig
    model_state: dict[str, torch.Tensor]
    step: int
    # The training data's domain, or the data file's name for users' own text.
    domain: str
    # When training ended: knowledge freshness is measured from here.
    trained_until: dt.datetime
    optimizer_state: dict[str, Any] | None = None

    def build_model(self) -> MoETransformer:
        model = MoETransformer(self.config)
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as exc:
            # torch lists every mismatched tensor; the first line says what kind.
            first = str(exc).strip().splitlines()[0]
            raise ObserveError(
                f"the checkpoint's weights do not fit its own model config "
                f"({describe_config(self.config)}): {first}. The file was changed or written by "
                "another program: train again with `observe train --out DIR`"
            ) from None
        return model


def checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory resolves to the file inside it; a file is taken as is."""
    path = Path(path)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    model: MoETransformer,
    *,
    step: int,
    domain: str,
    optimizer: torch.optim.Optimizer | None = None,
    trained_until: dt.datetime | None = None,
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trained_until = trained_until or dt.datetime.now(dt.UTC)
    payload = {
        "format": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "model": model.state_dict(),
        "step": step,
        "domain": domain,
        "trained_until": trained_until.isoformat(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
    }
    path = out / CHECKPOINT_FILE
    # Write then rename, so an interrupted save never leaves a torn checkpoint behind.
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    file = checkpoint_path(path)
    if not file.exists():
        raise ObserveError(
            f"no checkpoint at {file}: pass the --out directory of an `observe train` run"
        )
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, OSError) as exc:
        raise ObserveError(
            f"{file} is not a readable observe checkpoint ({exc.__class__.__name__}): "
            "train again with `observe train --out DIR`"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise ObserveError(
            f"{file} is not an observe checkpoint of format {FORMAT_VERSION}: "
            "train again with `observe train --out DIR`"
        )
    return Checkpoint(
        config=MoEConfig.from_dict(payload["config"]),
        model_state=payload["model"],
        step=payload["step"],
        domain=payload["domain"],
        trained_until=dt.datetime.fromisoformat(payload["trained_until"]),
        optimizer_state=payload["optimizer"],
    )
