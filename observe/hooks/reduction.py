"""`MonitorConfig(reduce="global")`: a monitor's sums added up over every rank of
torch.distributed's default group.

The ranks first agree on one layout of MoE layers, the union of what each holds (pipeline
stages hold different layers; a stage with none takes part with zeros). Then each flush
sums every layer's window in one `all_reduce` of one stacked vector, never one per
layer, on the calling thread: ranks reach it at the same step, because a global monitor
flushes on the step count alone.

A collective that fails (a rank died, or the group timed out: `init_process_group(timeout=
...)` bounds how long a collective waits for a rank that is gone) is logged once and this
rank's figures stay its own from then on, so that `close()` never waits on the dead rank.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from observe.errors import ObserveError
from observe.hooks.buffers import RoutingBuffers

logger = logging.getLogger("observe")


@dataclass(frozen=True)
class RouterLayout:
    """One MoE layer as every rank must see it: its router's path, experts, experts per
    token, and whether its block reports dropped tokens."""

    name: str
    n_experts: int
    top_k: int
    drops_tokens: bool


class GlobalReduction:
    """Sums of every rank of the default process group, rank 0 the one that exports."""

    def __init__(self) -> None:
        distributed = torch.distributed
        if not (distributed.is_available() and distributed.is_initialized()):
            raise ObserveError(
                "reduce='global' sums over the ranks of torch.distributed, which is not "
                "initialised: call torch.distributed.init_process_group before attaching, "
                "or use reduce='local'"
            )
        self.rank = distributed.get_rank()
        self.world_size = distributed.get_world_size()
        self.broken = False

    @property
    def exports(self) -> bool:
        return self.rank == 0

    def agree(self, layers: list[RouterLayout]) -> list[RouterLayout]:
        """The layout of every rank's MoE layers, in rank order then each rank's own (one
        `all_gather_object`); the same on every rank."""
        gathered: list[list[RouterLayout] | None] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, layers)
        union: dict[str, RouterLayout] = {}
        for rank, theirs in enumerate(gathered):
            for layer in theirs or ():
                known = union.setdefault(layer.name, layer)
                if known != layer:
                    raise ObserveError(
                        f"MoE layer {layer.name!r} differs between ranks ({known} and rank "
                        f"{rank}'s {layer}): every rank must hold the same model, or parts "
                        "of it with distinct module names"
                    )
        return list(union.values())

    def reduce(self, buffers: RoutingBuffers) -> None:
        """Replaces `buffers`' sums with their sums over every rank, in one collective."""
        if self.broken:
            return
        sums = buffers.stacked()
        try:
            torch.distributed.all_reduce(sums)
        except (RuntimeError, ValueError) as exc:  # DistBackendError is a RuntimeError
            self.broken = True
            logger.error(
                "observe: summing the monitor's window over %d ranks failed (%s): a rank is "
                "gone or the group timed out. Rank %d's figures are its own from now on",
                self.world_size,
                exc,
                self.rank,
            )
            return
        buffers.unstack(sums)
