"""Routing sums kept on the model's device between flushes, updated without a host sync.

Hooks only record each router call's tensors; `RoutingBuffers.add_calls` then folds many
calls, of every layer, into the sums with one fixed sequence of tensor ops (no `.item()`,
no Python branch on a tensor value). Batching matters when decoding: a forward then
carries a handful of tokens, and the cost of an update hardly depends on how many.

Shape legend: L MoE layers, E experts (the most of any layer), S entropy slots, C scalar
sums, N tokens of the calls folded together, K experts per token, A assignments (N·K),
R router calls folded together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from observe.hooks.stats import AUX, DROPPED, NONFINITE, SCALARS, Z


class RouterCall(NamedTuple):
    """One router forward, as its hook saw it (detached). A named tuple: hooks make one
    per router call, which decoding makes per layer per token."""

    layer: int
    logits_TE: torch.Tensor
    topk_indices_TK: torch.Tensor
    # 1 = real token; None when every token is real.
    mask_T: torch.Tensor | None


@dataclass(frozen=True)
class WindowSums:
    """Sums since the previous flush, on the host once `wait` returns."""

    scalars_LC: torch.Tensor
    tokens_per_expert_LE: torch.Tensor
    entropy_histogram_LES: torch.Tensor
    # Router calls per layer, so the router-loss sums can be averaged.
    calls_L: torch.Tensor
    ready: torch.cuda.Event | None

    def wait(self) -> None:
        if self.ready is not None:
            self.ready.synchronize()


class RoutingBuffers:
    def __init__(
        self,
        n_experts_L: list[int],
        entropy_slots: int,
        device: torch.device,
        *,
        histogram: bool = True,
        router_losses: bool = True,
    ) -> None:
        """`n_experts_L`: experts of each MoE layer, in layer order."""
        # A model part without MoE layers has none (`require_routers=False`).
        L, E = len(n_experts_L), max(n_experts_L, default=1)
        self.device = device
        self.n_experts_L = n_experts_L
        self.entropy_slots = entropy_slots
        self.histogram = histogram
        self.router_losses = router_losses
        # float64: token counts stay exact and long runs of small entropies keep precision.
        self.scalars_LC = torch.zeros(L, len(SCALARS), dtype=torch.float64, device=device)
        self.tokens_per_expert_LE = torch.zeros(L, E, dtype=torch.long, device=device)
        S = entropy_slots if histogram else 0
        self.entropy_histogram_LES = torch.zeros(L, E, S, dtype=torch.long, device=device)
        # Counted on the host: hooks must not touch the device for it.
        self.calls_L = [0] * L
        # Each layer's (experts, experts per token), as its first call shows them.
        self._shape_L: list[tuple[int, int] | None] = [None] * L
        # Every rank's calls, once a reduction summed them on the device (`stacked`).
        self._reduced_calls_L: torch.Tensor | None = None

    def add_calls(
        self,
        calls: Sequence[RouterCall],
        probabilities: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> None:
        """Folds router calls into the sums; `probabilities` maps logits to the router's
        distribution (None: their softmax). Calls are grouped by expert count, each group
        in one pass."""
        calls_L, shape_L = self.calls_L, self._shape_L
        for call in calls:
            calls_L[call.layer] += 1
            if shape_L[call.layer] is None:
                shape_L[call.layer] = (call.logits_TE.shape[-1], call.topk_indices_TK.shape[-1])
        groups: dict[tuple[int, int], list[RouterCall]] = {}
        shapes = {shape for shape in shape_L if shape is not None}
        if len(shapes) == 1:  # every layer alike, as in most models: one group
            groups[shapes.pop()] = list(calls)
        else:
            for call in calls:
                shape = shape_L[call.layer]
                assert shape is not None  # learnt above
                groups.setdefault(shape, []).append(call)
        for (E, K), group in groups.items():
            self._add_group(group, E, K, probabilities)

    def _add_group(
        self,
        calls: list[RouterCall],
        E: int,
        K: int,
        probabilities: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> None:
        device = self.device
        R = len(calls)
        sizes = [c.logits_TE.shape[0] for c in calls]
        runs = _runs(sizes)
        logits_NE = _cat([c.logits_TE for c in calls], runs).float()
        expert_NK = _cat([c.topk_indices_TK for c in calls], runs).long()
        if all(c.mask_T is None for c in calls):
            weight_N = torch.ones(sum(sizes), device=device)
        else:
            # Converted once, after the cat: per call, the conversions cost decoding more
            # than the fold's arithmetic.
            masks = [
                torch.ones(n, dtype=torch.long, device=device) if c.mask_T is None else c.mask_T
                for c, n in zip(calls, sizes, strict=True)
            ]
            weight_N = _cat(masks, runs).float()
        if probabilities is None:
            finite_N, entropy_N, top1_N, lse_N, probs_NE = _softmax_figures(logits_NE)
        else:
            finite_N, entropy_N, top1_N, lse_N, probs_NE = _figures(logits_NE, probabilities)
        # A token whose logits hold NaN or an infinity is counted apart and left out of
        # every figure: one such token would otherwise turn the layer's sums into NaN for
        # good. Its figures are zeroed, since even at weight 0 a NaN would reach the sums.
        nonfinite_N = weight_N * (~finite_N).float()
        weight_N = weight_N * finite_N.float()
        entropy_N, top1_N, lse_N = (
            torch.where(finite_N, x, 0.0) for x in (entropy_N, top1_N, lse_N)
        )
        # Built with numpy: torch.tensor reads a long Python list several times slower.
        layers_R, sizes_R = np.array([c.layer for c in calls]), np.array(sizes)
        call_N = _to_device(torch.from_numpy(np.repeat(np.arange(R), sizes_R)), device)
        layer_N = _to_device(torch.from_numpy(np.repeat(layers_R, sizes_R)), device)
        layer_R = _to_device(torch.from_numpy(layers_R), device)
        mask_A = weight_N.long().repeat_interleave(K)
        expert_A = expert_NK.reshape(-1)

        per_token = torch.stack([weight_N, entropy_N * weight_N, top1_N * weight_N], dim=1)
        self.scalars_LC[:, :3].index_add_(0, layer_N, per_token.double())
        self.scalars_LC[:, NONFINITE].index_add_(0, layer_N, nonfinite_N.double())

        cell_A = layer_N.repeat_interleave(K) * self.tokens_per_expert_LE.shape[1] + expert_A
        self.tokens_per_expert_LE.view(-1).index_add_(0, cell_A, mask_A)

        if self.router_losses:
            # The reference model's formulas, per call: E·Σ fᵢ·Pᵢ and mean logsumexp².
            tokens_R = torch.zeros(R, device=device).index_add_(0, call_N, weight_N).clamp_min(1)
            assignments_RE = torch.zeros(R * E, device=device)
            assignments_RE.index_add_(0, call_N.repeat_interleave(K) * E + expert_A, mask_A.float())
            share_RE = assignments_RE.view(R, E) / (tokens_R[:, None] * K)
            prob_sum_RE = torch.zeros(R, E, device=device)
            probs_NE = torch.where(finite_N[:, None], probs_NE, 0.0)
            prob_sum_RE.index_add_(0, call_N, probs_NE * weight_N[:, None])
            aux_R = E * (share_RE * prob_sum_RE / tokens_R[:, None]).sum(dim=1)
            z_R = torch.zeros(R, device=device).index_add_(0, call_N, lse_N.square() * weight_N)
            losses_R2 = torch.stack([aux_R, z_R / tokens_R], dim=1)
            self.scalars_LC[:, AUX : Z + 1].index_add_(0, layer_R, losses_R2.double())

        if self.histogram:
            S = self.entropy_slots
            slot_A = (entropy_N * S).long().clamp(0, S - 1).repeat_interleave(K)
            E_max = self.entropy_histogram_LES.shape[1]
            cell_A = (layer_N.repeat_interleave(K) * E_max + expert_A) * S + slot_A
            self.entropy_histogram_LES.view(-1).index_add_(0, cell_A, mask_A)

    def add_dropped(self, layers: Sequence[int], dropped: Sequence[torch.Tensor]) -> None:
        """Dropped assignments reported by MoE blocks, one scalar per block call."""
        layer_R = _to_device(torch.tensor(layers), self.device)
        dropped_R = torch.stack([d.reshape(()) for d in dropped]).to(torch.float64)
        self.scalars_LC[:, DROPPED].index_add_(0, layer_R, dropped_R)

    def stacked(self) -> torch.Tensor:
        """Every sum in one float64 vector, the calls per layer last, for one collective:
        float64 holds counts exactly up to 2⁵³."""
        calls_L = _to_device(torch.tensor(self.calls_L, dtype=torch.float64), self.device)
        parts = (self.scalars_LC, self.tokens_per_expert_LE, self.entropy_histogram_LES)
        return torch.cat([*(t.reshape(-1).double() for t in parts), calls_L])

    def unstack(self, sums: torch.Tensor) -> None:
        """Takes `sums`, laid out as `stacked` lays them out, as these buffers' sums."""
        parts = (self.scalars_LC, self.tokens_per_expert_LE, self.entropy_histogram_LES)
        *values, calls_L = sums.split([*(t.numel() for t in parts), len(self.calls_L)])
        for t, v in zip(parts, values, strict=True):
            t.view(-1).copy_(v if t.is_floating_point() else v.round())
        self._reduced_calls_L = calls_L.round().long()

    def drain(self) -> WindowSums:
        """Starts copying the sums to the host and zeroes them, without waiting for the copy."""
        on_gpu = self.device.type == "cuda"
        copies = []
        for t in (self.scalars_LC, self.tokens_per_expert_LE, self.entropy_histogram_LES):
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=on_gpu)
            host.copy_(t, non_blocking=True)
            t.zero_()  # queued after the copy on the same stream
            copies.append(host)
        if self._reduced_calls_L is None:
            calls = torch.tensor(self.calls_L, dtype=torch.long)
        else:
            # Copied before the event below is recorded, which thus covers this copy too.
            calls = torch.empty(len(self.calls_L), dtype=torch.long, pin_memory=on_gpu)
            calls.copy_(self._reduced_calls_L, non_blocking=True)
        ready = None
        if on_gpu:
            ready = torch.cuda.Event()
            # On the buffers' device's stream, which need not be the current device's.
            ready.record(torch.cuda.current_stream(self.device))
        self.calls_L, self._reduced_calls_L = [0] * len(self.calls_L), None
        scalars, tokens_per_expert, histogram = copies
        return WindowSums(scalars, tokens_per_expert, histogram, calls, ready)


