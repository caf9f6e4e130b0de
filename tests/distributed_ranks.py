"""One rank of a distributed test run (tests/test_distributed.py starts two), over gloo.

python tests/distributed_ranks.py SCENARIO OUT_DIR DB_URL, with torchrun's variables (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) set. Each rank feeds the bundled tiny
model data of its own, counts its routing with hooks of its own (the ground truth,
independent of observe) and writes what it saw to OUT_DIR/rank<N>.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import observe
from observe.hooks.stats import RoutingStats, Window
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.workload.config import get_config
from observe.workload.model import MoETransformer
from observe.workload.router import Router

STEPS, FLUSH_EVERY, SEQ = 5, 2, 12


class Truth:
    """Assignments per expert of each router layer, from the test's own hooks."""

    def __init__(self, model: nn.Module) -> None:
        routers = [m for m in model.modules() if isinstance(m, Router)]
        self.counts = [np.zeros(r.n_experts, dtype=np.int64) for r in routers]
        for layer, router in enumerate(routers):
            router.register_forward_hook(self._hook(layer))

    def _hook(self, layer: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            indices = output[2].reshape(-1).numpy()
            self.counts[layer] += np.bincount(indices, minlength=len(self.counts[layer]))

        return hook

    def lists(self) -> list[list[int]]:
        return [c.tolist() for c in self.counts]


class Windows:
    """A sink that counts the windows it is given."""

    def __init__(self) -> None:
        self.count = 0

    def consume(self, window: Window) -> None:
        self.count += 1


def counts(stats: RoutingStats) -> list[list[int]]:
    return [list(layer.tokens_per_expert) for layer in stats.layers]


def batch(rank: int, step: int) -> torch.Tensor:
    """Data of this rank's own: ranks differ in batch size and tokens."""
    generator = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randint(0, 256, (2 + rank, SEQ), generator=generator)


def tiny_model() -> MoETransformer:
    torch.manual_seed(0)
    return MoETransformer(get_config("tiny"))


def settings(out: Path, db_url: str, rank: int) -> Settings:
    return Settings(
        db_url=db_url,
        prometheus_port=0,
        prometheus_linger_s=0,
        spool_dir=out / f"spool{rank}",
        close_timeout_s=30,
    )


def counts_scenario(out: Path, db_url: str, rank: int) -> dict[str, Any]:
    """A session with a per-rank monitor, and a global monitor on a copy of the model."""
    own, summed = tiny_model(), tiny_model()
    truth = Truth(own)
    windows = Windows()
    with MonitoringSession(settings(out, db_url, rank), model="tiny-moe") as session:
        local = session.attach(own, observe.MonitorConfig(flush_every=FLUSH_EVERY))
        config = observe.MonitorConfig(flush_every=FLUSH_EVERY, reduce="global")
        global_ = observe.attach(summed, config, sinks=[windows])
        with torch.no_grad():
            for step in range(STEPS):
                own(batch(rank, step))
                summed(batch(rank, step))
                local.step()
                global_.step()
        result = {
            "run_id": session.run_id,
            "truth": truth.lists(),
            "local": counts(local.snapshot()),
            "global": counts(global_.snapshot()),
        }
        global_.close()
    return {**result, "global_windows": windows.count}


def pipeline_scenario(out: Path, db_url: str, rank: int) -> dict[str, Any]:
    """Rank 1 holds no MoE layer, as a pipeline stage of dense layers would."""
    model: nn.Module = tiny_model() if rank == 0 else nn.Sequential(nn.Linear(4, 4))
    truth = Truth(model)
    config = observe.MonitorConfig(flush_every=FLUSH_EVERY, reduce="global", require_routers=False)
    with observe.attach(model, config) as monitor, torch.no_grad():
        for step in range(STEPS):
            model(batch(rank, step) if rank == 0 else torch.ones(1, 4))
            monitor.step()
        return {"truth": truth.lists(), "global": counts(monitor.snapshot())}


def dies_scenario(out: Path, db_url: str, rank: int) -> dict[str, Any]:
    """Rank 1 dies mid-run; rank 0 must still close its session."""
    model = tiny_model()
    session = MonitoringSession(settings(out, db_url, rank), model="tiny-moe")
    config = observe.MonitorConfig(flush_every=1, reduce="global")
    monitor = session.attach(model, config)
    with torch.no_grad():
        for step in range(STEPS):
            if rank == 1 and step == 2:
                os._exit(3)  # no close, no atexit: as a killed process
            model(batch(rank, step))
            monitor.step()
    session.close()
    return {"run_id": session.run_id, "closed": True}


SCENARIOS = {"counts": counts_scenario, "pipeline": pipeline_scenario, "dies": dies_scenario}


def main() -> None:
    scenario, out, db_url = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    # A short timeout: a collective with a dead rank fails within it rather than hanging.
    torch.distributed.init_process_group("gloo", timeout=dt.timedelta(seconds=30))
    rank = torch.distributed.get_rank()
    result = SCENARIOS[scenario](out, db_url, rank)
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    if scenario != "dies":
        # Torn down together: a rank that tore down while its peer still finished the last
        # collective was seen to abort in gloo (std::terminate), once, under load.
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
