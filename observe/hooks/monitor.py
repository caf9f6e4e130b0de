"""`attach(model)`: hooks on an MoE model's routers and attention layers, and their flushes.

Hooks only queue tensor ops on the model's device. Every `flush_every` steps the sums are
copied out without blocking and a background thread turns them into statistics for the
sinks; `snapshot()` is the one call that waits. Under `reduce="global"` each flush first
sums the window over every rank (observe/hooks/reduction.py).
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from observe.errors import ObserveError
from observe.hooks.adapters import SUPPORTED_FAMILIES, RouterAdapter, known_adapters
from observe.hooks.buffers import RouterCall, RoutingBuffers
from observe.hooks.config import MonitorConfig
from observe.hooks.folding import Folder
from observe.hooks.recording import Recorder, flat, newest
from observe.hooks.reduction import GlobalReduction, RouterLayout
from observe.hooks.reservoir import HiddenStateReservoir
from observe.hooks.stats import RoutingStats, RoutingTotals
from observe.hooks.worker import WindowSink, WindowWorker
from observe.lifetime import Closeable

if TYPE_CHECKING:
    from observe.drift.live import DriftSink

logger = logging.getLogger("observe")

# Models with a monitor attached: two monitors on one model would count every token twice.
_monitored: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_monitored_lock = threading.Lock()


def attach(
    model: nn.Module,
    config: MonitorConfig | None = None,
    *,
    adapter: RouterAdapter | None = None,
    sinks: Sequence[WindowSink] = (),
    drift: DriftSink | None = None,
) -> Monitor:
    """Finds `model`'s routers and attention layers and registers observe's hooks on them.

    `adapter` overrides the search through registered and built-in adapters; `sinks` receive
    each flushed window's statistics on the monitor's background thread. `drift`
    (`observe.drift.DriftSink(baseline)`) scores drift against a baseline (routing each
    window, semantic each drift window of the baseline's size); the monitor closes it, and
    `monitor.drift.latest` holds the newest scores.

    With `config.reduce="global"` every rank must attach (its monitors agree on the layers
    they sum) and then step, snapshot and close together.
    """
    config = config or MonitorConfig()
    candidates = [adapter] if adapter is not None else list(known_adapters())
    for candidate in candidates:
        routers = [(n, m) for n, m in model.named_modules() if candidate.is_router(m)]
        if routers:
            return Monitor(
                model, config, candidate, routers, _attention(model, candidate), sinks, drift
            )
    if not config.require_routers:
        # A pipeline stage without MoE layers: its hidden states, if the adapter knows its
        # attention layers, and its part in every reduction.
        fallback = next((c for c in candidates if _attention(model, c)), candidates[0])
        return Monitor(model, config, fallback, [], _attention(model, fallback), sinks, drift)
    tried = f"the {adapter.name!r} adapter" if adapter is not None else SUPPORTED_FAMILIES
    raise ObserveError(
        f"no MoE router found in {type(model).__name__}: observe recognises {tried}. For "
        "another model, subclass observe.RouterAdapter (is_router, read_router) and pass it "
        "as attach(model, adapter=...) or register it with observe.register_adapter. A "
        "part of a model that holds no MoE layer (a pipeline stage) attaches with "
        "MonitorConfig(require_routers=False)"
    )


def _attention(model: nn.Module, adapter: RouterAdapter) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if adapter.is_attention(m)]


class Monitor(Closeable):
    """Hooks on one model. Use `attach` to make one; `close` removes every hook."""

    def __init__(
        self,
        model: nn.Module,
        config: MonitorConfig,
        adapter: RouterAdapter,
        routers: list[tuple[str, nn.Module]],
        attention: list[tuple[str, nn.Module]],
        sinks: Sequence[WindowSink] = (),
        drift: DriftSink | None = None,
    ) -> None:
        # Checked first: a failed attach must leave the model free to attach again.
        self._reduction = GlobalReduction() if config.reduce == "global" else None
        with _monitored_lock:
            if model in _monitored:
                raise ObserveError(
                    f"{type(model).__name__} already has a monitor attached: close it first"
                )
            _monitored.add(model)
        self.model = model
        self.config = config
        self.adapter = adapter
        parents = dict(model.named_modules())
        own = [
            RouterLayout(
                name,
                adapter.n_experts(module),
                adapter.top_k(module),
                # The router's parent is the MoE block ("" names the model itself).
                {"routing", "dropped_tokens"} <= config.metrics
                and adapter.drops_tokens(parents[name.rpartition(".")[0]]),
            )
            for name, module in routers
        ]
        # Under a global reduction, every rank's layers: those of other pipeline stages
        # count zeros here.
        self.routers = own if self._reduction is None else self._reduction.agree(own)
        drift_sinks: tuple[DriftSink, ...] = () if drift is None else (drift,)
        if self._reduction is not None and not self._reduction.exports:
            sinks, drift_sinks = (), ()
        self.attention_names = [name for name, _ in attention]
        self.step_count = 0
        self.overhead_ns = 0
        metrics = config.metrics
        device = _device_of(model)
        n_experts_L = [r.n_experts for r in self.routers]
        histogram = "entropy_histogram" in metrics
        self._buffers = RoutingBuffers(
            n_experts_L,
            config.entropy_slots,
            device,
            histogram=histogram,
            router_losses="router_losses" in metrics,
        )
        # An adapter that keeps the default softmax leaves it to the folds, which then take
        # the entropy from the logits in fewer passes.
        softmax = type(adapter).probabilities is RouterAdapter.probabilities
        self._folder = Folder(self._buffers, None if softmax else adapter.probabilities, device)
        self._recorder = Recorder(adapter, self._folder, n_experts_L)
        self._reservoir = HiddenStateReservoir(
            len(attention), config.reservoir_size, device, seed=config.seed
        )
        # Sampled per window only for sinks that read the samples (drift): elsewhere the
        # extra draws would cost every prefill for nothing.
        self._window_sample = (
            HiddenStateReservoir(
                len(attention), config.window_sample_size, device, seed=config.seed + 1
            )
            if drift_sinks or any(getattr(s, "wants_hidden_states", False) for s in sinks)
            else None
        )
        self._random = random.Random(config.seed)
        self._mask: torch.Tensor | None = None
        # This forward's tokens (batch × positions): None outside the model's forward.
        self._forward_tokens: int | None = None
        # This forward's token mask for one token count: every layer of a forward asks for
        # the same one, and a decode step's slicing costs as much as the recording.
        self._token_masks: tuple[int, torch.Tensor | None] | None = None
        # This forward's pooling weights (batch × 1 × positions) and their sums per row,
        # for one shape: every attention layer of a forward pools with the same ones.
        self._pooling: tuple[tuple[int, int], torch.Tensor, torch.Tensor] | None = None
        self._measure_routing = self._measure_hidden = True
        self._pending_logits: list[torch.Tensor | None] = [None] * len(self.routers)
        # Layers whose router outputs may wait to be read: the choice is in the output.
        self._deferred_L = [False] * len(self.routers)
        self._window_first_step = 1
        self._closed = False
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._attention_hooks: list[tuple[nn.Module, Callable[..., None]]] = []
        self._attention_handles: list[torch.utils.hooks.RemovableHandle] = []
        self._register(routers, attention)
        self._worker = WindowWorker(
            RoutingTotals(
                n_experts_L, config.entropy_slots if histogram else 0, config.router_sample_rate
            ),
            [r.name for r in self.routers],
            # Layers whose dropped assignments are measured; the others report None.
            [r.drops_tokens for r in self.routers],
            self.attention_names,
            (*sinks, *drift_sinks),
        )
        self.drift = drift
        self._log_attached()

    # -- hooks -------------------------------------------------------------------------

    def _register(
        self, routers: list[tuple[str, nn.Module]], attention: list[tuple[str, nn.Module]]
    ) -> None:
        metrics, adapter = self.config.metrics, self.adapter
        hook = self._handles.append
        hook(
            self.model.register_forward_pre_hook(
                self._callback(self._before_forward), with_kwargs=True
            )
        )
        hook(self.model.register_forward_hook(self._callback(self._after_forward)))
        parents = dict(self.model.named_modules())
        layer_of = {r.name: layer for layer, r in enumerate(self.routers)}
        if "routing" in metrics:
            for name, router in routers:
                layer = layer_of[name]
                on_router = functools.partial(self._on_router, layer)
                hook(router.register_forward_hook(self._callback(on_router)))
                # The router's parent: the MoE block ("" names the model itself).
                block = parents[name.rpartition(".")[0]]
                site = adapter.expert_choice_site(block)
                self._deferred_L[layer] = adapter.reads_output_only and site is None
                if site is not None:
                    on_choice = functools.partial(self._on_expert_choice, layer)
                    hook(
                        site.register_forward_pre_hook(self._callback(on_choice), with_kwargs=True)
                    )
                if self.routers[layer].drops_tokens:
                    on_block = functools.partial(self._on_moe_block, layer)
                    hook(block.register_forward_hook(self._callback(on_block)))
        if "hidden_states" in metrics:
            self._attention_hooks = [
                (module, self._callback(functools.partial(self._on_attention, layer)))
                for layer, (_, module) in enumerate(attention)
            ]
            self._hook_attention(True)

    def _hook_attention(self, on: bool) -> None:
        """Registers or removes the attention hooks. They are off during one-position
        forwards (decode steps), which they would skip anyway: a hooked module call costs
        even when its hook does nothing, and decoding makes many small forwards."""
        if on == bool(self._attention_handles):
            return
        if on:
            self._attention_handles = [
                module.register_forward_hook(callback) for module, callback in self._attention_hooks
            ]
        else:
            for handle in self._attention_handles:
                handle.remove()
            self._attention_handles = []

    def _callback(self, fn: Callable[..., None]) -> Callable[..., None]:
        """Times the callback and keeps it out of torch.compile graphs, which would guard on
        (and recompile for) the monitor's host-side counters."""

        @torch.compiler.disable
        @functools.wraps(fn)
        def run(*args: Any) -> None:
            started = time.perf_counter_ns()
            try:
                fn(*args)
            finally:
                self.overhead_ns += time.perf_counter_ns() - started

        return run

    def _before_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
            mask = args[1]
        self._mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        self._token_masks = self._pooling = None
        shape = _input_shape(args, kwargs)
        self._forward_tokens = None if shape is None else shape[0] * shape[1]
        config = self.config
        # Draws only where sampling is on: this runs on every forward, decode steps included.
        self._measure_routing = (
            config.router_sample_rate == 1.0 or self._random.random() < config.router_sample_rate
        )
        self._measure_hidden = (
            config.hidden_state_sample_rate == 1.0
            or self._random.random() < config.hidden_state_sample_rate
        )
        if self._attention_hooks:
            self._hook_attention(self._measure_hidden and (shape is None or shape[1] != 1))

    def _after_forward(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._mask = None
        self._token_masks = self._pooling = None
        self._forward_tokens = None

    def _token_mask(self, n_tokens: int) -> torch.Tensor | None:
        cached = self._token_masks
        if cached is not None and cached[0] == n_tokens:
            return cached[1]
        mask_T = newest(self._mask, n_tokens)
        self._token_masks = (n_tokens, mask_T)
        return mask_T

    def _on_router(self, layer: int, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not self._measure_routing:
            return
        tokens = self._forward_tokens
        if tokens is not None and self._deferred_L[layer]:
            # Read at the fold, with many others (observe/hooks/recording.py).
            self._recorder.keep(layer, module, output, self._mask, tokens)
            return
        logits_TE, topk_indices_TK = self.adapter.read_router(module, output)
        if topk_indices_TK is None:
            # The choice arrives with the experts module's input, later in this forward.
            self._pending_logits[layer] = logits_TE
        else:
            self._add_routing(layer, logits_TE, topk_indices_TK)

    def _on_expert_choice(
        self, layer: int, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        logits_TE = self._pending_logits[layer]
        if logits_TE is None:
            return
        self._pending_logits[layer] = None
        self._add_routing(layer, logits_TE, self.adapter.read_expert_choice(args, kwargs))

    def _add_routing(
        self, layer: int, logits_TE: torch.Tensor, topk_indices_TK: torch.Tensor
    ) -> None:
        # Only recorded here: folding many calls together later costs far less.
        logits_TE, topk_indices_TK = flat(logits_TE, topk_indices_TK)
        mask_T = self._token_mask(logits_TE.shape[0])
        self._recorder.record(RouterCall(layer, logits_TE, topk_indices_TK, mask_T))

    def _on_moe_block(
        self, layer: int, module: nn.Module, args: tuple[Any, ...], output: Any
    ) -> None:
        if self._measure_routing:
            self._recorder.drop(layer, self.adapter.read_dropped_tokens(output))

    def _on_attention(
        self, layer: int, module: nn.Module, args: tuple[Any, ...], output: Any
    ) -> None:
        hidden_BSD = output[0] if isinstance(output, tuple) else output
        # One position per forward is a decode step of a sequence already pooled at prefill.
        if not self._measure_hidden or hidden_BSD.dim() != 3 or hidden_BSD.shape[1] == 1:
            return
        with torch.no_grad():
            hidden_BSD = hidden_BSD.detach().float()
            weight_B1S, count_B1 = self._pooling_weights(hidden_BSD)
            # A batched matrix product: no batch × positions × width temporary.
            pooled_BD = torch.bmm(weight_B1S, hidden_BSD).squeeze(1) / count_B1
            self._reservoir.add(layer, pooled_BD)
            if self._window_sample is not None:
                self._window_sample.add(layer, pooled_BD)

    def _pooling_weights(self, hidden_BSD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sequence's real tokens, to average its states over, and how many they are."""
        B, S, _ = hidden_BSD.shape
        cached = self._pooling
        if cached is not None and cached[0] == (B, S):
            return cached[1], cached[2]
        mask = self._token_mask(B * S)
        weight_BS = hidden_BSD.new_ones(B, S) if mask is None else mask.view(B, S).float()
        weights = (weight_BS[:, None, :], weight_BS.sum(1, keepdim=True).clamp_min(1.0))
        self._pooling = ((B, S), *weights)
        return weights

    # -- steps and flushes -------------------------------------------------------------

    def step(self) -> None:
        """Marks the end of a training or serving step; every `flush_every` steps, flushes.
        The step count alone decides: under a global reduction every rank flushes, and so
        takes part in the collective, at the same step."""
        self.step_count += 1
        if self.step_count - self._window_first_step + 1 >= self.config.flush_every:
            self.flush()

    def flush(self) -> None:
        """Starts copying the window's sums to the host; returns without waiting. Under a
        global reduction, every rank must call it (as `snapshot` and `close` do) together."""
        if self._closed:
            return
        started = time.perf_counter_ns()
        self._recorder.fold()
        self._folder.wait()
        if self._reduction is not None:
            # No early return on this rank's own sums: the others would wait for it.
            self._reduction.reduce(self._buffers)
        elif self.step_count < self._window_first_step and not any(self._buffers.calls_L):
            return  # nothing new since the last flush
        # Drained first: the routing sums' ready event then covers these copies too.
        hidden = self._window_sample.drain() if self._window_sample is not None else []
        sums = self._buffers.drain()
        self._worker.put(sums, hidden, self._window_first_step, self.step_count)
        self._window_first_step = self.step_count + 1
        self.overhead_ns += time.perf_counter_ns() - started

    # -- reading -------------------------------------------------------------------------

    def snapshot(self) -> RoutingStats:
        """Statistics since attach, every step so far included; waits for the device. Under
        a global reduction, every rank's are the sums over all ranks."""
        self.flush()
        layers = self._worker.total_stats()
        return RoutingStats(1, self.step_count, layers, self.config.router_sample_rate)

    def hidden_states(self) -> dict[str, torch.Tensor]:
        """The reservoir sample of pooled sequence states per attention layer, on the host."""
        return {name: self._reservoir.read(i) for i, name in enumerate(self.attention_names)}

    @property
    def overhead_seconds(self) -> float:
        """Time spent in observe's hook callbacks and flushes on the calling threads."""
        return self.overhead_ns / 1e9

    @property
    def worker_seconds(self) -> float:
        """Time the background thread spent turning flushed windows into statistics."""
        return self._worker.busy_ns / 1e9

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Flushes what is left, stops the background thread and removes every hook."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._folder.close()
        self._worker.close()
        if self.drift is not None:
            self.drift.close()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._hook_attention(False)
        with _monitored_lock:
            _monitored.discard(self.model)

    def _log_attached(self) -> None:
        experts = sorted({r.n_experts for r in self.routers})
        top_k = sorted({r.top_k for r in self.routers})
        logger.info(
            "observe: attached to %s with the %s adapter: %d MoE layers, %s experts, top-%s, "
            "%d attention layers",
            type(self.model).__name__,
            self.adapter.name,
            len(self.routers),
            "/".join(map(str, experts)),
            "/".join(map(str, top_k)),
            len(self.attention_names),
        )


def _input_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Size | None:
    """(batch, positions, …) of this forward's input (token ids or embeddings), when it can
    be told."""
    inputs = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
    if inputs is None and args:
        inputs = args[0]
    if isinstance(inputs, torch.Tensor) and inputs.dim() >= 2:
        return inputs.shape
    return None


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device
