"""Router calls recorded between folds: kept by the hooks at the least cost, then read and
handed to the folder many at once.

In the middle of a forward every line of Python costs several times what it costs in a loop
over many calls: decoding `bench` measured 7 µs a call to read and record an output in its
router's hook, against 2 µs to keep it there and 4 µs to read it at the fold with the
others (under 2 µs where the loop's data stays in cache). So where an adapter
reads a router's output alone (`RouterAdapter.reads_output_only`), the hook keeps the output
as it is, with its forward's token mask, and `fold` reads them all. Other routers' calls are
read in their hooks and recorded as they come.

Shape legend: T tokens, E routed experts, K experts chosen per token.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from observe.hooks.adapters import RouterAdapter
from observe.hooks.buffers import RouterCall
from observe.hooks.folding import Folder

# Recorded router calls are folded into the sums at each flush, or sooner once this many
# calls or logits wait: folding many calls at once is what keeps decoding cheap (a window
# of `bench` decoding, 10 steps × 64 tokens × 4 layers, is 2,560 calls), and the bounds keep
# the memory the recorded tensors hold small (4M logits: 16 MB in float32, and at most
# folding.MAX_WAITING more such batches handed to the folder's thread).
MAX_PENDING_CALLS = 4096
MAX_PENDING_LOGITS = 1 << 22


class Recorder:
    """The router calls and dropped-token counts of one monitor since its last fold."""

    def __init__(self, adapter: RouterAdapter, folder: Folder, n_experts_L: list[int]) -> None:
        self._adapter = adapter
        self._folder = folder
        self._n_experts_L = n_experts_L
        self.calls: list[RouterCall] = []
        # Router outputs not read yet, with their forward's token mask.
        self.outputs: list[tuple[int, nn.Module, Any, torch.Tensor | None]] = []
        self.dropped: list[tuple[int, torch.Tensor]] = []
        # Logits recorded or kept since the last fold; a kept output's counted at the most
        # its router can return.
        self.pending_logits = 0

    def keep(
        self, layer: int, router: nn.Module, output: Any, mask: torch.Tensor | None, tokens: int
    ) -> None:
        """Keeps a router's `output` to read at the fold: `mask` is its forward's token mask
        (batch × positions), `tokens` the forward's batch × positions."""
        self.outputs.append((layer, router, output, mask))
        self._count(tokens * self._n_experts_L[layer])

    def record(self, call: RouterCall) -> None:
        """Records a call read already (`flat`)."""
        self.calls.append(call)
        self._count(call.logits_TE.numel())

    def drop(self, layer: int, dropped: torch.Tensor) -> None:
        """Records the assignments a MoE block dropped in one call."""
        self.dropped.append((layer, dropped.detach()))

    def fold(self) -> None:
        """Reads the kept outputs and hands every recorded call to the folder."""
        if self.outputs:
            self._read_outputs()
        if self.calls or self.dropped:
            # Taken before handing over: a signal raised while the folder's queue is full
            # must not leave them here to be handed over twice.
            calls, dropped = self.calls, self.dropped
            self.calls, self.dropped, self.pending_logits = [], [], 0
            self._folder.fold(calls, dropped)

    def _count(self, logits: int) -> None:
        self.pending_logits += logits
        waiting = len(self.calls) + len(self.outputs)
        if waiting >= MAX_PENDING_CALLS or self.pending_logits >= MAX_PENDING_LOGITS:
            self.fold()

    def _read_outputs(self) -> None:
        outputs, self.outputs = self.outputs, []
        # A forward's layers share its mask, sliced once per token count.
        masks: dict[tuple[int, int], torch.Tensor | None] = {}
        for layer, router, output, mask in outputs:
            logits_TE, topk_indices_TK = self._adapter.read_router(router, output)
            if topk_indices_TK is None:
                continue  # a router that returns no choice, and no site that shows it
            logits_TE, topk_indices_TK = flat(logits_TE, topk_indices_TK)
            key = (id(mask), logits_TE.shape[0])
            if key not in masks:
                masks[key] = newest(mask, key[1])
            self.calls.append(RouterCall(layer, logits_TE, topk_indices_TK, masks[key]))


def flat(
    logits_TE: torch.Tensor, topk_indices_TK: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A router call's tensors detached and flattened to tokens; each op is skipped where it
    would change nothing."""
    if logits_TE.requires_grad:
        logits_TE = logits_TE.detach()
    if logits_TE.dim() != 2:
        logits_TE = logits_TE.reshape(-1, logits_TE.shape[-1])
    if topk_indices_TK.dim() != 2:
        topk_indices_TK = topk_indices_TK.reshape(logits_TE.shape[0], -1)
    return logits_TE, topk_indices_TK


def newest(mask: torch.Tensor | None, n_tokens: int) -> torch.Tensor | None:
    """The newest positions of a forward's token mask (batch × positions), flattened like a
    router's `n_tokens` tokens; None when the shapes do not line up (the router was called
    outside the model's forward)."""
    if mask is None or n_tokens % mask.shape[0]:
        return None
    positions = n_tokens // mask.shape[0]
    if positions > mask.shape[1]:
        return None
    # Contiguous: the fold concatenates a window's masks, and on CPU a cat copies views of
    # different strides one by one, slower than this copy.
    return mask[:, -positions:].reshape(-1).contiguous()
