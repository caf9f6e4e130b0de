"""observe.attach on tiny random Hugging Face MoE models: Mixtral, Qwen2-MoE, Qwen3-MoE and
DeepSeek-V3. Expected statistics are recomputed in NumPy from the router logits the model
itself returns (`output_router_logits=True`), with each family's own choice rule."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import observe
from observe.hooks.stats import Window

# Models are built from configs; offline mode makes any stray hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import transformers

pytestmark = pytest.mark.usefixtures("one_thread")

COMMON: dict[str, Any] = {
    "vocab_size": 100,
    "hidden_size": 32,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "num_experts_per_tok": 2,
    "pad_token_id": 0,
}
# family: (config class, model class, config arguments besides COMMON)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "mixtral": (
        "MixtralConfig",
        "MixtralForCausalLM",
        {"num_key_value_heads": 2, "num_local_experts": 4},
    ),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        # decoder_sparse_step=1 and no mlp_only_layers: every layer is sparse.
        {
            "num_key_value_heads": 2,
            "num_experts": 4,
            "moe_intermediate_size": 16,
            "shared_expert_intermediate_size": 16,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        },
    ),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        {
            "num_key_value_heads": 2,
            "head_dim": 8,
            "num_experts": 8,
            "moe_intermediate_size": 16,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        },
    ),
    "deepseek_v3": (
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        # Both layers MoE; 4 groups of 2 experts, tokens limited to their 2 best groups.
        {
            "num_key_value_heads": 4,
            "n_routed_experts": 8,
            "n_shared_experts": 1,
            "moe_intermediate_size": 16,
            "n_group": 4,
            "topk_group": 2,
            "first_k_dense_replace": 0,
            "kv_lora_rank": 16,
            "q_lora_rank": 16,
            "qk_rope_head_dim": 8,
            "qk_nope_head_dim": 8,
            "v_head_dim": 8,
            "num_mtp_layers": 0,
        },
    ),
}
HIDDEN, VOCAB, LAYERS = COMMON["hidden_size"], COMMON["vocab_size"], COMMON["num_hidden_layers"]
TOP_K, PAD = COMMON["num_experts_per_tok"], COMMON["pad_token_id"]
TOLERANCE = 1e-5


def tiny_config(family: str) -> Any:
    config_cls, _, arguments = FAMILIES[family]
    return getattr(transformers, config_cls)(**COMMON, **arguments)


def n_experts(family: str) -> int:
    config = tiny_config(family)
    # Mixtral and DeepSeek-V3 (by an alias) name it num_local_experts, Qwen num_experts.
    return int(getattr(config, "num_local_experts", None) or config.num_experts)


def build(family: str) -> Any:
    torch.manual_seed(0)
    model = getattr(transformers, FAMILIES[family][1])(tiny_config(family))
    with torch.no_grad():
        for router in routers_of(model):
            # The default init (std 0.02) leaves routers near-uniform, where a rounding
            # difference could flip a top-k choice; wider logits keep choices unambiguous.
            nn.init.normal_(router.weight, std=0.3)
            if family == "deepseek_v3":
                # Non-zero, so the chosen experts differ from a plain top-k of the scores.
                bias_E = torch.randn(router.e_score_correction_bias.shape) * 0.3
                router.e_score_correction_bias.copy_(bias_E)
    return model.eval()


def routers_of(model: Any) -> list[nn.Module]:
    return [layer.mlp.gate for layer in model.model.layers]


def random_batch(batch: int, seq: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, seq), generator=generator)


def left_padded(batch: int, seq: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids = random_batch(batch, seq, seed)
    mask = torch.ones(batch, seq, dtype=torch.long)
    for row in range(batch):
        mask[row, : row % 3 + 1] = 0  # 1, 2, 3… padding positions on the left
    return input_ids.masked_fill(mask == 0, PAD), mask


# -- the families' routing rules, in NumPy ------------------------------------------------


def distribution(family: str, logits_TE: np.ndarray) -> np.ndarray:
    if family == "deepseek_v3":
        affinity_TE = 1 / (1 + np.exp(-logits_TE))
        return affinity_TE / affinity_TE.sum(-1, keepdims=True)
    probs_TE = np.exp(logits_TE - logits_TE.max(-1, keepdims=True))
    return probs_TE / probs_TE.sum(-1, keepdims=True)


def deepseek_choice(logits_TE: np.ndarray, router: nn.Module) -> np.ndarray:
    """DeepseekV3TopkRouter's rule: sigmoid scores plus the correction bias, top-k within the
    `topk_group` groups whose two best biased scores sum highest."""
    T, E = logits_TE.shape
    G, K = router.num_group, router.top_k
    bias_E = router.e_score_correction_bias.double().numpy()
    choice_TE = 1 / (1 + np.exp(-logits_TE)) + bias_E
    group_score_TG = np.sort(choice_TE.reshape(T, G, E // G), -1)[..., -2:].sum(-1)
    best_groups = np.argsort(-group_score_TG, -1)[:, : router.topk_group]
    allowed_TG = np.zeros((T, G), bool)
    np.put_along_axis(allowed_TG, best_groups, True, -1)
    choice_TE = np.where(np.repeat(allowed_TG, E // G, -1), choice_TE, -np.inf)
    return np.argsort(-choice_TE, -1)[:, :K]


def choose(family: str, logits_TE: np.ndarray, router: nn.Module) -> np.ndarray:
    if family == "deepseek_v3":
        return deepseek_choice(logits_TE, router)
    # Mixtral and Qwen: top-k of the softmax, i.e. of the logits.
    return np.argsort(-logits_TE, -1)[:, :TOP_K]


Call = tuple[np.ndarray, np.ndarray]  # one router call: logits (T, E), real-token mask (T,)


def expected(family: str, calls: list[Call], router: nn.Module) -> dict[str, Any]:
    E = n_experts(family)
    counts_E = np.zeros(E, dtype=np.int64)
    entropies, top1s = [], []
    for logits_TE, real_T in calls:
        counts_E += np.bincount(choose(family, logits_TE, router)[real_T].ravel(), minlength=E)
        probs_TE = distribution(family, logits_TE)[real_T]
        entropies.append(-(probs_TE * np.log(probs_TE)).sum(-1) / np.log(E))
        top1s.append(probs_TE.max(-1))
    entropy_T = np.concatenate(entropies)
    return {
        "tokens": len(entropy_T),
        "tokens_per_expert": tuple(int(n) for n in counts_E),
        "routing_entropy": entropy_T.mean(),
        "top1_probability": np.concatenate(top1s).mean(),
        "load_imbalance": counts_E.max() / counts_E.mean(),
    }


def record(calls_L: list[list[Call]], output: Any, mask: torch.Tensor | None) -> None:
    """Appends one forward's router logits (from `output_router_logits`) to each layer."""
    for calls, logits_TE in zip(calls_L, output.router_logits, strict=True):
        logits_TE = logits_TE.detach().double().numpy()
        real_T = np.ones(len(logits_TE), bool) if mask is None else mask.numpy().ravel() == 1
        calls.append((logits_TE, real_T))


