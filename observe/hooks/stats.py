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

# Raw sums of a span of forwards, or the estimates made from them: per-layer scalars, tokens
# per expert, the expert × entropy-slot histogram.
_Sums = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class LayerStats:
    """One MoE layer's routing. Counts of tokens and assignments are of every forward:
    under router sampling, the measured forwards' counts divided by the rate (an unbiased
    estimate, to the nearest count). Means, ratios and losses are over the measured
    forwards."""

    layer: int
    # The router module's path in the model, e.g. "layers.3.moe.router".
    name: str
    tokens: int
    # Assignments each expert received, before any capacity drop; padding excluded.
    tokens_per_expert: tuple[int, ...]
    # Mean normalised Shannon entropy of the router's distribution, H / log E, in [0, 1].
    routing_entropy: float
    # Most-loaded expert's assignments over the mean per expert: 1.0 is perfect balance.
    load_imbalance: float
    # Experts that received no token in the measured forwards: under router sampling, an
    # expert may have had tokens in the others.
    dead_experts: tuple[int, ...]
    top1_probability: float
    # Mean over router calls of E·Σ fᵢ·Pᵢ (1.0 balanced) and of mean logsumexp(logits)².
    aux_loss: float
    z_loss: float
    # Real tokens' (token, expert) assignments over capacity; None where the model never
    # drops tokens.
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
    # Share of forwards whose routing was measured (`MonitorConfig.router_sample_rate`).
    router_sample_rate: float = 1.0

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
        if self.router_sample_rate < 1:
            lines.append(
                f"counts estimated from {self.router_sample_rate:.0%} of forwards "
                f"(router_sample_rate={self.router_sample_rate:g})"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class Window:
    """One flushed window, as sinks receive it: its routing statistics, and the pooled
    sequence states sampled during its steps per attention layer, (rows, hidden width)."""

    routing: RoutingStats
    hidden_states: Mapping[str, np.ndarray]
    # The window's estimated counts as arrays, layers × the widest layer's experts (× entropy
    # slots), zero past a layer's own experts: for sinks that take them whole. None where
    # the window was not flushed by a monitor.
    expert_tokens_LE: np.ndarray | None = None
    entropy_histogram_LES: np.ndarray | None = None

    @property
    def first_step(self) -> int:
        return self.routing.first_step

    @property
    def last_step(self) -> int:
        return self.routing.last_step


class RoutingTotals:
    """Host-side sums of routing windows, from which statistics are computed.

    The sums cover the forwards the monitor measured, a `sample_rate` share of them; the
    counts reported are scaled by 1/rate to estimates of every forward's. Scaled here, on
    the host, once per window: the hooks stay as cheap at any rate.
    """

    def __init__(
        self, n_experts_L: list[int], entropy_slots: int, sample_rate: float = 1.0
    ) -> None:
        """`entropy_slots` 0: the entropy histogram is off."""
        L, E = len(n_experts_L), max(n_experts_L, default=1)
        self.n_experts_L = n_experts_L
        self.sample_rate = sample_rate
        self.scalars_LC = np.zeros((L, len(SCALARS)), dtype=np.float64)
        self.tokens_per_expert_LE = np.zeros((L, E), dtype=np.int64)
        self.entropy_slots = entropy_slots
        self.entropy_histogram_LES = np.zeros((L, E, entropy_slots), dtype=np.int64)
        self.calls_L = np.zeros(L, dtype=np.int64)
        # A window's: its run's sums until it, which its estimates are rounded on top of.
        self._before: _Sums | None = None

    def add(self, window: WindowSums) -> RoutingTotals:
        """Adds `window` to these totals; returns the window's own, whose estimated counts
        are exactly what it adds to these totals' estimates (they sum to the run's)."""
        own = RoutingTotals(self.n_experts_L, self.entropy_slots, self.sample_rate)
        own._before = (
            self.scalars_LC.copy(),
            self.tokens_per_expert_LE.copy(),
            self.entropy_histogram_LES.copy(),
        )
        for totals in (own, self):
            totals.scalars_LC += window.scalars_LC.numpy()
            totals.tokens_per_expert_LE += window.tokens_per_expert_LE.numpy()
            totals.entropy_histogram_LES += window.entropy_histogram_LES.numpy()
            totals.calls_L += window.calls_L.numpy()
        return own

    def layer_stats(
        self, names: list[str], drops_L: list[bool], estimates: _Sums | None = None
    ) -> tuple[LayerStats, ...]:
        """`drops_L`: layers whose dropped assignments were measured (others report None);
        `estimates`: these totals' `estimates()`, when the caller has them already."""
        counts_LC, tokens_per_expert_LE, histogram_LES = estimates or self.estimates()
        layers = []
        for layer, name in enumerate(names):
            E = self.n_experts_L[layer]
            scalars, counts = self.scalars_LC[layer], counts_LC[layer]
            # Ratios from the measured forwards' own sums: scaling changes none of them.
            measured_E = self.tokens_per_expert_LE[layer, :E]
            n_tokens = scalars[TOKENS]
            calls = max(int(self.calls_L[layer]), 1)
            mean_load = measured_E.sum() / E
            layers.append(
                LayerStats(
                    layer=layer,
                    name=name,
                    tokens=int(counts[TOKENS]),
                    tokens_per_expert=tuple(tokens_per_expert_LE[layer, :E].tolist()),
                    routing_entropy=_mean(scalars[ENTROPY], n_tokens),
                    load_imbalance=float(measured_E.max() / mean_load) if mean_load else 0.0,
                    dead_experts=tuple(int(e) for e in np.flatnonzero(measured_E == 0)),
                    top1_probability=_mean(scalars[TOP1], n_tokens),
                    aux_loss=float(scalars[AUX] / calls),
                    z_loss=float(scalars[Z] / calls),
                    dropped_tokens=int(counts[DROPPED]) if drops_L[layer] else None,
                    entropy_histogram=_rows(histogram_LES[layer, :E]),
                    nonfinite_tokens=int(counts[NONFINITE]),
                )
            )
        return tuple(layers)

    def estimates(self) -> _Sums:
        """The sums scaled to every forward, as whole counts. A window's are rounded on top
        of its run's until then: rounding each window on its own would leave the windows'
        sum up to half a count per window off the run's."""
        now = (self.scalars_LC, self.tokens_per_expert_LE, self.entropy_histogram_LES)
        before = self._before or tuple(np.zeros_like(s) for s in now)
        scalars_LC, tokens_per_expert_LE, histogram_LES = (
            _whole((b + s) / self.sample_rate) - _whole(b / self.sample_rate)
            for b, s in zip(before, now, strict=True)
        )
        return scalars_LC, tokens_per_expert_LE, histogram_LES


def _whole(x: np.ndarray) -> np.ndarray:
    # Half rounds up, so that x + 1 always rounds to one more than x: numpy's half to even
    # rounds 1.5 and 2.5 alike, and a window that counted a token would estimate none.
    return np.floor(x + 0.5).astype(np.int64)


def _rows(histogram_ES: np.ndarray) -> tuple[tuple[int, ...], ...]:
    # No slots: the histogram is off, and reads as empty rather than as empty rows.
    if not histogram_ES.shape[-1]:
        return ()
    return tuple(map(tuple, histogram_ES.tolist()))


def _mean(total: float, count: float) -> float:
    return float(total / count) if count else 0.0
