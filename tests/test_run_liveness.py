"""Runs that do not lie: a run's end and heartbeats travel through the spool like its
samples, and a run whose process is gone shows as `lost`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from cli_runner import invoke
from conftest import RUN_POINTS, libpq_url
from pg_cluster import PgCluster

from observe.errors import ObserveError
from observe.settings import Settings
from observe.store.baselines import hidden_samples, npz_bytes, window_samples
from observe.store.engine import connect
from observe.store.liveness import mark_lost, process_alive
from observe.store.queries import RunInfo, list_runs
from observe.store.records import Batch, HiddenSample, RunEnd, Sample, WindowSample
from observe.store.schema import RUNS
from observe.store.spool import Spool
from observe.store.writer import Store

HOUR = timedelta(hours=1)
BOUND = timedelta(minutes=2)


def run(store: Store, run_id: str) -> RunInfo:
    [found] = [r for r in list_runs(store.engine) if r.id == run_id]
    return found


def statuses(store: Store, *run_ids: str) -> dict[str, str]:
    """The stored status of each of `run_ids`: PostgreSQL's database holds other tests' too."""
    return {r.id: r.status for r in list_runs(store.engine) if r.id in run_ids}


def set_run(store: Store, run_id: str, **values: object) -> None:
    """What another process would have recorded for the run: its pid, its heartbeat."""
    with store.engine.begin() as connection:
        connection.execute(sa.update(RUNS).where(RUNS.c.id == run_id).values(**values))


def here() -> tuple[str, int]:
    """This process's host and pid, as a run's end records them."""
    return socket.gethostname(), os.getpid()


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """A bound on waiting, after which the test fails as hung; never a speed check."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process of this host to stand in for a run's, killed at will."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def dead_pid() -> int:
    """The pid of a process that ran here and is gone."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_start_records_where_the_run_runs(store: Store) -> None:
    store.start_run("here", "tiny", {})
    started = run(store, "here")
    assert (started.host, started.pid) == (socket.gethostname(), os.getpid())
    assert started.heartbeat == started.started


def test_a_heartbeat_replayed_late_never_moves_the_last_one_back(store: Store) -> None:
    store.start_run("beat", "tiny", {})
    first = run(store, "beat").heartbeat
    store.write(Batch("beat", heartbeat=first + 2 * HOUR), delivery_id=uuid.uuid4().hex)
    store.write(Batch("beat", heartbeat=first + HOUR), delivery_id=uuid.uuid4().hex)
    assert run(store, "beat").heartbeat == first + 2 * HOUR


def test_a_silent_run_is_lost_until_its_end_arrives(store: Store) -> None:
    store.start_run("silent", "tiny", {})
    heartbeat = run(store, "silent").heartbeat
    assert "silent" not in mark_lost(store.engine, BOUND, heartbeat + BOUND / 2)
    later = heartbeat + BOUND + timedelta(seconds=1)
    assert "silent" in mark_lost(store.engine, BOUND, later)
    assert run(store, "silent").status == "lost"
    # The spooled end, delivered after the store gave the run up, says how it really ended.
    end = RunEnd("finished", heartbeat + timedelta(seconds=30), *here())
    store.write(Batch("silent", end=end), delivery_id=uuid.uuid4().hex)
    ended = run(store, "silent")
    assert (ended.status, ended.ended, ended.heartbeat) == ("finished", end.time, end.time)
    assert "silent" not in mark_lost(store.engine, BOUND, later + HOUR)


def test_a_run_whose_process_is_gone_from_this_host_is_lost_at_once(store: Store) -> None:
    store.start_run("killed", "tiny", {})
    store.start_run("alive", "tiny", {})  # this process: alive
    set_run(store, "killed", pid=dead_pid())
    lost = mark_lost(store.engine, BOUND)
    assert "killed" in lost and "alive" not in lost
    assert statuses(store, "killed", "alive") == {"killed": "lost", "alive": "running"}


def test_a_reused_pid_does_not_keep_a_run_alive(
    store: Store, sleeper: subprocess.Popen[bytes]
) -> None:
    # The pid runs a process that started an hour after the run last showed life.
    store.start_run("reused", "tiny", {})
    now = datetime.now(UTC)
    set_run(store, "reused", pid=sleeper.pid, heartbeat=now - HOUR)
    assert "reused" in mark_lost(store.engine, 2 * HOUR, now)
    # The same process, taken for the run's own when the run started after it.
    store.start_run("its-own", "tiny", {})
    set_run(store, "its-own", pid=sleeper.pid)
    assert "its-own" not in mark_lost(store.engine, 2 * HOUR, now)


def test_a_killed_process_not_yet_reaped_is_gone(sleeper: subprocess.Popen[bytes]) -> None:
    assert process_alive(sleeper.pid, datetime.now(UTC))
    sleeper.send_signal(signal.SIGKILL)  # a zombie until its parent, this test, waits
    wait_for(lambda: not process_alive(sleeper.pid, datetime.now(UTC)))
    assert sleeper.poll() is not None


def test_a_partitioned_run_runs_again_when_its_own_heartbeat_gets_through(
    store: Store,
) -> None:
    store.start_run("partitioned", "tiny", {})
    heartbeat = run(store, "partitioned").heartbeat
    assert "partitioned" in mark_lost(store.engine, BOUND, heartbeat + HOUR)
    # This process, the run's own, delivers its heartbeat: it was alive all along.
    store.write(Batch("partitioned", heartbeat=datetime.now(UTC)))
    assert run(store, "partitioned").status == "running"


def test_a_heartbeat_replayed_by_another_process_leaves_a_lost_run_lost(store: Store) -> None:
    store.start_run("gone", "tiny", {})
    set_run(store, "gone", pid=dead_pid())
    assert "gone" in mark_lost(store.engine, BOUND)
    # What the dead process spooled, replayed here: it proves nothing about that process.
    store.write(Batch("gone", heartbeat=datetime.now(UTC)), delivery_id=uuid.uuid4().hex)
    assert run(store, "gone").status == "lost"


def test_an_end_and_kept_samples_are_written_once(store: Store) -> None:
    store.start_run("once", "tiny", {})
    data = npz_bytes(sample_ND=np.ones((4, 3), dtype=np.float16))
    last = Batch(
        "once",
        hidden_samples=(HiddenSample(0, "layers.0.attention", data),),
        window_samples=(WindowSample(0, "layers.0.attention", 10, 19, data),),
        end=RunEnd("failed", datetime.now(UTC), *here()),
    )
    spooled = Batch.from_json(last.to_json())
    assert spooled == last
    delivery_id = uuid.uuid4().hex
    store.write(spooled, delivery_id=delivery_id)
    store.write(spooled, delivery_id=delivery_id)  # resent: its commit was not confirmed
    ended = run(store, "once")
    assert (ended.status, ended.ended) == ("failed", last.end and last.end.time)
    assert hidden_samples(store.engine, "once") == {"layers.0.attention": data}
    assert [w.data for w in window_samples(store.engine, "once")] == [data]


def test_a_full_spool_still_takes_a_runs_end_and_its_kept_samples(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "slot", max_bytes=4096)
    now = datetime.now(UTC)
    full = Batch("r", samples=tuple(Sample(now, "m", {"i": str(i)}, 1.0) for i in range(20)))
    while spool.append(full):
        pass
    rows = spool.pending_rows
    data = npz_bytes(sample_ND=np.ones((64, 8), dtype=np.float16))
    assert spool.append(Batch("r", hidden_samples=(HiddenSample(0, "a", data),)))
    assert spool.append(Batch("r", end=RunEnd("failed", now, *here())))
    assert not spool.append(full)  # measurements still wait for room
    assert spool.pending_rows == rows + 1 and spool.pending_bytes > 4096
    spool.close()


def test_lost_after_follows_the_export_interval_unless_set() -> None:
    assert Settings().lost_after == BOUND
    assert Settings(export_interval_s=60).lost_after == timedelta(minutes=3)
    assert Settings(lost_after_s=30, export_interval_s=1).lost_after == timedelta(seconds=30)
    # Shorter than a few exports: every live run would pass for lost between heartbeats.
    with pytest.raises(ObserveError, match="Raise lost_after_s to at least 15"):
        Settings(lost_after_s=10, export_interval_s=5)


def test_an_idle_session_still_shows_life(tmp_path: Path) -> None:
    from observe.pipeline import MonitoringSession

    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'observe.db'}",
        spool_dir=tmp_path / "spool",
        prometheus_port=None,
        export_interval_s=0.2,
    )
    with MonitoringSession(settings, model="idle") as session:
        store = session.store
        first = run(store, session.run_id).heartbeat
        # No monitor, no step: the exports alone carry the heartbeat.
        wait_for(lambda: run(store, session.run_id).heartbeat > first)
        assert run(store, session.run_id).status == "running"
    engine = sa.create_engine(settings.db_url or "")
    with engine.connect() as connection:
        status = connection.execute(sa.select(RUNS.c.status)).scalar_one()
    engine.dispose()
    assert status == "finished"


def spooled(spool_dir: Path) -> list[Batch]:
    """Every batch waiting in `spool_dir`'s slots, oldest first per slot."""
    return [
        Batch.from_dict(json.loads(line)["batch"])
        for segment in sorted(spool_dir.glob("*/slot-*/segment-*.jsonl"))
        for line in segment.read_text().splitlines()
    ]


