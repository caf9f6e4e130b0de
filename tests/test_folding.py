"""The folder: recorded router calls folded off the calling thread (as on CUDA, here on
CPU), to the same sums."""

from __future__ import annotations

import threading

import torch

from observe.hooks.buffers import RouterCall, RoutingBuffers
from observe.hooks.folding import MAX_WAITING, Folder


def calls(seed: int, n: int) -> list[RouterCall]:
    generator = torch.Generator().manual_seed(seed)
    made = []
    for i in range(n):
        logits_TE = torch.randn(5, 8, generator=generator)
        made.append(RouterCall(i % 3, logits_TE, logits_TE.topk(2).indices, None))
    return made


def test_folds_run_on_the_folders_thread_and_give_the_inline_sums() -> None:
    threads: set[str] = set()

    def probabilities(logits_TE: torch.Tensor) -> torch.Tensor:
        threads.add(threading.current_thread().name)
        return logits_TE.softmax(dim=-1)

    cpu = torch.device("cpu")
    folded = RoutingBuffers([8, 8, 8], 4, cpu)
    inline = RoutingBuffers([8, 8, 8], 4, cpu)
    folder = Folder(folded, probabilities, cpu, offload=True)
    # More batches than may wait: the calling thread waits for room, and nothing is lost.
    for seed in range(MAX_WAITING + 3):
        batch = calls(seed, 4)
        folder.fold(batch, [(1, torch.tensor(float(seed)))])
        inline.add_calls(batch, lambda logits_TE: logits_TE.softmax(dim=-1))
        inline.add_dropped([1], [torch.tensor(float(seed))])
    folder.wait()
    assert threads == {"observe-fold"}
    torch.testing.assert_close(folded.scalars_LC, inline.scalars_LC)
    assert torch.equal(folded.tokens_per_expert_LE, inline.tokens_per_expert_LE)
    assert torch.equal(folded.entropy_histogram_LES, inline.entropy_histogram_LES)
    assert folded.calls_L == inline.calls_L
    folder.close()