def assert_matches(
    family: str, model: Any, stats: observe.RoutingStats, calls_L: list[list[Call]]
) -> None:
    for layer, router, calls in zip(stats.layers, routers_of(model), calls_L, strict=True):
        want = expected(family, calls, router)
        assert layer.tokens == want["tokens"]
        assert layer.tokens_per_expert == want["tokens_per_expert"]
        for name in ("routing_entropy", "top1_probability", "load_imbalance"):
            assert getattr(layer, name) == pytest.approx(want[name], abs=TOLERANCE), name


def hooked_modules(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


@pytest.fixture(params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def model(family: str) -> Any:
    return build(family)


# -- tests ---------------------------------------------------------------------------------


def test_attach_finds_every_router_and_attention_layer(family: str, model: Any) -> None:
    with observe.attach(model) as monitor:
        assert monitor.adapter.name == (
            "deepseek_v3" if family == "deepseek_v3" else "transformers"
        )
        assert [r.name for r in monitor.routers] == [f"model.layers.{i}.mlp.gate" for i in (0, 1)]
        assert {(r.n_experts, r.top_k) for r in monitor.routers} == {(n_experts(family), TOP_K)}
        assert monitor.attention_names == [f"model.layers.{i}.self_attn" for i in (0, 1)]


def test_statistics_match_numpy(family: str, model: Any) -> None:
    calls_L: list[list[Call]] = [[] for _ in range(LAYERS)]
    with observe.attach(model) as monitor, torch.no_grad():
        for seed in (1, 2):
            record(calls_L, model(random_batch(3, 7, seed), output_router_logits=True), None)
            monitor.step()
        stats = monitor.snapshot()
    assert_matches(family, model, stats, calls_L)
    assert all(layer.tokens == 2 * 3 * 7 for layer in stats.layers)


def test_left_padding_is_not_counted(family: str, model: Any) -> None:
    input_ids, mask = left_padded(4, 8, seed=3)
    calls_L: list[list[Call]] = [[] for _ in range(LAYERS)]
    with observe.attach(model) as monitor, torch.no_grad():
        record(calls_L, model(input_ids, attention_mask=mask, output_router_logits=True), mask)
        stats = monitor.snapshot()
    assert_matches(family, model, stats, calls_L)
    for layer in stats.layers:
        assert layer.tokens == mask.sum() < mask.numel()
        assert sum(layer.tokens_per_expert) == mask.sum() * TOP_K


def test_deepseek_choice_rule_uses_bias_and_groups() -> None:
    """The NumPy rule the other tests rely on reproduces DeepseekV3TopkRouter's own choice,
    and the correction bias makes it differ from a plain top-k of the scores."""
    model = build("deepseek_v3")
    router = routers_of(model)[0]
    captured: list[Any] = []
    handle = router.register_forward_hook(lambda _m, _a, output: captured.append(output))
    with torch.no_grad():
        model(random_batch(4, 8, seed=4))
    handle.remove()
    logits_TE, _, indices_TK = captured[0]
    logits_TE = logits_TE.double().numpy()
    chosen_TK = np.sort(deepseek_choice(logits_TE, router), -1)
    np.testing.assert_array_equal(chosen_TK, np.sort(indices_TK.numpy(), -1))
    plain_TK = np.sort(np.argsort(-logits_TE, -1)[:, :TOP_K], -1)
    assert (chosen_TK != plain_TK).any()


class WindowCollector:
    def __init__(self) -> None:
        self.windows: list[observe.RoutingStats] = []

    def consume(self, window: Window) -> None:
        self.windows.append(window.routing)


def test_gradient_accumulation_keeps_counts(family: str, model: Any) -> None:
    steps, accumulation = 2, 3
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sink = WindowCollector()
    step_calls: list[list[list[Call]]] = []
    config = observe.MonitorConfig(flush_every=1)
    with observe.attach(model, config, sinks=[sink]) as monitor:
        for step in range(steps):
            calls_L: list[list[Call]] = [[] for _ in range(LAYERS)]
            for micro in range(accumulation):
                input_ids = random_batch(2, 6, seed=10 * step + micro)
                output = model(input_ids, labels=input_ids, output_router_logits=True)
                (output.loss / accumulation).backward()
                record(calls_L, output, None)
            optimizer.step()
            optimizer.zero_grad()
            monitor.step()
            step_calls.append(calls_L)
        stats = monitor.snapshot()
    assert monitor.step_count == steps
    all_calls_L = [[c for calls in step_calls for c in calls[layer]] for layer in range(LAYERS)]
    assert_matches(family, model, stats, all_calls_L)
    # One window per optimizer step, each holding all of that step's micro-batches.
    assert [(w.first_step, w.last_step) for w in sink.windows] == [(1, 1), (2, 2)]
    for window, calls_L in zip(sink.windows, step_calls, strict=True):
        assert_matches(family, model, window, calls_L)


def test_generate_with_monitor_attached(family: str, model: Any) -> None:
    input_ids, mask = left_padded(2, 6, seed=5)
    with observe.attach(model) as monitor, torch.no_grad():
        generated = model.generate(
            input_ids, attention_mask=mask, max_new_tokens=3, do_sample=False
        )
        stats = monitor.snapshot()
        hidden = monitor.hidden_states()
    # The prompt's real tokens, then one token per sequence for each later decode step.
    decode_steps = generated.shape[1] - input_ids.shape[1] - 1
    for layer in stats.layers:
        assert layer.tokens == mask.sum() + decode_steps * len(input_ids) > 0
        assert sum(layer.tokens_per_expert) == layer.tokens * TOP_K
    # Sequences are pooled once, at prefill; decode steps add nothing.
    assert {tuple(h.shape) for h in hidden.values()} == {(len(input_ids), HIDDEN)}


def test_close_removes_every_hook_and_leaves_outputs_unchanged(model: Any) -> None:
    input_ids, mask = left_padded(2, 6, seed=6)
    assert hooked_modules(model) == []
    with torch.no_grad():
        before = model(input_ids, attention_mask=mask).logits
        monitor = observe.attach(model)
        assert hooked_modules(model)
        during = model(input_ids, attention_mask=mask).logits
        monitor.close()
        after = model(input_ids, attention_mask=mask).logits
    assert hooked_modules(model) == []
    assert torch.equal(before, during)
    assert torch.equal(before, after)