@pytest.mark.slow
def test_a_run_ending_while_its_store_is_down_ends_when_its_spool_is_replayed(
    tmp_path: Path, throwaway_pg: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from observe.hooks.config import MonitorConfig
    from observe.pipeline import MonitoringSession
    from observe.workload.config import get_config
    from observe.workload.model import MoETransformer

    database = f"ends_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(throwaway_pg.url()), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    url = throwaway_pg.url(database=database)
    spool_dir = tmp_path / "spool"
    settings = Settings(
        db_url=url,
        spool_dir=spool_dir,
        prometheus_port=None,
        export_interval_s=0.2,
        close_timeout_s=2.0,
        monitor=MonitorConfig(flush_every=1),
    )
    session = MonitoringSession(settings, model="outage")
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    monitor = session.attach(model)
    with torch.no_grad():
        for _ in range(4):
            model(torch.randint(3, 250, (2, 16)))
            monitor.step()
    tokens = sum(sum(layer.tokens_per_expert) for layer in monitor.snapshot().layers)
    layers = len(monitor.attention_names)
    throwaway_pg.stop()
    try:
        session.close()  # the database is down: the end and the samples wait in the spool
        waiting = spooled(spool_dir)
    finally:
        throwaway_pg.start()
    [end] = [b.end for b in waiting if b.end is not None]
    assert end.status == "finished" and waiting[-1].end == end  # after all it measured
    assert sum(len(b.hidden_samples) for b in waiting) == layers > 0

    engine = connect(url)
    try:
        # Meanwhile the store gave the run up: it heard nothing from it for too long.
        assert session.run_id in mark_lost(engine, BOUND, datetime.now(UTC) + HOUR)
        monkeypatch.setenv("OBSERVE_SPOOL_DIR", str(spool_dir))
        for _ in range(2):  # the second replay finds nothing left to send
            code, output = invoke("spool", "replay", "--db-url", url, "--timeout", "60")
            assert code == 0 and "0 left" in output, output
        with engine.connect() as connection:
            status, ended = connection.execute(
                sa.select(RUNS.c.status, RUNS.c.ended).where(RUNS.c.id == session.run_id)
            ).one()
            stored_tokens, loads, distinct_loads = connection.execute(
                sa.text(
                    "SELECT sum(tokens), count(*), count(DISTINCT (step, layer, expert)) "
                    "FROM expert_load WHERE run_id = :run"
                ),
                {"run": session.run_id},
            ).one()
            samples, distinct_samples = connection.execute(
                sa.text(
                    "SELECT count(*), count(DISTINCT (series_id, time)) "
                    f"FROM ({RUN_POINTS}) AS points"
                ),
                {"run": session.run_id},
            ).one()
        kept = hidden_samples(engine, session.run_id)
    finally:
        engine.dispose()
    assert (status, ended) == ("finished", end.time)  # not lost, not running: how it ended
    assert len(kept) == layers
    # Every measurement there, exactly once.
    assert stored_tokens == tokens and loads == distinct_loads
    assert samples == distinct_samples > 0
