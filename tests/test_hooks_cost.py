"""observe's hooks never wait for the device, and survive torch.compile."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

import observe
from observe.workload.config import get_config
from observe.workload.model import MoETransformer
from observe.workload.tokenizer import ByteTokenizer

# Each of these makes the host wait for the device (or reads a tensor's value on the host).
SYNCING = ("item", "tolist", "__bool__", "numpy", "cpu", "__int__", "__float__")

_inside = threading.local()


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        _inside.active = True
        try:
            return fn(*args, **kwargs)
        finally:
            _inside.active = False

    return run


@pytest.fixture
def syncs_raise_inside_observe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Makes every host sync raise, but only while one of observe's callbacks runs."""
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def refuse(self: torch.Tensor, *args: Any, _name: str = name, _orig: Any = original) -> Any:
            if getattr(_inside, "active", False):
                raise AssertionError(f"observe called Tensor.{_name} inside a hook")
            return _orig(self, *args)

        monkeypatch.setattr(torch.Tensor, name, refuse)
    yield


def guard_hooks(model: nn.Module) -> int:
    """Wraps every hook on `model` so the sync guard is on while it runs; returns the count."""
    wrapped = 0
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key, hook in list(hooks.items()):
                hooks[key] = _guarded(hook)
                wrapped += 1
    return wrapped


def test_the_guard_catches_a_sync() -> None:
    """The guard itself works: a hook that syncs fails the forward."""
    model = nn.Linear(3, 3)
    model.register_forward_hook(lambda m, a, out: out.sum().item())
    guard_hooks(model)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "item", lambda self: (_ for _ in ()).throw(AssertionError()))
        with pytest.raises(AssertionError):
            model(torch.randn(2, 3))


@pytest.mark.usefixtures("syncs_raise_inside_observe")
def test_no_host_sync_in_hooks_during_training_and_inference() -> None:
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny", capacity_factor=1.0))
    optimizer = torch.optim.AdamW(model.parameters())
    monitor = observe.attach(model, observe.MonitorConfig(flush_every=2))
    assert guard_hooks(model) >= 2 + 2 * model.config.n_layers
    input_ids, mask = ByteTokenizer().encode_batch(["padded prompt", "a longer prompt here"])
    for _ in range(4):
        for _ in range(2):
            out = model(input_ids, attention_mask=mask, labels_BS=input_ids)
            assert out.loss is not None
            out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        _guarded(monitor.step)()
    with torch.no_grad():
        model(input_ids, attention_mask=mask)
    stats = monitor.snapshot()
    monitor.close()
    assert stats.layers[0].tokens == 9 * int(mask.sum())


@pytest.mark.slow
def test_counts_stay_right_under_torch_compile() -> None:
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    batches = [torch.randint(0, 256, (2, 8)) for _ in range(3)]
    with observe.attach(model) as monitor:
        for x in batches:
            model(x)
        eager = monitor.snapshot()
    compiled = torch.compile(model)
    with observe.attach(model) as monitor:
        for x in batches:
            out = compiled(x, labels_BS=x)
            out.loss.backward()
            monitor.step()
        under_compile = monitor.snapshot()
    for a, b in zip(eager.layers, under_compile.layers, strict=True):
        assert a.tokens_per_expert == b.tokens_per_expert
        assert a.routing_entropy == pytest.approx(b.routing_entropy, abs=1e-5)
