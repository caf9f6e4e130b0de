"""The MoE feed-forward: fine-grained routed experts, always-on shared experts, router losses.

Shape legend: B batch, S sequence, T tokens (B·S), D model width, H expert hidden width,
E routed experts, K experts per token, A assignments (T·K), N assignments kept.
Padding (`token_mask_BS` 0) passes through the router, whose losses leave it out, but never
reaches an expert.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from observe.workload.config import MoEConfig
from observe.workload.router import Router


class SwiGLU(nn.Module):
    """A gated feed-forward: the shared experts, fused into one wider network."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden, bias=False)
        self.w3 = nn.Linear(d_model, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class RoutedExperts(nn.Module):
    """E SwiGLU experts stored as stacked weights, run over tokens grouped by expert."""

    def __init__(self, n_experts: int, d_model: int, hidden: int) -> None:
        super().__init__()
        self.w1_EDH = nn.Parameter(torch.empty(n_experts, d_model, hidden))
        self.w3_EDH = nn.Parameter(torch.empty(n_experts, d_model, hidden))
        self.w2_EHD = nn.Parameter(torch.empty(n_experts, hidden, d_model))

    def forward(self, x_ND: torch.Tensor, tokens_per_expert: list[int]) -> torch.Tensor:
        """`x_ND` holds the kept assignments sorted by expert, `tokens_per_expert[e]` of each."""
        outputs = []
        for e, x_nD in enumerate(x_ND.split(tokens_per_expert)):
            if tokens_per_expert[e]:
                h_nH = F.silu(x_nD @ self.w1_EDH[e]) * (x_nD @ self.w3_EDH[e])
                outputs.append(h_nH @ self.w2_EHD[e])
        if not outputs:
            return x_ND.new_zeros(0, x_ND.shape[-1])
        return torch.cat(outputs)


class MoEOutput(NamedTuple):
    """What one MoE feed-forward returns; a forward hook reads these fields."""

    hidden_BSD: torch.Tensor
    # E · Σᵢ fᵢ·Pᵢ, fᵢ the share of assignments to expert i, Pᵢ its mean router probability:
    # 1.0 when perfectly balanced, E when every token goes to one expert.
    aux_loss: torch.Tensor
    # Mean over tokens of logsumexp(logits)²: keeps router logits small and stable.
    z_loss: torch.Tensor
    # Real tokens' (token, expert) assignments over an expert's capacity, which skip that
    # expert. Padding never reaches an expert, so it is never dropped.
    dropped_tokens: torch.Tensor


class MoEFeedForward(nn.Module):
    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        self.n_experts = config.n_routed_experts
        self.top_k = config.top_k
        self.capacity_factor = config.capacity_factor
        self.router = Router(config.d_model, config.n_routed_experts, config.top_k)
        self.experts = RoutedExperts(config.n_routed_experts, config.d_model, config.expert_hidden)
        self.shared_experts = (
            SwiGLU(config.d_model, config.expert_hidden * config.n_shared_experts)
            if config.n_shared_experts
            else None
        )

    def capacity(self, n_tokens: int) -> int | None:
        """Most assignments one expert takes in a forward of `n_tokens` real tokens."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * n_tokens * self.top_k / self.n_experts)

    def forward(self, x_BSD: torch.Tensor, token_mask_BS: torch.Tensor | None = None) -> MoEOutput:
        B, S, D = x_BSD.shape
        x_TD = x_BSD.reshape(-1, D)
        logits_TE, topk_weights_TK, topk_indices_TK = self.router(x_TD)
        aux_loss, z_loss = self._router_losses(logits_TE, topk_indices_TK, token_mask_BS)

        E, K = self.n_experts, self.top_k
        bucket_A = topk_indices_TK.reshape(-1)
        if token_mask_BS is not None:
            # Padding goes to bucket E, past every expert: sorted after the real assignments,
            # it is never run, takes no expert's capacity and is never counted as dropped.
            real_A = token_mask_BS.reshape(-1).bool().repeat_interleave(K)
            bucket_A = torch.where(real_A, bucket_A, E)
        order_A = torch.argsort(bucket_A, stable=True)
        bucket_sizes = torch.bincount(bucket_A, minlength=E + 1)
        tokens_per_expert = bucket_sizes[:E].tolist()
        n_tokens = sum(tokens_per_expert) // K
        order_A = order_A[: n_tokens * K]
        dropped = x_TD.new_zeros((), dtype=torch.long)
        capacity = self.capacity(n_tokens)
        if capacity is not None:
            # Within an expert, earlier tokens win: position counts from the expert's first slot.
            first_slot = bucket_sizes.cumsum(0) - bucket_sizes
            position_A = torch.arange(order_A.numel(), device=x_TD.device)
            position_A = position_A - first_slot[bucket_A[order_A]]
            keep_A = position_A < capacity
            dropped = (~keep_A).sum()
            order_A = order_A[keep_A]
            tokens_per_expert = [min(n, capacity) for n in tokens_per_expert]

        token_N = order_A // K
        expert_out_ND = self.experts(x_TD[token_N], tokens_per_expert)
        weight_N = topk_weights_TK.reshape(-1)[order_A].to(x_TD.dtype)
        routed_TD = torch.zeros_like(x_TD).index_add_(0, token_N, expert_out_ND * weight_N[:, None])
        if self.shared_experts is not None:
            routed_TD = routed_TD + self.shared_experts(x_TD)
        return MoEOutput(routed_TD.reshape(B, S, D), aux_loss, z_loss, dropped)

    def _router_losses(
        self,
        logits_TE: torch.Tensor,
        topk_indices_TK: torch.Tensor,
        token_mask_BS: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Load-balancing and z-loss over real tokens: padding must not sway the router."""
        if token_mask_BS is None:
            mask_T = logits_TE.new_ones(logits_TE.shape[0])
        else:
            mask_T = token_mask_BS.reshape(-1).to(logits_TE.dtype)
        n_tokens = mask_T.sum().clamp_min(1.0)
        probs_E = (logits_TE.softmax(dim=-1) * mask_T[:, None]).sum(0) / n_tokens
        mask_A = mask_T.repeat_interleave(self.top_k)
        assignments_E = logits_TE.new_zeros(self.n_experts).scatter_add_(
            0, topk_indices_TK.reshape(-1), mask_A
        )
        share_E = assignments_E / (n_tokens * self.top_k)
        aux_loss = self.n_experts * (share_E * probs_E).sum()
        z_loss = (torch.logsumexp(logits_TE, dim=-1).square() * mask_T).sum() / n_tokens
        return aux_loss, z_loss
