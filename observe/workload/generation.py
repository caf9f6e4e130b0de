"""Batched generation with a KV cache: greedy decoding or nucleus (top-p) sampling.

Shape legend: B batch, S positions fed this step, V vocabulary, T generated positions.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from observe.errors import ObserveError
from observe.workload.attention import KVCache
from observe.workload.job_config import GenerationSettings
from observe.workload.model import MoETransformer
from observe.workload.tokenizer import ByteTokenizer

CLOSED_MESSAGE = (
    "the inference engine closed before this request finished: keep the engine open until "
    "every result has arrived"
)


def generate_batch(
    model: MoETransformer,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    tokenizer: ByteTokenizer | None = None,
    seed: int = 0,
    abort: threading.Event | None = None,
    on_step: Callable[[list[int]], None] | None = None,
) -> list[list[int]]:
    """New token ids for each prompt, generated as one left-padded batch with a KV cache.

    A row ends at its first EOS, which it keeps. Prompts too long to leave room for
    `max_new_tokens` lose their oldest tokens. Sampling is seeded by `settings.seed`, or by
    `seed` when that is unset. `on_step` gets each step's next id per row (PAD for a row
    already ended) as soon as it is chosen. Setting `abort` aborts between steps.
    """
    if not prompts:
        return []
    tokenizer = tokenizer or ByteTokenizer()
    config = model.config
    check_fits(settings, config.max_seq_len)
    device = model.lm_head.weight.device
    input_ids_BS, attention_mask_BS = tokenizer.encode_batch(prompts)
    # Left padding ends every prompt in the last column, so keeping the last columns keeps
    # each prompt's most recent tokens.
    limit = prompt_limit(settings, config.max_seq_len)
    input_ids_BS = input_ids_BS[:, -limit:].to(device)
    attention_mask_BS = attention_mask_BS[:, -limit:].to(device)
    generators = []
    if settings.top_p is not None:
        request_seed = seed if settings.seed is None else settings.seed
        generators = [_request_generator(request_seed, prompt) for prompt in prompts]

    kv_cache = KVCache(config.n_layers)
    finished_B = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    step_ids_B: list[torch.Tensor] = []
    model.eval()
    with torch.inference_mode():
        for _ in range(settings.max_new_tokens):
            if abort is not None and abort.is_set():
                raise ObserveError(CLOSED_MESSAGE)
            output = model(input_ids_BS, attention_mask=attention_mask_BS, kv_cache=kv_cache)
            next_B = _next_tokens(output.logits_BSV[:, -1], settings, generators)
            next_B = next_B.masked_fill(finished_B, tokenizer.PAD_ID)
            step_ids_B.append(next_B)
            if on_step is not None:
                on_step(next_B.tolist())
            finished_B |= next_B == tokenizer.EOS_ID
            if finished_B.all():
                break
            input_ids_BS = next_B[:, None]
            attention_mask_BS = F.pad(attention_mask_BS, (0, 1), value=1)
    new_ids_BT = torch.stack(step_ids_B, dim=1).tolist()
    return [
        row[: row.index(tokenizer.EOS_ID) + 1] if tokenizer.EOS_ID in row else row
        for row in new_ids_BT
    ]


def check_fits(settings: GenerationSettings, max_seq_len: int) -> None:
    if settings.max_new_tokens >= max_seq_len:
        raise ObserveError(
            f"max_new_tokens={settings.max_new_tokens} leaves no room for a prompt in the "
            f"model's max_seq_len={max_seq_len}: ask for fewer than {max_seq_len} new tokens"
        )


def prompt_limit(settings: GenerationSettings, max_seq_len: int) -> int:
    """Prompt tokens, BOS included, the model is fed at most: the rest make room for new ones."""
    return max_seq_len - settings.max_new_tokens


def _request_generator(seed: int, prompt: str) -> torch.Generator:
    # Each request samples from its own stream, so its text does not depend on which other
    # requests share its batch, and a cached response is the one regeneration would give.
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8]) >> 1)


def _next_tokens(
    logits_BV: torch.Tensor, settings: GenerationSettings, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    if settings.top_p is None:
        return logits_BV.argmax(dim=-1)
    probs_BV = (logits_BV.float() / settings.temperature).softmax(dim=-1)
    # Stable sort: ties rank by token id as argmax does, so a tiny top_p is exactly greedy.
    sorted_BV, order_BV = probs_BV.sort(dim=-1, descending=True, stable=True)
    # A token stays while the mass ranked above it is short of top_p; the top one always does.
    kept_BV = sorted_BV * ((sorted_BV.cumsum(dim=-1) - sorted_BV) < settings.top_p)
    cdf_BV = kept_BV.cumsum(dim=-1)
    u_B = torch.stack([torch.rand((), generator=g) for g in generators]).to(cdf_BV.device)
    rank_B1 = torch.searchsorted(cdf_BV, (u_B * cdf_BV[:, -1])[:, None], right=True)
    return order_BV.gather(-1, rank_B1.clamp(max=cdf_BV.shape[-1] - 1)).squeeze(-1)
