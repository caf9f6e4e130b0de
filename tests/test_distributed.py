"""Distributed runs: two ranks over gloo on CPU, each with data of its own.

The ranks run as separate processes (tests/distributed_ranks.py), started here with
torchrun's variables rather than by torchrun, whose agent would stop the surviving rank
when the other dies; the HF test uses torchrun itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from prometheus_server import free_port

from observe.catalogue import RANK_LABEL, RUN_LABEL, WORLD_SIZE_LABEL
from observe.distributed import Placement, shared_run_id
from observe.errors import ObserveError
from observe.settings import Settings
from observe.store.queries import expert_totals
from observe.store.schema import RUNS, SERIES
from observe.telemetry.provider import Telemetry

RANKS = Path(__file__).with_name("distributed_ranks.py")
WORLD = 2
# Long enough for two ranks on a loaded machine; a hang fails the test instead of stalling it.
HANG_S = 600


def run_ranks(scenario: str, out: Path, db_url: str) -> list[int]:
    """Starts every rank of `scenario`; returns their exit codes."""
    port = free_port()
    ranks = []
    for rank in range(WORLD):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        env.pop("OBSERVE_RUN_ID", None)
        log = (out / f"rank{rank}.log").open("w")
        command = [sys.executable, str(RANKS), scenario, str(out), db_url]
        ranks.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    return [rank.wait(timeout=HANG_S) for rank in ranks]


def results(out: Path, codes: list[int]) -> list[dict[str, Any]]:
    logs = "\n".join((out / f"rank{r}.log").read_text() for r in range(WORLD))
    assert codes == [0] * WORLD, logs
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def ranks_of_run(db_url: str, run_id: str) -> set[tuple[str, str]]:
    """(rank, world_size) of every series the store holds for `run_id`."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as connection:
            labels = [row.labels for row in connection.execute(sa.select(SERIES.c.labels))]
    finally:
        engine.dispose()
    return {
        (series.get(RANK_LABEL), series.get(WORLD_SIZE_LABEL))
        for series in labels
        if series.get(RUN_LABEL) == run_id
    }


def run_rows(db_url: str) -> list[Any]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.select(RUNS.c.id, RUNS.c.status)))
    finally:
        engine.dispose()


@pytest.mark.slow
def test_ranks_count_their_own_data_and_the_global_reduction_sums_them(
    tmp_path: Path, pg_url: str
) -> None:
    rank0, rank1 = results(tmp_path, run_ranks("counts", tmp_path, pg_url))
    for rank in (rank0, rank1):
        assert rank["local"] == rank["truth"]
        assert rank["global"] == (np.array(rank0["truth"]) + np.array(rank1["truth"])).tolist()
    assert rank0["truth"] != rank1["truth"]
    # Only rank 0 exports the global figures.
    assert rank0["global_windows"] > 0 and rank1["global_windows"] == 0
    # One run, both ranks' series in it, and its row owned by rank 0.
    run_id = rank0["run_id"]
    assert rank1["run_id"] == run_id
    assert ranks_of_run(pg_url, run_id) == {("0", "2"), ("1", "2")}
    assert (run_id, "finished") in [tuple(row) for row in run_rows(pg_url)]
    # The run's expert loads hold every rank's tokens, added up.
    engine = sa.create_engine(pg_url)
    try:
        totals = expert_totals(engine, run_id)
    finally:
        engine.dispose()
    summed = np.array(rank0["truth"]) + np.array(rank1["truth"])
    assert totals == dict(enumerate(summed.tolist()))


@pytest.mark.slow
def test_a_rank_without_moe_layers_takes_part_with_zeros(tmp_path: Path) -> None:
    rank0, rank1 = results(tmp_path, run_ranks("pipeline", tmp_path, "unused"))
    assert rank1["truth"] == []
    assert rank0["global"] == rank1["global"] == rank0["truth"]


@pytest.mark.slow
def test_a_rank_that_dies_does_not_hold_up_the_others_close(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'observe.db'}"
    codes = run_ranks("dies", tmp_path, db_url)
    assert codes[1] == 3
    logs = (tmp_path / "rank0.log").read_text()
    assert codes[0] == 0, logs
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    assert rank0["closed"]
    # The run is rank 0's: finished, whatever happened to rank 1.
    assert [tuple(row) for row in run_rows(db_url)] == [(rank0["run_id"], "finished")]


def test_ranks_agree_on_the_run_id_from_torchruns_rendezvous(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OBSERVE_RUN_ID", raising=False)
    rank1 = Placement(1, 2, 1)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-7")
    assert shared_run_id("m", rank1) == shared_run_id("m", Placement(0, 2, 0)) == "m-job-7"
    monkeypatch.setenv("OBSERVE_RUN_ID", "chosen")
    assert shared_run_id("m", rank1) == "chosen"
    assert shared_run_id("m", rank1, "given") == "given"
    monkeypatch.delenv("OBSERVE_RUN_ID")
    # torchrun's default rendezvous id says nothing of the job: no id rather than one per rank.
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    with pytest.raises(ObserveError, match="OBSERVE_RUN_ID"):
        shared_run_id("m", rank1)


def test_each_rank_serves_metrics_on_the_base_port_plus_its_local_rank() -> None:
    base = free_port()
    settings = Settings(prometheus_port=base, prometheus_linger_s=0)
    telemetry = Telemetry(settings, run_id="r", model="m", placement=Placement(3, 4, 1))
    try:
        assert telemetry.metrics_port == base + 1
    finally:
        telemetry.shutdown(1)


@pytest.mark.slow
@pytest.mark.hf
def test_the_hf_callback_under_torchrun_makes_one_run_of_every_rank(
    tmp_path: Path, pg_url: str
) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", f"--nproc-per-node={WORLD}"]
    command += [str(RANKS.with_name("distributed_hf.py")), str(tmp_path), pg_url]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OBSERVE_RUN_ID", None)
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=HANG_S, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rank0, rank1 = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    run_id = rank0["run_id"]
    assert rank1["run_id"] == run_id
    # Each rank counted the tokens of its own shard: STEPS × ACCUMULATION × BATCH sequences.
    assert rank0["tokens"] == rank1["tokens"] and all(rank0["tokens"])
    assert ranks_of_run(pg_url, run_id) == {("0", "2"), ("1", "2")}
    assert (run_id, "finished") in [tuple(row) for row in run_rows(pg_url)]


def test_a_global_reduction_needs_a_process_group() -> None:
    import torch

    import observe

    dense = torch.nn.Linear(2, 2)
    with pytest.raises(ObserveError, match="init_process_group"):
        config = observe.MonitorConfig(reduce="global", require_routers=False)
        observe.attach(dense, config)
    # The failed attach left the model free.
    observe.attach(dense, observe.MonitorConfig(require_routers=False)).close()


def test_a_model_part_without_routers_attaches_only_when_told_to() -> None:
    import torch

    import observe

    dense = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ObserveError, match="require_routers=False"):
        observe.attach(dense)
    with observe.attach(dense, observe.MonitorConfig(require_routers=False)) as monitor:
        dense(torch.ones(1, 2))
        monitor.step()
        assert monitor.snapshot().layers == ()
