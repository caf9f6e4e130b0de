"""What a monitor reports: per-layer routing statistics over a span of steps.

Host-side and torch-free, so that sinks and readers of statistics load no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from observe.hooks.buffers import WindowSums

# Per-layer scalar sums of the device buffers, in column order.
SCALARS = (
    "tokens",
    "entropy",
    "top1_probability",
    "aux_loss",
    "z_loss",
    "dropped_tokens",
    "nonfinite_tokens",
)
TOKENS, ENTROPY, TOP1, AUX, Z, DROPPED, NONFINITE = range(len(SCALARS))


@dataclass(frozen=True)
class LayerStats:
    layer: int
    # The router module's path in the model, e.g. "layers.3.moe.router".
    name: str
    tokens: int
    tokens_per_expert: tuple[int, ...]
    # Mean normalised Shannon entropy of the router's distribution, H / log E, in [0, 1].
    routing_entropy: float
    # Most-loaded expert's assignments over the mean per expert: 1.0 is perfect balance.
    load_imbalance: float
    # Experts that received no token in the window.
    dead_experts: tuple[int, ...]
    top1_probability: float
    # Mean over router calls of E·Σ fᵢ·Pᵢ (1.0 balanced) and of mean logsumexp(logits)².
    aux_loss: float
    z_loss: float
    # (token, expert) assignments over capacity; None where the model never drops tokens.
    dropped_tokens: int | None
    # experts × entropy slots: how many assignments each expert took at each entropy level;
    # empty when the histogram is off.
    entropy_histogram: tuple[tuple[int, ...], ...]
    # Tokens whose router logits held NaN or an infinity: left out of every figure above.
    nonfinite_tokens: int = 0


@dataclass(frozen=True)
class RoutingStats:
    """Routing statistics per MoE layer over the steps `[first_step, last_step]`: one
    flushed window (what sinks receive) or every step since attach (`snapshot()`)."""

    first_step: int
    last_step: int
    layers: tuple[LayerStats, ...]

    def layer(self, index: int) -> LayerStats:
        return self.layers[index]

    def format(self) -> str:
        """A table with one line per MoE layer, for terminals and logs."""
        lines = [
            f"{'layer':<24} {'tokens':>9} {'entropy':>8} {'imbalance':>9} {'top-1':>6} "
            f"{'dead':>5} {'aux':>6} {'z':>7} {'dropped':>8}"
        ]
        for s in self.layers:
            dropped = "-" if s.dropped_tokens is None else f"{s.dropped_tokens:,}"
            lines.append(
                f"{s.name:<24} {s.tokens:>9,} {s.routing_entropy:>8.3f} {s.load_imbalance:>9.2f} "
                f"{s.top1_probability:>6.3f} {len(s.dead_experts):>5} {s.aux_loss:>6.3f} "
                f"{s.z_loss:>7.3f} {dropped:>8}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class Window:
    """One flushed window, as sinks receive it: its routing statistics, and the pooled
    sequence states sampled during its steps per attention layer, (rows, hidden width)."""

    routing: RoutingStats
    hidden_states: Mapping[str, np.ndarray]

    @property
    def first_step(self) -> int:
        return self.routing.first_step

    @property
    def last_step(self) -> int:
        return self.routing.last_step


class RoutingTotals:
    """Host-side sums of routing windows, from which statistics are computed."""

    def __init__(self, n_experts_L: list[int], entropy_slots: int) -> None:
        """`entropy_slots` 0: the entropy histogram is off."""
        L, E = len(n_experts_L), max(n_experts_L)
        self.n_experts_L = n_experts_L
        self.scalars_LC = np.zeros((L, len(SCALARS)), dtype=np.float64)
        self.tokens_per_expert_LE = np.zeros((L, E), dtype=np.int64)
        self.entropy_slots = entropy_slots
        self.entropy_histogram_LES = np.zeros((L, E, entropy_slots), dtype=np.int64)
        self.calls_L = np.zeros(L, dtype=np.int64)

    def add(self, window: WindowSums) -> None:
        self.scalars_LC += window.scalars_LC.numpy()
        self.tokens_per_expert_LE += window.tokens_per_expert_LE.numpy()
        self.entropy_histogram_LES += window.entropy_histogram_LES.numpy()
        self.calls_L += np.asarray(window.calls_L, dtype=np.int64)

    def layer_stats(self, names: list[str], drops_L: list[bool]) -> tuple[LayerStats, ...]:
        """`drops_L`: layers whose dropped assignments were measured (others report None)."""
        layers = []
        for layer, name in enumerate(names):
            E = self.n_experts_L[layer]
            scalars = self.scalars_LC[layer]
            tokens_E = self.tokens_per_expert_LE[layer, :E]
            n_tokens = scalars[TOKENS]
            calls = max(int(self.calls_L[layer]), 1)
            mean_load = tokens_E.sum() / E
            layers.append(
                LayerStats(
                    layer=layer,
                    name=name,
                    tokens=round(n_tokens),
                    tokens_per_expert=tuple(int(n) for n in tokens_E),
                    routing_entropy=_mean(scalars[ENTROPY], n_tokens),
                    load_imbalance=float(tokens_E.max() / mean_load) if mean_load else 0.0,
                    dead_experts=tuple(int(e) for e in np.flatnonzero(tokens_E == 0)),
                    top1_probability=_mean(scalars[TOP1], n_tokens),
                    aux_loss=float(scalars[AUX] / calls),
                    z_loss=float(scalars[Z] / calls),
                    dropped_tokens=round(scalars[DROPPED]) if drops_L[layer] else None,
                    entropy_histogram=self._histogram(layer, E),
                    nonfinite_tokens=round(scalars[NONFINITE]),
                )
            )
        return tuple(layers)

    def _histogram(self, layer: int, n_experts: int) -> tuple[tuple[int, ...], ...]:
        if not self.entropy_histogram_LES.shape[-1]:
            return ()
        rows = self.entropy_histogram_LES[layer, :n_experts]
        return tuple(tuple(int(n) for n in row) for row in rows)


def _mean(total: float, count: float) -> float:
    return float(total / count) if count else 0.0
