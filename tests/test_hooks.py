"""observe.attach on the bundled reference model: counts, statistics, windows and lifetime."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import observe
from observe.hooks.stats import Window
from observe.workload.config import get_config
from observe.workload.model import MoETransformer
from observe.workload.moe import MoEFeedForward
from observe.workload.router import Router
from observe.workload.tokenizer import ByteTokenizer


class RouterRecorder:
    """Records router outputs with the test's own hooks, independently of observe."""

    def __init__(self, model: nn.Module) -> None:
        self.routers = [m for m in model.modules() if isinstance(m, Router)]
        self.blocks = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
        self.calls: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in self.routers]
        self.block_outputs: list[list[Any]] = [[] for _ in self.blocks]
        self.handles = [
            r.register_forward_hook(self._router_hook(i)) for i, r in enumerate(self.routers)
        ] + [b.register_forward_hook(self._block_hook(i)) for i, b in enumerate(self.blocks)]

    def _router_hook(self, i: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.calls[i].append((output[0].detach().clone(), output[2].clone()))

        return hook

    def _block_hook(self, i: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.block_outputs[i].append(output)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def expected_layer(
    calls: list[tuple[torch.Tensor, torch.Tensor]], masks: list[np.ndarray | None], E: int
) -> dict[str, Any]:
    """NumPy statistics of one layer over its recorded calls, real tokens only."""
    counts = np.zeros(E, dtype=np.int64)
    entropies, top1s = [], []
    for (logits, indices), mask in zip(calls, masks, strict=True):
        logits_np = logits.double().numpy()
        keep = np.ones(len(logits_np), bool) if mask is None else mask.astype(bool)
        probs = np.exp(logits_np - logits_np.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        probs = probs[keep]
        counts += np.bincount(indices.numpy()[keep].ravel(), minlength=E)
        entropies.append(-(probs * np.log(probs)).sum(-1) / np.log(E))
        top1s.append(probs.max(-1))
    entropy = np.concatenate(entropies)
    return {
        "tokens_per_expert": tuple(int(c) for c in counts),
        "routing_entropy": entropy.mean(),
        "top1_probability": np.concatenate(top1s).mean(),
        "load_imbalance": counts.max() / counts.mean(),
        "tokens": len(entropy),
    }


@pytest.fixture
def model() -> MoETransformer:
    torch.manual_seed(0)
    return MoETransformer(get_config("tiny", capacity_factor=0.75))


@pytest.fixture
def recorder(model: MoETransformer) -> Iterator[RouterRecorder]:
    recorder = RouterRecorder(model)
    yield recorder
    recorder.remove()


def train_steps(model: MoETransformer, monitor: observe.Monitor, steps: int, accum: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        for _ in range(accum):
            x = torch.randint(0, 256, (3, 12))
            out = model(x, labels_BS=x)
            assert out.loss is not None
            (out.loss / accum).backward()
        optimizer.step()
        optimizer.zero_grad()
        monitor.step()


def assert_layer_matches(stats: observe.LayerStats, expected: dict[str, Any]) -> None:
    assert stats.tokens_per_expert == expected["tokens_per_expert"]
    assert stats.tokens == expected["tokens"]
    assert stats.routing_entropy == pytest.approx(expected["routing_entropy"], abs=1e-5)
    assert stats.top1_probability == pytest.approx(expected["top1_probability"], abs=1e-5)
    assert stats.load_imbalance == pytest.approx(expected["load_imbalance"], abs=1e-5)


def test_training_counts_and_statistics_match_numpy(
    model: MoETransformer, recorder: RouterRecorder
) -> None:
    with observe.attach(model, observe.MonitorConfig(flush_every=2)) as monitor:
        train_steps(model, monitor, steps=5, accum=3)
        snapshot = monitor.snapshot()
    assert (snapshot.first_step, snapshot.last_step) == (1, 5)
    assert len(snapshot.layers) == model.config.n_layers
    for layer, stats in enumerate(snapshot.layers):
        calls = recorder.calls[layer]
        assert len(calls) == 15
        assert_layer_matches(stats, expected_layer(calls, [None] * 15, 4))
        assert stats.name == f"layers.{layer}.moe.router"
        blocks = recorder.block_outputs[layer]
        # The same formulas as the model's own router losses, averaged over calls.
        model_aux = np.mean([float(b.aux_loss.detach()) for b in blocks])
        model_z = np.mean([float(b.z_loss.detach()) for b in blocks])
        assert stats.aux_loss == pytest.approx(model_aux, rel=1e-5)
        assert stats.z_loss == pytest.approx(model_z, rel=1e-5)
        assert stats.dropped_tokens == sum(int(b.dropped_tokens) for b in blocks)
        assert stats.dropped_tokens > 0
        dead = tuple(e for e, n in enumerate(stats.tokens_per_expert) if n == 0)
        assert stats.dead_experts == dead


def test_padding_is_neither_counted_nor_dropped(
    model: MoETransformer, recorder: RouterRecorder
) -> None:
    input_ids, mask = ByteTokenizer().encode_batch(["a long prompt here", "short", "mid one"])
    with observe.attach(model) as monitor, torch.no_grad():
        model(input_ids, attention_mask=mask)
        monitor.step()
        snapshot = monitor.snapshot()
    real_T = mask.reshape(-1).numpy().astype(bool)
    assert real_T.sum() < real_T.size
    for layer, stats in enumerate(snapshot.layers):
        expected = expected_layer(recorder.calls[layer], [real_T], 4)
        assert expected["tokens"] == real_T.sum()
        assert_layer_matches(stats, expected)
        # Only real tokens' assignments take an expert's capacity, and only theirs drop.
        [(_, chosen_TK)] = recorder.calls[layer]
        assigned_E = np.bincount(chosen_TK.numpy()[real_T].ravel(), minlength=4)
        capacity = model.layers[layer].moe.capacity(int(real_T.sum()))
        assert capacity is not None
        assert stats.dropped_tokens == np.maximum(assigned_E - capacity, 0).sum() > 0


def test_entropy_histogram_places_each_assignment_in_its_slot(
    model: MoETransformer, recorder: RouterRecorder
) -> None:
    config = observe.MonitorConfig(entropy_slots=8)
    with observe.attach(model, config) as monitor, torch.no_grad():
        model(torch.randint(0, 256, (4, 16)))
        snapshot = monitor.snapshot()
    for layer, stats in enumerate(snapshot.layers):
        [(logits, indices)] = recorder.calls[layer]
        probs = logits.double().softmax(-1).numpy()
        entropy = -(probs * np.log(probs)).sum(-1) / np.log(4)
        slots = np.minimum((entropy * 8).astype(int), 7)
        expected = np.zeros((4, 8), dtype=int)
        for t, chosen in enumerate(indices.numpy()):
            for e in chosen:
                expected[e, slots[t]] += 1
        assert np.array_equal(np.array(stats.entropy_histogram), expected)
        assert np.array(stats.entropy_histogram).sum(1).tolist() == list(stats.tokens_per_expert)


def test_windows_reach_sinks_every_flush_interval(model: MoETransformer) -> None:
    windows: list[observe.RoutingStats] = []
    samples: list[Mapping[str, np.ndarray]] = []
    threads: set[str] = set()

    class Sink:
        wants_hidden_states = True

        def consume(self, window: Window) -> None:
            threads.add(threading.current_thread().name)
            windows.append(window.routing)
            samples.append(window.hidden_states)

    with observe.attach(model, observe.MonitorConfig(flush_every=3), sinks=[Sink()]) as monitor:
        train_steps(model, monitor, steps=7, accum=1)
        total = monitor.snapshot()
        whole_run = monitor.hidden_states()
    assert [(w.first_step, w.last_step) for w in windows] == [(1, 3), (4, 6), (7, 7)]
    # Each window samples its own sequences (3 per step); the run's reservoir keeps all 21.
    for name in monitor.attention_names:
        assert [s[name].shape for s in samples] == [(9, 32), (9, 32), (3, 32)]
        assert whole_run[name].shape == (21, 32)
        rows = {tuple(r) for r in whole_run[name].numpy()}
        assert all(tuple(r) in rows for s in samples for r in s[name])
    assert threads == {"observe-flush"}
    for layer in range(model.config.n_layers):
        summed = np.sum([w.layers[layer].tokens_per_expert for w in windows], axis=0)
        assert tuple(summed) == total.layers[layer].tokens_per_expert
        assert sum(w.layers[layer].tokens for w in windows) == 7 * 3 * 12


def test_a_failing_sink_does_not_stop_the_monitor(model: MoETransformer) -> None:
    class Broken:
        def consume(self, window: Window) -> None:
            raise RuntimeError("sink down")

    with observe.attach(model, observe.MonitorConfig(flush_every=1), sinks=[Broken()]) as monitor:
        train_steps(model, monitor, steps=3, accum=1)
        assert monitor.snapshot().layers[0].tokens == 3 * 3 * 12


def test_close_removes_every_hook_and_leaves_the_model_as_before(model: MoETransformer) -> None:
    x = torch.randint(0, 256, (2, 9))
    before = model(x).logits_BSV
    monitor = observe.attach(model)
    model(x)
    monitor.close()
    monitor.close()  # idempotent
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    torch.testing.assert_close(model(x).logits_BSV, before, rtol=0, atol=0)
    # Once closed, the model may be monitored again.
    observe.attach(model).close()


def test_two_monitors_on_two_models_do_not_mix() -> None:
    torch.manual_seed(0)
    a, b = MoETransformer(get_config("tiny")), MoETransformer(get_config("tiny"))
    with observe.attach(a) as monitor_a, observe.attach(b) as monitor_b:
        a(torch.randint(0, 256, (2, 5)))
        b(torch.randint(0, 256, (3, 7)))
        b(torch.randint(0, 256, (3, 7)))
        assert monitor_a.snapshot().layers[0].tokens == 10
        # No capacity factor: the model never drops, so there is no figure for it.
        assert monitor_a.snapshot().layers[0].dropped_tokens is None
        assert monitor_b.snapshot().layers[0].tokens == 42


def test_attaching_twice_to_one_model_is_a_clear_error(model: MoETransformer) -> None:
    with observe.attach(model), pytest.raises(observe.ObserveError, match="already has a monitor"):
        observe.attach(model)


def test_a_model_without_routers_is_a_clear_error() -> None:
    with pytest.raises(observe.ObserveError) as error:
        observe.attach(nn.Sequential(nn.Linear(4, 4)))
    message = str(error.value)
    assert "no MoE router found in Sequential" in message
    assert "Mixtral" in message and "DeepSeek-V3" in message and "RouterAdapter" in message


def test_hidden_states_reservoir_pools_real_tokens_and_stays_bounded(
    model: MoETransformer,
) -> None:
    config = observe.MonitorConfig(reservoir_size=5)
    pooled: list[torch.Tensor] = []
    attention = model.layers[1].attention
    handle = attention.register_forward_hook(lambda m, a, out: pooled.append(out.detach()))
    input_ids, mask = ByteTokenizer().encode_batch(["one prompt", "a longer second prompt"])
    with observe.attach(model, config) as monitor, torch.no_grad():
        model(input_ids, attention_mask=mask)
        first = monitor.hidden_states()["layers.1.attention"]
        for _ in range(10):
            model(torch.randint(0, 256, (4, 6)))
        later = monitor.hidden_states()
    handle.remove()
    weights = mask[..., None].float()
    expected = (pooled[0] * weights).sum(1) / weights.sum(1)
    torch.testing.assert_close(first, expected)
    assert set(later) == {"layers.0.attention", "layers.1.attention"}
    assert all(t.shape == (5, model.config.d_model) for t in later.values())


def test_reservoir_is_a_uniform_sample() -> None:
    from observe.hooks.reservoir import HiddenStateReservoir

    hits = np.zeros(100)
    for seed in range(300):
        reservoir = HiddenStateReservoir(1, capacity=10, device=torch.device("cpu"), seed=seed)
        for start in range(0, 100, 7):
            items = torch.arange(start, min(start + 7, 100), dtype=torch.float32)
            reservoir.add(0, items[:, None])
        sample = reservoir.read(0)[:, 0].long()
        assert len(sample) == 10
        hits[sample.numpy()] += 1
    # Each item is kept with probability 10/100: 30 of 300 runs on average.
    assert abs(hits[:50].mean() - 30) < 3 and abs(hits[50:].mean() - 30) < 3


def test_a_forwards_layers_keep_the_same_sequences_and_each_window_draws_anew() -> None:
    from observe.hooks.reservoir import HiddenStateReservoir

    reservoir = HiddenStateReservoir(2, capacity=4, device=torch.device("cpu"), seed=0)
    items = torch.arange(8, dtype=torch.float32)[:, None]
    windows = []
    # Windows of one forward each, of more items than the reservoir holds: slots are drawn.
    for _ in range(3):
        reservoir.add(0, items)
        reservoir.add(1, items + 1000)
        layer_0, layer_1 = (rows[:, 0].tolist() for rows in reservoir.drain())
        assert [v + 1000 for v in layer_0] == layer_1
        windows.append(layer_0)
    # Each window starts from a count of 0 again, with a draw of its own.
    assert len({tuple(w) for w in windows}) > 1


def test_reservoir_slots_follow_algorithm_r_and_write_no_row_twice() -> None:
    """A batch's items take the rows item-by-item Algorithm R leaves them in: where two draw
    one slot the later keeps it, so no row is written twice and the order of writes (free
    on CUDA) cannot matter."""
    from observe.hooks.reservoir import slots

    R, generator = 4, torch.Generator().manual_seed(0)
    for seen in (0, 2, 4, 50):
        for _ in range(50):
            u_B = torch.rand(12, generator=generator)
            expected = {}  # slot -> the item that holds it once the batch is in
            for b, u in enumerate(u_B.tolist()):
                i = seen + b
                slot = i if i < R else int(u * (i + 1))
                if slot < R:
                    expected[slot] = b
            slot_B = slots(seen, u_B, R).tolist()
            written = [s for s in slot_B if s < R]
            assert len(written) == len(set(written))
            assert {s: b for b, s in enumerate(slot_B) if s < R} == expected


def test_metrics_can_be_switched_off(model: MoETransformer) -> None:
    config = observe.MonitorConfig(metrics=frozenset({"routing"}))
    with observe.attach(model, config) as monitor, torch.no_grad():
        model(torch.randint(0, 256, (2, 8)))
        stats = monitor.snapshot().layers[0]
        assert stats.tokens == 16
        assert stats.entropy_histogram == ()
        assert stats.aux_loss == 0.0 and stats.dropped_tokens is None
        assert all(t.numel() == 0 for t in monitor.hidden_states().values())


def test_router_sampling_measures_a_share_of_forwards(model: MoETransformer) -> None:
    config = observe.MonitorConfig(router_sample_rate=0.25, seed=3)
    with observe.attach(model, config) as monitor, torch.no_grad():
        for _ in range(200):
            model(torch.randint(0, 256, (1, 4)))
        # Reported scaled up to every forward's: this many forwards were measured.
        measured = monitor.snapshot().layers[0].tokens * 0.25 / 4
    assert 30 < measured < 70


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": frozenset({"routing", "colour"})}, "unknown metrics \\['colour'\\]"),
        ({"flush_every": 0}, "flush_every=0"),
        ({"entropy_slots": 257}, "between 1 and 256"),
        ({"router_sample_rate": 0.0}, "router_sample_rate=0.0"),
        ({"reservoir_size": 0}, "reservoir_size=0"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(observe.ObserveError, match=message):
        observe.MonitorConfig(**kwargs)


class ToyRouter(nn.Module):
    """A user's own router: returns logits and the chosen experts as a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.proj(x)
        return {"logits": logits, "choice": logits.topk(1, dim=-1).indices}


class ToyAdapter(observe.RouterAdapter):
    name = "toy"

    def is_router(self, module: nn.Module) -> bool:
        return isinstance(module, ToyRouter)

    def n_experts(self, router: nn.Module) -> int:
        return 3

    def top_k(self, router: nn.Module) -> int:
        return 1

    def read_router(self, router: nn.Module, output: Any) -> observe.RouterReading:
        return observe.RouterReading(output["logits"], output["choice"])


def test_a_registered_adapter_monitors_a_users_model() -> None:
    model = nn.Sequential(ToyRouter())
    with pytest.raises(observe.ObserveError):
        observe.attach(model)
    adapter = ToyAdapter()
    observe.register_adapter(adapter)
    try:
        with observe.attach(model) as monitor:
            x = torch.randn(10, 6)
            chosen = model(x)["choice"]
            stats = monitor.snapshot().layers[0]
        assert monitor.adapter is adapter
        assert stats.tokens_per_expert == tuple(np.bincount(chosen.numpy().ravel(), minlength=3))
    finally:
        observe.unregister_adapter(adapter)
    with observe.attach(model, adapter=ToyAdapter()) as monitor:
        assert monitor.adapter.name == "toy"


def test_non_finite_router_logits_are_counted_and_left_out(model: MoETransformer) -> None:
    """NaN, +Inf and -Inf logits in some tokens: counted per layer, and every figure stays finite
    and equal to what the finite tokens alone give, in that window and after it."""
    router = model.layers[0].moe.router
    poisoned = {"on": True}

    def poison(module: nn.Module, args: Any, output: Any) -> Any:
        logits, weights, indices = output
        if not poisoned["on"]:
            return output
        logits = logits.clone()
        logits.view(-1, logits.shape[-1])[0, 0] = float("nan")
        logits.view(-1, logits.shape[-1])[1, :] = float("inf")
        logits.view(-1, logits.shape[-1])[2, 1] = float("-inf")
        return logits, weights, indices

    handle = router.register_forward_hook(poison)  # before observe's: observe sees its output
    try:
        with observe.attach(model, observe.MonitorConfig(flush_every=1)) as monitor:
            with torch.no_grad():
                model(torch.randint(0, 256, (3, 12)))
                monitor.step()
                first = monitor.snapshot().layers
                poisoned["on"] = False
                model(torch.randint(0, 256, (3, 12)))
                monitor.step()
            total = monitor.snapshot().layers
    finally:
        handle.remove()
    assert first[0].nonfinite_tokens == 3 and first[0].tokens == 3 * 12 - 3
    assert sum(first[0].tokens_per_expert) == first[0].tokens * model.config.top_k
    assert first[1].nonfinite_tokens == 0 and first[1].tokens == 3 * 12
    for stats in (*first, *total):
        figures = (stats.routing_entropy, stats.top1_probability, stats.aux_loss, stats.z_loss)
        assert all(np.isfinite(figures)), stats
    assert total[0].nonfinite_tokens == 3 and total[0].tokens == 2 * 3 * 12 - 3
