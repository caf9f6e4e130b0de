"""Named sizes of the reference MoE model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from observe.errors import ObserveError
from observe.workload.tokenizer import ByteTokenizer


@dataclass(frozen=True)
class MoEConfig:
    """Shape of a DeepSeek-MoE-style decoder: fine-grained routed experts plus shared experts."""

    vocab_size: int = ByteTokenizer.VOCAB_SIZE
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_routed_experts: int = 16
    n_shared_experts: int = 1
    top_k: int = 2
    # Fine-grained experts: each is a fraction of a dense feed-forward's width.
    expert_hidden: int = 128
    max_seq_len: int = 256
    # None: no capacity limit. Otherwise each expert takes at most
    # ceil(capacity_factor * tokens * top_k / n_routed_experts) assignments per forward,
    # counting real tokens only: padding never reaches an expert.
    capacity_factor: float | None = None
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.001
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ObserveError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}: "
                "pick a head count that divides the model width"
            )
        if not 1 <= self.top_k <= self.n_routed_experts:
            raise ObserveError(
                f"top_k={self.top_k} must be between 1 and n_routed_experts={self.n_routed_experts}"
            )
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise ObserveError(
                f"capacity_factor={self.capacity_factor} must be positive, or None for no limit"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MoEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ObserveError(
                f"unknown model config fields {unknown}: the checkpoint was written by a newer "
                "observe; upgrade observe to load it"
            )
        return cls(**values)


CONFIGS: dict[str, MoEConfig] = {
    # Fits a unit test: well under a second per training step.
    "tiny": MoEConfig(
        d_model=32,
        n_layers=2,
        n_heads=2,
        n_routed_experts=4,
        n_shared_experts=1,
        top_k=2,
        expert_hidden=32,
        max_seq_len=64,
    ),
    # The demo's and `observe train`'s default.
    "small": MoEConfig(),
    # Large enough that one CPU training step takes a fraction of a second to a second.
    "bench": MoEConfig(
        d_model=384,
        n_layers=4,
        n_heads=6,
        n_routed_experts=32,
        n_shared_experts=2,
        top_k=4,
        expert_hidden=128,
        max_seq_len=256,
    ),
}


DEFAULT_MODEL_SIZE = "small"


def describe_config(config: MoEConfig) -> str:
    """The config's shape in a few words, naming the size it is if it is one."""
    names = [name for name, known in CONFIGS.items() if known == config]
    shape = (
        f"{config.n_layers} layers, width {config.d_model}, "
        f"{config.n_routed_experts} routed experts, top-{config.top_k}"
    )
    return f"{names[0]} ({shape})" if names else shape


def get_config(name: str, **overrides: Any) -> MoEConfig:
    """The named config, with fields replaced by `overrides`."""
    try:
        config = CONFIGS[name]
    except KeyError:
        raise ObserveError(
            f"unknown model config {name!r}: choose one of {', '.join(CONFIGS)}"
        ) from None
    return dataclasses.replace(config, **overrides) if overrides else config
