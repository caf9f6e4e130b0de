"""The reference DeepSeek-MoE-style decoder: attention, RMSNorm and an MoE feed-forward per layer.

Shape legend: B batch, S new positions, P positions including the cache, D model width,
V vocabulary, L layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from observe.errors import ObserveError
from observe.workload.attention import CausalSelfAttention, KVCache, rotary_tables
from observe.workload.config import MoEConfig
from observe.workload.moe import MoEFeedForward, MoEOutput

IGNORE_INDEX = -100


@dataclass
class ModelOutput:
    logits_BSV: torch.Tensor
    # lm_loss + aux_loss_coef · aux_loss + z_loss_coef · z_loss; None without labels.
    loss: torch.Tensor | None
    lm_loss: torch.Tensor | None
    # Router losses, averaged over layers.
    aux_loss: torch.Tensor
    z_loss: torch.Tensor
    dropped_tokens_L: torch.Tensor


class DecoderLayer(nn.Module):
    def __init__(self, config: MoEConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.attention = CausalSelfAttention(config.d_model, config.n_heads, layer)
        self.ffn_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.moe = MoEFeedForward(config)

    def forward(
        self,
        x_BSD: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask_B1SP: torch.Tensor | None,
        kv_cache: KVCache | None,
        token_mask_BS: torch.Tensor | None,
    ) -> tuple[torch.Tensor, MoEOutput]:
        h_BSD = x_BSD + self.attention(self.attn_norm(x_BSD), rotary, mask_B1SP, kv_cache)
        moe = self.moe(self.ffn_norm(h_BSD), token_mask_BS)
        return h_BSD + moe.hidden_BSD, moe


class MoETransformer(nn.Module):
    rotary_cos: torch.Tensor
    rotary_sin: torch.Tensor

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.n_layers))
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight
        cos, sin = rotary_tables(
            config.max_seq_len, config.d_model // config.n_heads, config.rope_theta
        )
        self.register_buffer("rotary_cos", cos, persistent=False)
        self.register_buffer("rotary_sin", sin, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # Output projections shrink with depth so the residual stream stays at unit scale.
        out_std = 0.02 / (2 * self.config.n_layers) ** 0.5
        for name, param in self.named_parameters():
            std = out_std if name.endswith(("out_proj.weight", "w2.weight", "w2_EHD")) else 0.02
            if param.dim() >= 2:
                nn.init.normal_(param, std=std)

    def forward(
        self,
        input_ids_BS: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels_BS: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> ModelOutput:
        """`attention_mask` (B, P): 1 for real tokens, 0 for padding, over cached and new ones."""
        B, S = input_ids_BS.shape
        past = kv_cache.length if kv_cache is not None else 0
        if past + S > self.config.max_seq_len:
            raise ObserveError(
                f"sequence of {past + S} positions is longer than the model's max_seq_len="
                f"{self.config.max_seq_len}: shorten the input or generate fewer tokens"
            )
        positions_BS, mask_B1SP, token_mask_BS = self._positions_and_mask(
            B, S, past, attention_mask, input_ids_BS.device
        )
        rotary = (self.rotary_cos[positions_BS], self.rotary_sin[positions_BS])

        x_BSD = self.embed(input_ids_BS)
        moe_outputs = []
        for layer in self.layers:
            x_BSD, moe = layer(x_BSD, rotary, mask_B1SP, kv_cache, token_mask_BS)
            moe_outputs.append(moe)
        logits_BSV = self.lm_head(self.norm(x_BSD))

        aux_loss = torch.stack([m.aux_loss for m in moe_outputs]).mean()
        z_loss = torch.stack([m.z_loss for m in moe_outputs]).mean()
        dropped_L = torch.stack([m.dropped_tokens for m in moe_outputs])
        lm_loss = loss = None
        if labels_BS is not None:
            lm_loss = F.cross_entropy(
                logits_BSV.reshape(-1, logits_BSV.shape[-1]).float(),
                labels_BS.reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
            loss = lm_loss + self.config.aux_loss_coef * aux_loss + self.config.z_loss_coef * z_loss
        return ModelOutput(logits_BSV, loss, lm_loss, aux_loss, z_loss, dropped_L)

    @staticmethod
    def _positions_and_mask(
        B: int, S: int, past: int, attention_mask: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Rotary positions (B, S), the attention mask (B, 1, S, P) and the new tokens' mask."""
        if attention_mask is None and past == 0:
            return torch.arange(S, device=device).expand(B, S), None, None
        if attention_mask is None:
            attention_mask = torch.ones(B, past + S, dtype=torch.long, device=device)
        if attention_mask.shape != (B, past + S):
            raise ObserveError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the input needs "
                f"{(B, past + S)}: give one entry per cached and new position"
            )
        # Left padding: positions count real tokens only, so padded prompts rotate alike.
        positions_BP = (attention_mask.cumsum(dim=-1) - 1).clamp_min(0)
        query_S = torch.arange(past, past + S, device=device)
        key_P = torch.arange(past + S, device=device)
        causal_SP = key_P[None, :] <= query_S[:, None]
        mask_B1SP = causal_SP[None, None] & attention_mask[:, None, None, :].bool()
        # A padding query has no real key; letting it see itself avoids NaN rows.
        mask_B1SP = mask_B1SP | (key_P[None, :] == query_S[:, None])[None, None]
        return positions_BP[:, past:], mask_B1SP, attention_mask[:, past:]
