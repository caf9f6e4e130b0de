"""Routing, dispatch, capacity dropping and router losses of the reference MoE layer."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from observe.workload.config import get_config
from observe.workload.moe import MoEFeedForward
from observe.workload.router import Router


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_router_matches_hand_computation() -> None:
    torch.manual_seed(0)
    router = Router(d_model=8, n_experts=6, top_k=3)
    x = torch.randn(20, 8)
    logits, weights, indices = router(x)

    w = router.gate.weight.detach().double().numpy()
    expected_logits = x.double().numpy() @ w.T
    probs = _softmax(expected_logits)
    expected_indices = np.argsort(-probs, axis=-1, kind="stable")[:, :3]
    chosen = np.take_along_axis(probs, expected_indices, axis=-1)
    expected_weights = chosen / chosen.sum(axis=-1, keepdims=True)

    assert logits.dtype == torch.float32
    np.testing.assert_allclose(logits.detach().numpy(), expected_logits, atol=1e-5)
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    np.testing.assert_allclose(weights.detach().numpy(), expected_weights, atol=1e-6)
    np.testing.assert_allclose(weights.sum(-1).detach().numpy(), 1.0, atol=1e-6)


def _dense_reference(moe: MoEFeedForward, x_TD: torch.Tensor) -> torch.Tensor:
    """Every token through its chosen experts one at a time: no sorting, no grouping."""
    _, weights, indices = moe.router(x_TD)
    e = moe.experts
    out = torch.zeros_like(x_TD)
    for t in range(x_TD.shape[0]):
        for k in range(moe.top_k):
            i = int(indices[t, k])
            h = torch.nn.functional.silu(x_TD[t] @ e.w1_EDH[i]) * (x_TD[t] @ e.w3_EDH[i])
            out[t] += weights[t, k] * (h @ e.w2_EHD[i])
    assert moe.shared_experts is not None
    return out + moe.shared_experts(x_TD)


@pytest.fixture
def moe() -> MoEFeedForward:
    torch.manual_seed(1)
    layer = MoEFeedForward(get_config("tiny"))
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return layer


def test_grouped_dispatch_equals_per_token_reference(moe: MoEFeedForward) -> None:
    x = torch.randn(2, 7, moe.router.gate.in_features)
    out = moe(x)
    assert out.hidden_BSD.shape == x.shape
    expected = _dense_reference(moe, x.reshape(-1, x.shape[-1])).reshape(x.shape)
    torch.testing.assert_close(out.hidden_BSD, expected, atol=1e-5, rtol=1e-5)
    assert int(out.dropped_tokens) == 0


def test_capacity_drops_assignments_past_each_experts_capacity(moe: MoEFeedForward) -> None:
    moe.capacity_factor = 0.5
    d = moe.router.gate.in_features
    # Every token prefers experts 0 then 1: each takes only its first `capacity` tokens.
    with torch.no_grad():
        moe.router.gate.weight.zero_()
        moe.router.gate.weight[0, 0] = 10.0
        moe.router.gate.weight[1, 0] = 5.0
    x = torch.randn(1, 12, d)
    x[..., 0] = x[..., 0].abs() + 1.0
    n_tokens = 12
    capacity = math.ceil(0.5 * n_tokens * 2 / 4)
    assert moe.capacity(n_tokens) == capacity

    out = moe(x)
    assert int(out.dropped_tokens) == 2 * (n_tokens - capacity)

    x_TD = x.reshape(-1, d)
    assert moe.shared_experts is not None
    shared_only = moe.shared_experts(x_TD)
    full = _dense_reference(moe, x_TD)
    got = out.hidden_BSD.reshape(-1, d)
    torch.testing.assert_close(got[:capacity], full[:capacity], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[capacity:], shared_only[capacity:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_takes_no_capacity_and_is_never_dropped(moe: MoEFeedForward, side: str) -> None:
    moe.capacity_factor = 0.5
    d = moe.router.gate.in_features
    with torch.no_grad():  # every token, padding too, prefers experts 0 then 1
        moe.router.gate.weight.zero_()
        moe.router.gate.weight[0, 0] = 10.0
        moe.router.gate.weight[1, 0] = 5.0
    x = torch.randn(2, 6, d)
    x[..., 0] = x[..., 0].abs() + 1.0
    mask = torch.ones(2, 6, dtype=torch.long)
    real = slice(0, 2) if side == "right" else slice(4, 6)
    mask[1] = 0
    mask[1, real] = 1
    # Right padding sits past every expert's capacity; left padding comes first and would
    # take the capacity of the real tokens after it.
    out = moe(x, mask)

    n_real = 8
    capacity = moe.capacity(n_real)
    assert capacity == 2
    assert int(out.dropped_tokens) == 2 * (n_real - capacity)
    # The real tokens fare as they would with no padding at all.
    alone = moe(torch.cat([x[0], x[1, real]])[None])
    assert int(alone.dropped_tokens) == int(out.dropped_tokens)
    got = torch.cat([out.hidden_BSD[0], out.hidden_BSD[1, real]])
    torch.testing.assert_close(got, alone.hidden_BSD[0], atol=1e-5, rtol=1e-5)


def test_no_capacity_limit_drops_nothing() -> None:
    config = get_config("tiny")
    assert config.capacity_factor is None
    moe = MoEFeedForward(dataclasses.replace(config, capacity_factor=None))
    assert moe.capacity(100) is None
    assert int(moe(torch.randn(3, 5, config.d_model)).dropped_tokens) == 0


@pytest.mark.parametrize("masked", [False, True])
def test_router_losses_match_formulas(moe: MoEFeedForward, masked: bool) -> None:
    x = torch.randn(2, 9, moe.router.gate.in_features)
    mask = torch.ones(2, 9, dtype=torch.long)
    if masked:
        mask[0, :4] = 0
    out = moe(x, mask if masked else None)

    logits, _, indices = moe.router(x.reshape(-1, x.shape[-1]))
    logits_np = logits.detach().double().numpy()
    keep = mask.reshape(-1).numpy().astype(bool)
    logits_np, chosen = logits_np[keep], indices.numpy()[keep]
    E, K = moe.n_experts, moe.top_k
    f = np.array([(chosen == i).sum() for i in range(E)]) / (len(chosen) * K)
    p = _softmax(logits_np).mean(axis=0)
    expected_aux = E * (f * p).sum()
    lse = np.log(np.exp(logits_np).sum(axis=-1))
    expected_z = (lse**2).mean()

    assert float(out.aux_loss.detach()) == pytest.approx(expected_aux, rel=1e-5)
    assert float(out.z_loss.detach()) == pytest.approx(expected_z, rel=1e-5)


def test_aux_loss_is_one_when_balanced_and_e_when_collapsed(moe: MoEFeedForward) -> None:
    E, K = moe.n_experts, moe.top_k
    uniform = torch.zeros(E * 4, E)
    # Each block of tokens picks a different pair, so assignments are spread evenly.
    indices = torch.stack([torch.arange(E * 4) % E, (torch.arange(E * 4) + 1) % E], dim=1)
    aux, _ = moe._router_losses(uniform, indices, None)
    assert float(aux) == pytest.approx(1.0)
    collapsed = torch.full((8, E), -1e4)
    collapsed[:, 0] = 0.0
    aux, _ = moe._router_losses(collapsed, torch.zeros(8, K, dtype=torch.long), None)
    assert float(aux) == pytest.approx(E)
