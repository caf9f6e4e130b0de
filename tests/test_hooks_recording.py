"""How hooks record router calls: kept, read and folded many at once, within bounds."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch

import observe
from observe.hooks import recording
from observe.hooks.adapters import ReferenceAdapter
from observe.workload.config import get_config
from observe.workload.generation import GenerationSettings, generate_batch
from observe.workload.model import MoETransformer


@pytest.fixture
def model() -> MoETransformer:
    torch.manual_seed(0)
    return MoETransformer(get_config("tiny", capacity_factor=0.75))


class ReadAtOnce(ReferenceAdapter):
    """The reference adapter, but read in each router's hook, as custom adapters are."""

    name = "read-at-once"
    reads_output_only = False


def mixed_run(model: MoETransformer, adapter: observe.RouterAdapter) -> dict[str, Any]:
    """Training steps, padded batched decoding whose rows end at different steps, and a
    router called outside the model's forward; what the monitor saw and kept meanwhile."""
    torch.manual_seed(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    kept = []
    with observe.attach(model, observe.MonitorConfig(flush_every=2), adapter=adapter) as monitor:
        for _ in range(3):
            x = torch.randint(0, 256, (3, 12))
            out = model(x, labels_BS=x)
            kept.append(len(monitor._recorder.outputs))
            assert out.loss is not None
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            monitor.step()
        prompts = ["a long first prompt", "b", "a middle one"]
        settings = [GenerationSettings(max_new_tokens=n) for n in (9, 3, 6)]
        for _ in range(2):
            generate_batch(model, prompts, settings)
            kept.append(len(monitor._recorder.outputs))
            monitor.step()
        with torch.no_grad():
            model.layers[1].moe.router(torch.randn(5, model.config.d_model))
        monitor.step()
        return {"snapshot": monitor.snapshot(), "kept": kept}


@pytest.mark.parametrize("held", [5, recording.MAX_PENDING_CALLS], ids=["folds-often", "default"])
def test_router_outputs_read_later_give_the_figures_of_reading_at_once(
    model: MoETransformer, monkeypatch: pytest.MonkeyPatch, held: int
) -> None:
    monkeypatch.setattr(recording, "MAX_PENDING_CALLS", held)
    later = mixed_run(copy.deepcopy(model), ReferenceAdapter())
    at_once = mixed_run(copy.deepcopy(model), ReadAtOnce())
    # Outputs were kept unread (as many as the bound lets wait) only where they may be.
    assert max(later["kept"]) > 0 and not any(at_once["kept"])
    assert max(later["kept"]) < held
    assert later["snapshot"] == at_once["snapshot"]
    # The router called outside a forward was read at once: its 5 tokens on its layer alone.
    assert later["snapshot"].layers[1].tokens - later["snapshot"].layers[0].tokens == 5


@pytest.mark.parametrize(
    ("bound", "limit", "shape", "held"),
    [
        ("MAX_PENDING_CALLS", 16, (1, 3), lambda r: len(r.calls) + len(r.outputs)),
        # 16 tokens × 4 experts per call.
        ("MAX_PENDING_LOGITS", 100, (2, 8), lambda r: r.pending_logits),
    ],
    ids=["calls", "logits"],
)
def test_what_a_monitor_holds_between_folds_stays_bounded_without_steps(
    model: MoETransformer,
    monkeypatch: pytest.MonkeyPatch,
    bound: str,
    limit: int,
    shape: tuple[int, int],
    held: Callable[[recording.Recorder], int],
) -> None:
    monkeypatch.setattr(recording, bound, limit)
    with observe.attach(model) as monitor, torch.no_grad():
        for _ in range(40):
            model(torch.randint(0, 256, shape))
            assert held(monitor._recorder) < limit
        assert monitor.snapshot().layers[1].tokens == 40 * shape[0] * shape[1]


def test_decode_steps_leave_the_attention_layers_unhooked(model: MoETransformer) -> None:
    attention = model.layers[0].attention
    calls: list[bool] = []
    probe = model.layers[0].register_forward_pre_hook(
        lambda m, args: calls.append(bool(attention._forward_hooks))
    )
    with observe.attach(model) as monitor:
        generate_batch(model, ["first prompt", "second"], GenerationSettings(max_new_tokens=4))
        # Prefill hooked, the one-position decode steps not: only prompts are pooled.
        assert calls[0] and not any(calls[1:])
        assert monitor.hidden_states()["layers.0.attention"].shape[0] == 2
        model(torch.randint(0, 256, (3, 5)))
        assert calls[-1]
        assert monitor.hidden_states()["layers.0.attention"].shape[0] == 5
    probe.remove()
    assert not attention._forward_hooks


def test_inference_mode_and_normal_forwards_mix(
    model: MoETransformer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recording, "MAX_PENDING_CALLS", 3)  # fold inside inference mode
    with observe.attach(model) as monitor:
        with torch.inference_mode():
            for _ in range(5):
                model(torch.randint(0, 256, (2, 4)))
        model(torch.randint(0, 256, (2, 4)))
        with torch.inference_mode():
            model(torch.randint(0, 256, (2, 4)))
            monitor.step()
            monitor.flush()
        assert monitor.snapshot().layers[0].tokens == 7 * 8
        assert monitor.hidden_states()["layers.0.attention"].shape[0] == 7 * 2
