"""The top-k router of the reference model, a module of its own so hooks can find it.

Shape legend: T tokens (batch × sequence, flattened), D model width, E routed experts,
K experts chosen per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Router(nn.Module):
    """Linear gate, softmax in float32, top-k, weights renormalised to sum to one."""

    def __init__(self, d_model: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        self.n_experts = n_experts
        self.top_k = top_k
        self.gate = nn.Linear(d_model, n_experts, bias=False)

    def forward(self, x_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns `(logits_TE, topk_weights_TK, topk_indices_TK)`; logits in float32."""
        # Routing in low precision flips near-tied choices; float32 keeps them stable.
        logits_TE = F.linear(x_TD.float(), self.gate.weight.float())
        scores_TE = logits_TE.softmax(dim=-1)
        topk_scores_TK, topk_indices_TK = scores_TE.topk(self.top_k, dim=-1)
        topk_weights_TK = topk_scores_TK / topk_scores_TK.sum(dim=-1, keepdim=True)
        return logits_TE, topk_weights_TK, topk_indices_TK
