"""Batched generation with a KV cache: greedy decoding or nucleus (top-p) sampling, each row
with its own settings.

Shape legend: B rows still generating, S positions fed this step, P positions in the cache,
V vocabulary, R rows of the B that sample.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from observe.errors import ObserveError
from observe.workload.attention import KVCache
from observe.workload.job_config import GenerationSettings
from observe.workload.model import MoETransformer
from observe.workload.stops import StopScanner
from observe.workload.tokenizer import ByteTokenizer

CLOSED_MESSAGE = (
    "the inference engine closed before this request finished: keep the engine open until "
    "every result has arrived"
)


@dataclass
class _Row:
    """One prompt's generation: how it picks its ids, and what ends it."""

    settings: GenerationSettings
    # Its own stream of random numbers when it samples; None when it decodes greedily.
    generator: torch.Generator | None
    scanner: StopScanner
    new_ids: list[int] = field(default_factory=list)

    def take(self, id_: int) -> bool:
        """Adds the row's next id; True once the row has ended."""
        self.new_ids.append(id_)
        self.scanner.feed([id_])
        return self.scanner.stopped or len(self.new_ids) == self.settings.max_new_tokens


def generate_batch(
    model: MoETransformer,
    prompts: Sequence[str],
    settings: GenerationSettings | Sequence[GenerationSettings],
    *,
    tokenizer: ByteTokenizer | None = None,
    seed: int = 0,
    abort: threading.Event | None = None,
    on_step: Callable[[dict[int, int]], None] | None = None,
) -> list[list[int]]:
    """New token ids for each prompt, generated as one left-padded batch with a KV cache.

    `settings` holds for every prompt, or is a sequence of one per prompt: each row decodes
    greedily or samples, is truncated and ends by its own. A row ends at its first EOS,
    which it keeps; once its stop sequences settle where its output ends, keeping the ids
    through the one that settled it; or at its `max_new_tokens`. An ended row leaves the
    batch at once: it costs no further forward pass, and hooks on the model see none of it.
    A prompt too long to leave room for its `max_new_tokens` loses its oldest tokens.

    A sampling row draws from its own generator, seeded by its `settings.seed` (`seed` when
    that is unset) and its prompt, so its ids are those it gets alone, whatever its batch
    mates; but for a model whose experts have a capacity (`capacity_factor`), for which
    batch mates compete. `on_step` gets each step's id of every row still generating, by
    the row's index in `prompts`, as soon as they are chosen. Setting `abort` aborts
    between steps.
    """
    if not prompts:
        return []
    per_row = [settings] * len(prompts) if isinstance(settings, GenerationSettings) else settings
    if len(per_row) != len(prompts):
        raise ObserveError(
            f"{len(per_row)} generation settings for {len(prompts)} prompts: give one, or "
            "one per prompt"
        )
    tokenizer = tokenizer or ByteTokenizer()
    config = model.config
    for row_settings in per_row:
        check_fits(row_settings, config.max_seq_len)
    rows = [
        _Row(s, _row_generator(s, prompt, seed), StopScanner(s.stop))
        for prompt, s in zip(prompts, per_row, strict=True)
    ]
    device = model.lm_head.weight.device
    input_ids_BS, attention_mask_BP = _truncated_prompts(
        tokenizer, prompts, [prompt_limit(s, config.max_seq_len) for s in per_row]
    )
    input_ids_BS, attention_mask_BP = input_ids_BS.to(device), attention_mask_BP.to(device)
    # Which row of `rows` each row of the batch is.
    live = list(range(len(rows)))
    kv_cache = KVCache(config.n_layers)
    model.eval()
    with torch.inference_mode():
        while True:
            if abort is not None and abort.is_set():
                raise ObserveError(CLOSED_MESSAGE)
            output = model(input_ids_BS, attention_mask=attention_mask_BP, kv_cache=kv_cache)
            next_B = _next_tokens(output.logits_BSV[:, -1], [rows[r] for r in live])
            ids = next_B.tolist()
            if on_step is not None:
                on_step(dict(zip(live, ids, strict=True)))
            going = [b for b, id_ in enumerate(ids) if not rows[live[b]].take(id_)]
            if not going:
                break
            if len(going) < len(live):
                kept_B = torch.tensor(going, device=device)
                next_B, attention_mask_BP = next_B[kept_B], attention_mask_BP[kept_B]
                # Once a row left, columns before every remaining row's first real token
                # hold padding alone: dropped, the cache is as long as the longest remaining
                # row needs, so each row has its own max_new_tokens' room, whatever its
                # batch mates' prompts.
                start = _first_real_column(attention_mask_BP)
                kv_cache.keep(kept_B, start)
                attention_mask_BP = attention_mask_BP[:, start:]
                live = [live[b] for b in going]
            input_ids_BS = next_B[:, None]
            attention_mask_BP = F.pad(attention_mask_BP, (0, 1), value=1)
    return [row.new_ids for row in rows]


