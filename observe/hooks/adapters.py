"""How observe finds a model family's routers and attention layers, and reads them.

An adapter names which modules are routers and attention layers, and how to read router
logits and each token's chosen experts from their inputs and outputs. Built-in adapters
cover the bundled reference model and Hugging Face `transformers` MoE families; users add
their own with `register_adapter`. Adapters match modules by class name, so observe never
imports a model library to recognise it.

Shape legend: T tokens, E routed experts, K experts chosen per token.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import torch
from torch import nn


class RouterReading(NamedTuple):
    """A router call's logits and choice. A named tuple: read once per router call, where
    decoding makes many calls and a dataclass costs more to build."""

    logits_TE: torch.Tensor
    # None when the router does not return its choice: it is then read from the input of
    # the module that runs the experts (`RouterAdapter.expert_choice_site`).
    topk_indices_TK: torch.Tensor | None


class RouterAdapter:
    """Reads one model family's routers. Subclass it to monitor a model observe does not know.

    Override `is_router` and `read_router` at least; the defaults read `num_experts` and
    `top_k` attributes, turn logits into probabilities with a softmax, and find no attention
    layers. Register the subclass with `register_adapter`, or pass it to `attach(adapter=...)`.
    """

    name = "custom"
    # Whether `read_router` reads the router's output alone, never state the router keeps
    # and changes on its next call: observe may then read each call's output later, many
    # at once, which costs decoding much less. Set it where that holds.
    reads_output_only = False

    def is_router(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def is_attention(self, module: nn.Module) -> bool:
        return False

    def n_experts(self, router: nn.Module) -> int:
        return _int_attribute(router, "num_experts")

    def top_k(self, router: nn.Module) -> int:
        return _int_attribute(router, "top_k")

    def read_router(self, router: nn.Module, output: Any) -> RouterReading:
        raise NotImplementedError

    def probabilities(self, logits_TE: torch.Tensor) -> torch.Tensor:
        """The router's distribution over experts, whose entropy observe reports."""
        return logits_TE.float().softmax(dim=-1)

    def expert_choice_site(self, block: nn.Module) -> nn.Module | None:
        """The module, inside the router's parent `block`, whose input carries the choice."""
        return None

    def read_expert_choice(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        """`topk_indices_TK` from the forward input of `expert_choice_site`."""
        raise NotImplementedError

    def drops_tokens(self, block: nn.Module) -> bool:
        """Whether the MoE `block` (the router's parent) drops assignments over capacity."""
        return False

    def read_dropped_tokens(self, block_output: Any) -> torch.Tensor:
        """Assignments the MoE block dropped, from its output; only where `drops_tokens`."""
        raise NotImplementedError


def _int_attribute(module: nn.Module, name: str) -> int:
    # Through getattr: Module.__getattr__ is typed as returning tensors or modules.
    return int(getattr(module, name))


def _class_name(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


class ReferenceAdapter(RouterAdapter):
    """The bundled `observe.workload` model: its router returns (logits, weights, indices)."""

    name = "reference"
    reads_output_only = True

    def is_router(self, module: nn.Module) -> bool:
        return _class_name(module) == "observe.workload.router.Router"

    def is_attention(self, module: nn.Module) -> bool:
        return _class_name(module) == "observe.workload.attention.CausalSelfAttention"

    def n_experts(self, router: nn.Module) -> int:
        return _int_attribute(router, "n_experts")

    def read_router(self, router: nn.Module, output: Any) -> RouterReading:
        logits_TE, _, topk_indices_TK = output
        return RouterReading(logits_TE, topk_indices_TK)

    def drops_tokens(self, block: nn.Module) -> bool:
        # Without a capacity factor nothing is ever dropped: no hook, no figure.
        return getattr(block, "capacity_factor", None) is not None

    def read_dropped_tokens(self, block_output: Any) -> torch.Tensor:
        return block_output.dropped_tokens


class HFTopKRouterAdapter(RouterAdapter):
    """`transformers` 5.x routers named `*TopKRouter` (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE…).

    Their forward returns `(router_logits, router_scores, router_indices)`.
    """

    name = "transformers"
    reads_output_only = True

    def is_router(self, module: nn.Module) -> bool:
        cls = type(module)
        return (
            cls.__module__.startswith("transformers.")
            and cls.__name__.lower().endswith("topkrouter")
            and not self._is_deepseek(module)
        )

    def is_attention(self, module: nn.Module) -> bool:
        cls = type(module)
        return (
            cls.__module__.startswith("transformers.")
            and cls.__name__.endswith("Attention")
            and hasattr(module, "layer_idx")
        )

    def read_router(self, router: nn.Module, output: Any) -> RouterReading:
        logits_TE, _, topk_indices_TK = output
        return RouterReading(logits_TE, topk_indices_TK)

    @staticmethod
    def _is_deepseek(module: nn.Module) -> bool:
        return type(module).__name__ in DeepSeekV3Adapter.router_classes


class DeepSeekV3Adapter(HFTopKRouterAdapter):
    """DeepSeek-V3-style routers: sigmoid affinities, group-limited top-k, a bias on choice.

    The experts actually used are read from the MoE block's experts module, not recomputed
    from the logits: the choice depends on a correction bias and group limits.
    """

    name = "deepseek_v3"
    router_classes = frozenset({"DeepseekV3TopkRouter"})

    def is_router(self, module: nn.Module) -> bool:
        return type(module).__module__.startswith("transformers.") and self._is_deepseek(module)

    def read_router(self, router: nn.Module, output: Any) -> RouterReading:
        logits_TE = output[0] if isinstance(output, tuple) else output
        return RouterReading(logits_TE, None)

    def probabilities(self, logits_TE: torch.Tensor) -> torch.Tensor:
        # Affinities are independent sigmoids; normalised, they are the router's distribution.
        affinity_TE = logits_TE.float().sigmoid()
        return affinity_TE / affinity_TE.sum(dim=-1, keepdim=True)

    def expert_choice_site(self, block: nn.Module) -> nn.Module | None:
        experts = getattr(block, "experts", None)
        return experts if isinstance(experts, nn.Module) else None

    def read_expert_choice(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        # Experts modules are called as experts(hidden_states, top_k_index, top_k_weights).
        return kwargs["top_k_index"] if "top_k_index" in kwargs else args[1]


BUILTIN_ADAPTERS: tuple[RouterAdapter, ...] = (
    ReferenceAdapter(),
    DeepSeekV3Adapter(),
    HFTopKRouterAdapter(),
)
SUPPORTED_FAMILIES = (
    "the bundled reference model (observe.workload), and transformers 5.x Mixtral, "
    "Qwen2-MoE, Qwen3-MoE, DeepSeek-V3 and other *TopKRouter families"
)

_registered: list[RouterAdapter] = []
_lock = threading.Lock()


def register_adapter(adapter: RouterAdapter) -> None:
    """Makes `attach` try `adapter` before the built-in ones, newest registration first."""
    if not isinstance(adapter, RouterAdapter):
        raise TypeError(f"{adapter!r} is not a RouterAdapter: subclass observe.RouterAdapter")
    with _lock:
        _registered.insert(0, adapter)


def unregister_adapter(adapter: RouterAdapter) -> None:
    with _lock:
        if adapter in _registered:
            _registered.remove(adapter)


def known_adapters() -> tuple[RouterAdapter, ...]:
    with _lock:
        return (*_registered, *BUILTIN_ADAPTERS)
