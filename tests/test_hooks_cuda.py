"""observe's hooks on a CUDA device, the path that runs only there: folds queued on a side
stream behind an event, pinned non-blocking copies out, events for readiness. Counts match
the test's own recording, the calling thread never waits for the device, and the figures
are those of the same run on the CPU.

Skipped where torch sees no GPU, CI included.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import pytest
import torch
from test_folding import calls as router_calls
from test_hooks import RouterRecorder, assert_layer_matches, expected_layer

import observe
import observe.hooks
from observe.hooks import recording
from observe.hooks.buffers import RouterCall, RoutingBuffers
from observe.hooks.folding import MAX_WAITING, Folder
from observe.workload import moe
from observe.workload.config import get_config
from observe.workload.generation import generate_batch
from observe.workload.job_config import GenerationSettings
from observe.workload.model import MoETransformer
from observe.workload.tokenizer import ByteTokenizer

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device: the hooks' CUDA path (side-stream folds, pinned copies, events) "
    "runs only on one",
)

CUDA = torch.device("cuda")
CONFIG = get_config("tiny", n_layers=8, n_routed_experts=8, capacity_factor=1.0)
# Forwards per generate_batch call, each calling every layer's router.
NEW_TOKENS = 40
E = CONFIG.n_routed_experts
# Router calls a monitor holds before folding them, lowered so that windows of decoding fold
# between flushes too.
MAX_PENDING_CALLS = 256
HOOKS = os.path.dirname(observe.hooks.__file__) + os.sep


@dataclass(frozen=True)
class Sync:
    """One host-device sync: the thread and the Python stack that made it."""

    thread: str
    stack: traceback.StackSummary

    def passes_through(self, path: str) -> bool:
        return any(frame.filename.startswith(path) for frame in self.stack)

    def __str__(self) -> str:
        return f"on thread {self.thread}:\n" + "".join(self.stack.format())


@contextlib.contextmanager
def host_syncs() -> Iterator[list[Sync]]:
    """Every host-device sync made while the block runs, on any thread.

    torch's sync debug mode reports each one; "warn" rather than "error", since the
    reference model syncs by design (its experts' token counts go to the host) and an
    error would stop it: a sync is observe's when observe's hooks are on its stack.
    """
    syncs: list[Sync] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        show = warnings.showwarning

        def record(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if "synchronizing CUDA operation" in str(message):
                stack = traceback.extract_stack()
                syncs.append(Sync(threading.current_thread().name, stack))
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield syncs
        finally:
            torch.cuda.set_sync_debug_mode("default")


def observe_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What observe's threads logged as failed: a fold or a window they could not process."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def on_host(
    calls: list[tuple[torch.Tensor, torch.Tensor]],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(logits.cpu(), indices.cpu()) for logits, indices in calls]


def test_counts_match_after_training_and_decoding_and_hooks_never_sync(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recording, "MAX_PENDING_CALLS", MAX_PENDING_CALLS)
    torch.manual_seed(0)
    model = MoETransformer(CONFIG).to(CUDA)
    recorder = RouterRecorder(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator(CUDA).manual_seed(0)
    # One length: no padding, so every recorded token counts.
    prompts = [f"prompt {i}" for i in range(6)]
    with observe.attach(model, observe.MonitorConfig(flush_every=2)) as monitor:
        with host_syncs() as syncs:
            for _ in range(4):
                for _ in range(2):
                    x = torch.randint(0, 256, (4, 24), device=CUDA, generator=generator)
                    out = model(x, labels_BS=x)
                    assert out.loss is not None
                    (out.loss / 2).backward()
                optimizer.step()
                optimizer.zero_grad()
                monitor.step()
            for _ in range(3):
                generate_batch(model, prompts, GenerationSettings(max_new_tokens=NEW_TOKENS))
                monitor.step()
        snapshot = monitor.snapshot()
    recorder.remove()

    # The model's own syncs are seen, so one in observe's would be too.
    assert any(s.passes_through(moe.__file__) for s in syncs)
    # The flush thread waits for each window's copies: that wait is what it is for.
    observes = [s for s in syncs if s.passes_through(HOOKS) and s.thread != "observe-flush"]
    assert not observes, "observe made the host wait for the device:\n" + str(observes[0])
    assert observe_errors(caplog) == []
    assert snapshot.last_step == 7
    # No row ended early, so a window of two decoding steps recorded more router calls than
    # the monitor holds: calls were folded between flushes as well as at them.
    assert len(recorder.calls[0]) == 8 + 3 * NEW_TOKENS
    assert 2 * NEW_TOKENS * CONFIG.n_layers > MAX_PENDING_CALLS
    for layer, stats in enumerate(snapshot.layers):
        calls = recorder.calls[layer]
        assert_layer_matches(stats, expected_layer(on_host(calls), [None] * len(calls), E))
        blocks = recorder.block_outputs[layer]
        assert stats.dropped_tokens == sum(int(b.dropped_tokens) for b in blocks)


@pytest.mark.parametrize("offload", [True, False], ids=["side-stream", "inline"])
def test_folds_wait_for_the_forward_and_give_the_cpu_sums(offload: bool) -> None:
    def softmax(logits_TE: torch.Tensor) -> torch.Tensor:
        return logits_TE.softmax(dim=-1)

    on_cuda = RoutingBuffers([8, 8, 8], 4, CUDA)
    on_cpu = RoutingBuffers([8, 8, 8], 4, torch.device("cpu"))
    folder = Folder(on_cuda, softmax, CUDA, offload=offload)
    for window in range(2):
        # More batches than may wait for the folder's thread.
        for seed in range(window * 10, window * 10 + MAX_WAITING + 3):
            batch = router_calls(seed, 4)
            staged = [(c.logits_TE.to(CUDA), c.topk_indices_TK.to(CUDA)) for c in batch]
            dropped = torch.tensor(float(seed), device=CUDA)
            torch.cuda.synchronize()
            # A forward still running when its calls are handed over: a fold that did not
            # wait for it (on the device) would read its tensors before they are written.
            torch.cuda._sleep(10_000_000)
            recorded = [
                RouterCall(c.layer, logits.clone(), indices.clone(), None)
                for c, (logits, indices) in zip(batch, staged, strict=True)
            ]
            folder.fold(recorded, [(1, dropped.clone())])
            del recorded
            # The forward's next tensors: they must not take memory a fold has yet to read.
            junk = [torch.full((5, 8), float("nan"), device=CUDA) for _ in range(16)]
            del junk
            on_cpu.add_calls(batch, softmax)
            on_cpu.add_dropped([1], [torch.tensor(float(seed))])
        folder.wait()
        sums, expected = on_cuda.drain(), on_cpu.drain()
        sums.wait()
        # Float32 on two devices, summed in another order: equal to a few ulps.
        torch.testing.assert_close(sums.scalars_LC, expected.scalars_LC, rtol=1e-5, atol=1e-5)
        assert torch.equal(sums.tokens_per_expert_LE, expected.tokens_per_expert_LE)
        assert torch.equal(sums.entropy_histogram_LES, expected.entropy_histogram_LES)
        assert torch.equal(sums.calls_L, expected.calls_L)
    folder.close()


def test_figures_match_the_same_run_on_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    on_cpu = MoETransformer(CONFIG)
    models = {"cpu": on_cpu, "cuda": copy.deepcopy(on_cpu).to(CUDA)}
    padded, mask = ByteTokenizer().encode_batch(["a padded prompt", "short", "a longer one"])
    generator = torch.Generator().manual_seed(0)
    batches = [(padded, mask)] + [
        (torch.randint(0, 256, (4, 16), generator=generator), None) for _ in range(3)
    ]
    snapshots, hidden, recorders = {}, {}, {}
    for device, model in models.items():
        recorders[device] = RouterRecorder(model)
        with observe.attach(model, observe.MonitorConfig(flush_every=2)) as monitor:
            with torch.no_grad():
                for input_ids, batch_mask in batches:
                    on_device = None if batch_mask is None else batch_mask.to(device)
                    model(input_ids.to(device), attention_mask=on_device)
                    monitor.step()
            snapshots[device], hidden[device] = monitor.snapshot(), monitor.hidden_states()
        recorders[device].remove()
    assert observe_errors(caplog) == []

    masks = [mask.reshape(-1).numpy()] + [None] * (len(batches) - 1)
    layers = zip(snapshots["cpu"].layers, snapshots["cuda"].layers, strict=True)
    for layer, (a, b) in enumerate(layers):
        cuda_calls = on_host(recorders["cuda"].calls[layer])
        assert_layer_matches(b, expected_layer(cuda_calls, masks, E))
        # Float32 routing on two devices may pick differently on a near-tie: the CUDA run's
        # own recording, above, is then the only reference.
        same_routing = all(
            torch.equal(on_cpu_TK, on_cuda_TK)
            for (_, on_cpu_TK), (_, on_cuda_TK) in zip(
                recorders["cpu"].calls[layer], cuda_calls, strict=True
            )
        )
        if same_routing:
            assert b.tokens_per_expert == a.tokens_per_expert
            assert b.dead_experts == a.dead_experts
            assert b.dropped_tokens == a.dropped_tokens
            assert b.entropy_histogram == a.entropy_histogram
            for figure in ("routing_entropy", "top1_probability", "load_imbalance"):
                assert getattr(b, figure) == pytest.approx(getattr(a, figure), abs=1e-5)
            for figure in ("aux_loss", "z_loss"):
                assert getattr(b, figure) == pytest.approx(getattr(a, figure), rel=1e-4)
    # Fewer sequences than the reservoir holds: both keep every one, in order.
    torch.testing.assert_close(hidden["cuda"], hidden["cpu"], atol=1e-4, rtol=1e-4)