def check_fits(settings: GenerationSettings, max_seq_len: int) -> None:
    if settings.max_new_tokens >= max_seq_len:
        raise ObserveError(
            f"max_new_tokens={settings.max_new_tokens} leaves no room for a prompt in the "
            f"model's max_seq_len={max_seq_len}: ask for fewer than {max_seq_len} new tokens"
        )


def prompt_limit(settings: GenerationSettings, max_seq_len: int) -> int:
    """Prompt tokens, BOS included, the model is fed at most: the rest make room for new ones."""
    return max_seq_len - settings.max_new_tokens


def _truncated_prompts(
    tokenizer: ByteTokenizer, prompts: Sequence[str], limits: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The left-padded batch, each prompt cut to its last `limit` tokens."""
    input_ids_BS, attention_mask_BS = tokenizer.encode_batch(prompts)
    # Left padding ends every prompt in the last column: masking a row's columns before its
    # last `limit` keeps its most recent tokens, and positions count real tokens only, so
    # the row is as if cut.
    width = input_ids_BS.shape[1]
    old_BS = torch.arange(width)[None, :] < (width - torch.tensor(limits))[:, None]
    input_ids_BS = input_ids_BS.masked_fill(old_BS, tokenizer.PAD_ID)
    attention_mask_BS = attention_mask_BS.masked_fill(old_BS, 0)
    start = _first_real_column(attention_mask_BS)
    return input_ids_BS[:, start:], attention_mask_BS[:, start:]


def _first_real_column(attention_mask_BP: torch.Tensor) -> int:
    """The first column holding a real token of any row: those before are padding alone."""
    return int(attention_mask_BP.any(dim=0).int().argmax())


def _row_generator(settings: GenerationSettings, prompt: str, seed: int) -> torch.Generator | None:
    if settings.top_p is None:
        return None
    # Each request samples from its own stream, so its text does not depend on which other
    # requests share its batch, and a cached response is the one regeneration would give.
    request_seed = seed if settings.seed is None else settings.seed
    digest = hashlib.sha256(f"{request_seed}:{prompt}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8]) >> 1)


def _next_tokens(logits_BV: torch.Tensor, rows: Sequence[_Row]) -> torch.Tensor:
    next_B = logits_BV.argmax(dim=-1)
    sampled = [b for b, row in enumerate(rows) if row.generator is not None]
    if not sampled:
        return next_B
    device = logits_BV.device
    sampled_R = torch.tensor(sampled, device=device)
    top_p_R = torch.tensor([rows[b].settings.top_p for b in sampled], device=device)
    temperature_R = torch.tensor([rows[b].settings.temperature for b in sampled], device=device)
    u_R = torch.stack([torch.rand((), generator=rows[b].generator) for b in sampled])
    probs_RV = (logits_BV[sampled_R].float() / temperature_R[:, None]).softmax(dim=-1)
    # Stable sort: ties rank by token id as argmax does, so a tiny top_p is exactly greedy.
    sorted_RV, order_RV = probs_RV.sort(dim=-1, descending=True, stable=True)
    # A token stays while the mass ranked above it is short of top_p; the top one always does.
    kept_RV = sorted_RV * ((sorted_RV.cumsum(dim=-1) - sorted_RV) < top_p_R[:, None])
    cdf_RV = kept_RV.cumsum(dim=-1)
    rank_R1 = torch.searchsorted(cdf_RV, (u_R.to(device) * cdf_RV[:, -1])[:, None], right=True)
    next_B[sampled_R] = order_RV.gather(-1, rank_R1.clamp(max=cdf_RV.shape[-1] - 1)).squeeze(-1)
    return next_B
