"""Where this process sits in a distributed run, and the run id its ranks share.

Under `torchrun` (or any launcher that sets RANK, WORLD_SIZE and LOCAL_RANK) every rank of
one job is one run: the ranks agree on its id, each labels its series with `rank` and
`world_size`, and rank 0 alone owns the run's row in the store (its start, heartbeats and
end, so that `lost` means rank 0's process is gone).

The run id, in order of precedence:
1. `run_id=` or `OBSERVE_RUN_ID`, the same on every rank;
2. once torch.distributed is initialised, rank 0 makes one and broadcasts it (one
   `broadcast_object_list` when the session opens);
3. before that, torchrun's rendezvous id (TORCHELASTIC_RUN_ID, set by `--rdzv-id` or
   `--standalone`), so that the ranks agree without any collective: a job restarted with
   the same rendezvous id continues the same run.
A rank that can do none of these is an error rather than a run of its own.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from observe.catalogue import MAX_IDENTIFIER_CHARS
from observe.errors import ObserveError

RUN_ID_VARIABLE = "OBSERVE_RUN_ID"


@dataclass(frozen=True)
class Placement:
    """This process's rank among `world_size`, and its rank on its own machine."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def leads(self) -> bool:
        """Whether this rank owns the run's record: rank 0 (or a process on its own)."""
        return self.rank == 0


ALONE = Placement(0, 1, 0)


def placement() -> Placement | None:
    """This process's place in a distributed run (torch.distributed, else torchrun's RANK,
    WORLD_SIZE and LOCAL_RANK), or None when it runs alone."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if (group := _process_group()) is not None:
        world_size = group.get_world_size()
        if world_size > 1:
            return Placement(group.get_rank(), world_size, local_rank)
        return None
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and "RANK" in os.environ:
        return Placement(int(os.environ["RANK"]), world_size, local_rank)
    return None


def new_run_id(model: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = f"-{stamp}-{uuid.uuid4().hex[:6]}"
    # The model's name leads, cut short where a long one would take the id over the limit.
    return model[: MAX_IDENTIFIER_CHARS - len(suffix)] + suffix


def shared_run_id(model: str, where: Placement | None, run_id: str | None = None) -> str:
    """The id every rank of this job gives its run (the module's docstring says how)."""
    explicit = run_id or os.environ.get(RUN_ID_VARIABLE)
    if explicit:
        return explicit
    if where is None:
        return new_run_id(model)
    if (group := _process_group()) is not None:
        # Each rank makes a candidate; rank 0's reaches them all.
        shared: list[object] = [new_run_id(model)]
        group.broadcast_object_list(shared, src=0)
        return str(shared[0])
    rendezvous = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if rendezvous != "none":
        return f"{model}-{rendezvous}"
    raise ObserveError(
        f"rank {where.rank} of {where.world_size} cannot tell which run it belongs to: open "
        "the session after torch.distributed.init_process_group, launch with torchrun "
        f"--rdzv-id (or --standalone), or set {RUN_ID_VARIABLE} to the same id on every rank"
    )


def _process_group() -> Any:
    """torch.distributed once its default group is initialised, else None. A process that
    has not imported torch has no process group: importing torch here would load it into
    every tool that reads this module (the CLI, the store)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    distributed = torch.distributed
    return distributed if distributed.is_available() and distributed.is_initialized() else None