def _runs(sizes: list[int]) -> list[tuple[int, int]]:
    """The bounds of the runs of equal values in `sizes`: the calls of one forward, and
    mostly of many forwards in a row, have as many tokens."""
    starts = [i for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1]]
    return list(zip([0, *starts], [*starts, len(sizes)], strict=True))


def _cat(tensors: list[torch.Tensor], runs: list[tuple[int, int]]) -> torch.Tensor:
    """`torch.cat`, one run of tensors of one shape at a time: on CPU, a cat of mixed shapes
    copies its tensors one by one (about 1 µs each), and one of a single shape in one pass."""
    parts = [torch.cat(tensors[start:end]) for start, end in runs]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


# Per token: whether its logits are all finite, its router distribution's normalised entropy
# and top-1 probability, the logsumexp of its logits, and the distribution itself. Tokens
# whose logits hold NaN or an infinity may have any value in the others.
_Figures = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _softmax_figures(logits_NE: torch.Tensor) -> _Figures:
    """`_figures` of a softmax router, in about half the passes over the logits: decoding
    folds many small calls, and each pass over them costs."""
    max_N = logits_NE.amax(dim=-1)
    shifted_NE = logits_NE - max_N[:, None]
    exp_NE = shifted_NE.exp()
    sum_N = exp_NE.sum(dim=-1)
    log_sum_N = sum_N.log()
    # H = log Σ eˣ − Σ eˣ·x / Σ eˣ, x the logits less their max. A NaN or an infinity
    # among the logits makes it NaN (at −∞, 0·−∞), which marks the token.
    entropy_N = log_sum_N - torch.linalg.vecdot(exp_NE, shifted_NE) / sum_N
    entropy_N = entropy_N / math.log(logits_NE.shape[-1])
    # The top-1 probability is e⁰ / Σ eˣ.
    top1_N = sum_N.reciprocal()
    return torch.isfinite(entropy_N), entropy_N, top1_N, max_N + log_sum_N, exp_NE * top1_N[:, None]


def _figures(
    logits_NE: torch.Tensor, probabilities: Callable[[torch.Tensor], torch.Tensor]
) -> _Figures:
    probs_NE = probabilities(logits_NE)
    entropy_N = torch.special.entr(probs_NE).sum(dim=-1) / math.log(logits_NE.shape[-1])
    return (
        torch.isfinite(logits_NE).all(dim=-1),
        entropy_N,
        probs_NE.max(dim=-1).values,
        torch.logsumexp(logits_NE, dim=-1),
        probs_NE,
    )


def _to_device(index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small index built on the host, copied without making the host wait: a copy from
    ordinary memory to a GPU would block until the device has caught up."""
    if device.type == "cuda":
        return index.pin_memory().to(device, non_blocking=True)
    return index
