"""Causal multi-head self-attention with rotary positions and a key/value cache.

Shape legend: B batch, S new positions, P positions in the cache after this step,
D model width, N heads, Dh head width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Keys and values of earlier positions, one pair per layer, grown as tokens arrive."""

    def __init__(self, n_layers: int) -> None:
        self._keys: list[torch.Tensor | None] = [None] * n_layers
        self._values: list[torch.Tensor | None] = [None] * n_layers

    @property
    def length(self) -> int:
        keys = self._keys[0]
        return 0 if keys is None else keys.shape[2]

    def update(
        self, layer: int, k_BNSDh: torch.Tensor, v_BNSDh: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends this step's keys and values; returns every position's."""
        past_k, past_v = self._keys[layer], self._values[layer]
        if past_k is not None and past_v is not None:
            k_BNSDh = torch.cat([past_k, k_BNSDh], dim=2)
            v_BNSDh = torch.cat([past_v, v_BNSDh], dim=2)
        self._keys[layer], self._values[layer] = k_BNSDh, v_BNSDh
        return k_BNSDh, v_BNSDh

    def keep(self, rows_B: torch.Tensor, start: int) -> None:
        """Keeps only the batch rows `rows_B`, and the positions from `start` on."""
        for layer, (k, v) in enumerate(zip(self._keys, self._values, strict=True)):
            if k is not None and v is not None:
                self._keys[layer] = k[rows_B, :, start:]
                self._values[layer] = v[rows_B, :, start:]


def rotary_tables(
    max_positions: int, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of each position's rotation angles, (max_positions, head_dim // 2)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(
    x_BNSDh: torch.Tensor, cos_BSd: torch.Tensor, sin_BSd: torch.Tensor
) -> torch.Tensor:
    x1, x2 = x_BNSDh.float().chunk(2, dim=-1)
    cos, sin = cos_BSd[:, None], sin_BSd[:, None]
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return rotated.to(x_BNSDh.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, layer: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.layer = layer
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(
        self,
        x_BSD: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask_B1SP: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """`mask_B1SP` (True = may attend) replaces the plain causal mask when given."""
        B, S, D = x_BSD.shape
        q, k, v = (
            t.view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
            for t in self.qkv(x_BSD).chunk(3, dim=-1)
        )
        q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, k, v)
        if mask_B1SP is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_B1SP)
        return self.out_proj(out.transpose(1, 2).reshape(B, S, D))
