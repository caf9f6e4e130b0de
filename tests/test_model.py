"""Shapes, masks and the key/value cache of the reference model."""

import pytest
import torch

from observe.errors import ObserveError
from observe.workload.attention import KVCache
from observe.workload.config import CONFIGS, get_config
from observe.workload.model import MoETransformer
from observe.workload.router import Router
from observe.workload.tokenizer import ByteTokenizer


@pytest.fixture
def model() -> MoETransformer:
    torch.manual_seed(0)
    return MoETransformer(get_config("tiny")).eval()


def test_output_shapes(model: MoETransformer) -> None:
    config = model.config
    x = torch.randint(0, 256, (3, 11))
    out = model(x, labels_BS=x)
    assert out.logits_BSV.shape == (3, 11, config.vocab_size)
    assert out.loss is not None and out.loss.shape == ()
    assert out.aux_loss.shape == () and out.z_loss.shape == ()
    assert out.dropped_tokens_L.shape == (config.n_layers,)
    expected = out.lm_loss + config.aux_loss_coef * out.aux_loss + config.z_loss_coef * out.z_loss
    torch.testing.assert_close(out.loss, expected)


def test_every_layer_has_its_own_router_module(model: MoETransformer) -> None:
    routers = [m for m in model.modules() if isinstance(m, Router)]
    assert len(routers) == model.config.n_layers
    assert all(r.n_experts == 4 and r.top_k == 2 for r in routers)


def test_model_is_causal(model: MoETransformer) -> None:
    x = torch.randint(0, 256, (1, 10))
    y = x.clone()
    y[0, 7:] = (y[0, 7:] + 1) % 256
    torch.testing.assert_close(model(x).logits_BSV[:, :7], model(y).logits_BSV[:, :7])


def test_kv_cache_gives_the_same_logits_as_a_full_forward(model: MoETransformer) -> None:
    x = torch.randint(0, 256, (2, 12))
    full = model(x).logits_BSV
    cache = KVCache(model.config.n_layers)
    parts = [model(x[:, :5], kv_cache=cache).logits_BSV]
    parts += [model(x[:, i : i + 1], kv_cache=cache).logits_BSV for i in range(5, 12)]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_real_tokens(model: MoETransformer) -> None:
    x = torch.randint(0, 256, (1, 7))
    alone = model(x).logits_BSV[:, -1]
    padded = torch.cat([torch.full((1, 4), ByteTokenizer.PAD_ID), x], dim=1)
    mask = torch.tensor([[0] * 4 + [1] * 7])
    torch.testing.assert_close(
        model(padded, attention_mask=mask).logits_BSV[:, -1], alone, atol=1e-5, rtol=1e-5
    )


def test_padding_is_left_out_of_router_losses(model: MoETransformer) -> None:
    x = torch.randint(0, 256, (1, 6))
    padded = torch.cat([torch.full((1, 3), ByteTokenizer.PAD_ID), x], dim=1)
    mask = torch.tensor([[0] * 3 + [1] * 6])
    alone, masked = model(x), model(padded, attention_mask=mask)
    torch.testing.assert_close(masked.aux_loss, alone.aux_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked.z_loss, alone.z_loss, atol=1e-5, rtol=1e-5)


def test_too_long_input_is_a_clear_error(model: MoETransformer) -> None:
    with pytest.raises(ObserveError, match="max_seq_len=64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_wrong_mask_shape_is_a_clear_error(model: MoETransformer) -> None:
    with pytest.raises(ObserveError, match="attention_mask has shape"):
        model(torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))


def test_named_configs() -> None:
    assert set(CONFIGS) == {"tiny", "small", "bench"}
    small = get_config("small")
    assert (small.n_layers, small.d_model, small.n_routed_experts, small.top_k) == (4, 256, 16, 2)
    assert small.n_shared_experts == 1
    assert get_config("tiny", capacity_factor=1.25).capacity_factor == 1.25
    with pytest.raises(ObserveError, match="tiny, small, bench"):
        get_config("huge")
    with pytest.raises(ObserveError, match="top_k"):
        get_config("tiny", top_k=9)
