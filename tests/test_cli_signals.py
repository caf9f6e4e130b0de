"""A monitored run ends truthfully: SIGTERM marks it failed, with what it measured
delivered, or spooled when the store does not answer, within the close limit; SIGKILL, which
leaves it no word, leaves it lost rather than running forever."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cli_runner import invoke
from conftest import RUN_POINTS, ProxiedPg
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import free_port

from observe import catalogue
from observe.store.records import Batch
from observe.store.spool import Spool

# A bound on waiting for the run to get going, past which it never did.
START_BOUND_S = 120.0
TRAIN = [
    sys.executable, "-c", "from observe.cli import main; main()",
    "train", "--model-size", "tiny", "--domain", "general", "--steps", "100000",
    "--batch-size", "2", "--seq-len", "32", "--docs", "40", "--no-progress",
]  # fmt: skip


def start_training(tmp_path: Path) -> subprocess.Popen[bytes]:
    """`observe train` of the tiny model for far more steps than a test waits for, once its
    first expert loads are in the store."""
    db = tmp_path / "observe.db"
    env = {
        **os.environ,
        "OBSERVE_DB_URL": f"sqlite:///{db}",
        "OBSERVE_SPOOL_DIR": str(tmp_path / "spool"),
        "OBSERVE_PROMETHEUS_PORT": "0",
        "OBSERVE_MONITOR_FLUSH_EVERY": "1",
        "OBSERVE_EXPORT_INTERVAL_S": "0.2",
        "OBSERVE_CLOSE_TIMEOUT_S": "10",
    }
    command = [*TRAIN, "--out", str(tmp_path / "run")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(process, lambda: _loads(db) > 0, "the run never reached the store")
    except BaseException:
        process.kill()
        raise
    return process


@pytest.mark.slow
def test_sigterm_ends_the_run_as_failed_and_delivers_what_it_measured(tmp_path: Path) -> None:
    db = tmp_path / "observe.db"
    process = start_training(tmp_path)
    try:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)  # a bound: past it the run hung
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert _status(db) == "failed"
    assert _loads(db) > 0
    # Everything measured reached the store: nothing was left in the spool.
    assert b"stay spooled" not in stderr
    [slot] = (tmp_path / "spool").glob("*/slot-*")
    spool = Spool(slot, 1 << 20)
    assert spool.pending_rows == spool.pending_bytes == 0
    spool.close()


@pytest.mark.slow
def test_a_killed_run_shows_as_lost_not_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "observe.db"
    process = start_training(tmp_path)
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert _status(db) == "running"  # nobody told the store otherwise

    monkeypatch.setenv("OBSERVE_DB_URL", f"sqlite:///{db}")
    monkeypatch.setenv("OBSERVE_SPOOL_DIR", str(tmp_path / "spool"))
    code, output = invoke("runs", "--json")
    assert code == 0, output
    [run] = json.loads(output)
    # Its process is gone from this host: lost at once, without waiting out lost_after_s.
    assert (run["status"], run["host"], run["pid"]) == ("lost", socket.gethostname(), process.pid)
    assert run["ended"] is None
    assert _status(db) == "lost"
    code, table = invoke("runs")  # 80 columns: the status stays whole, like the run id
    assert code == 0 and "│ lost " in table and run["id"] in table, table

    # What the killed process left spooled is replayed: samples, and heartbeats that prove
    # nothing about a process that is gone. The run stays lost.
    code, output = invoke("spool", "replay")
    assert code == 0 and "0 left" in output, output
    assert _status(db) == "lost"


def _status(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        [(status,)] = connection.execute("select status from runs").fetchall()
    return str(status)


def _loads(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as connection:
            return int(connection.execute("select count(*) from expert_load").fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet
        return 0


@pytest.mark.slow
def test_sigterm_on_a_stalled_store_exits_within_the_close_limit_and_loses_nothing(
    tmp_path: Path, stallable_pg: ProxiedPg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's connections stall (not refused) mid-run: SIGTERM still ends the process
    within close_timeout_s, what it measured stays spooled, and a replay delivers all of it
    once the network is back."""
    close_timeout_s = 3
    # Past this the process hung; far below the 60 s it once took.
    exit_bound_s = close_timeout_s + 20
    metrics_port = free_port()
    env = {
        **os.environ,
        "OBSERVE_SPOOL_DIR": str(tmp_path / "spool"),
        "OBSERVE_PROMETHEUS_PORT": str(metrics_port),
        "OBSERVE_PROMETHEUS_LINGER_S": "0",
        "OBSERVE_MONITOR_FLUSH_EVERY": "1",
        "OBSERVE_EXPORT_INTERVAL_S": "0.2",
        "OBSERVE_CLOSE_TIMEOUT_S": str(close_timeout_s),
        # Evaluating alerts every second: the last evaluation meets the stall too.
        "OBSERVE_ALERTS_EVALUATION_INTERVAL_S": "1",
    }
    command = [*TRAIN, "--out", str(tmp_path / "run"), "--db-url", stallable_pg.url]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(
            process,
            lambda: _stored_loads(stallable_pg.direct_url) > 0,
            "the run never reached the store",
        )
        stallable_pg.proxy.stall()
        _wait_for(
            process, lambda: _spooled(metrics_port) > 0, "nothing was spooled during the stall"
        )
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=exit_bound_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {exit_bound_s} s after SIGTERM on a stalled store")
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert b"stay spooled" in stderr
    assert b"dropped" not in stderr
    [slot] = (tmp_path / "spool").glob("*/slot-*")
    spooled = _spooled_batches(slot, tmp_path / "copy")
    assert spooled

    stallable_pg.proxy.resume()
    monkeypatch.setenv("OBSERVE_SPOOL_DIR", str(tmp_path / "spool"))
    code, output = invoke("spool", "replay", "--db-url", stallable_pg.url)
    assert code == 0, output
    spool = Spool(slot, 1 << 30)
    assert spool.pending_rows == 0
    spool.close()
    # Every spooled row is in the store once: none lost, none written twice; and the run's
    # end, which waited in the spool with them, is recorded.
    run_id = spooled[0].run_id
    assert _stored_status(stallable_pg.direct_url, run_id) == "failed"
    samples, loads = _stored_rows(stallable_pg.direct_url, run_id)
    assert max(samples.values()) == 1
    spooled_loads: Counter[tuple[int, int, int]] = Counter()
    for batch in spooled:
        for s in batch.samples:
            assert (s.metric, tuple(sorted(s.labels.items())), s.time, s.value) in samples
        for load in batch.expert_loads:
            columns = (load.layer.tolist(), load.expert.tolist(), load.tokens.tolist())
            for layer, expert, tokens in zip(*columns, strict=True):
                spooled_loads[load.step, layer, expert] += tokens
    # The store adds the figures of one (step, layer, expert): the window that closing
    # flushed after the last step shares that step with the one before it, which may have
    # been delivered before the stall. Every other step's figures are exactly the spooled.
    last_step = max(step for step, _, _ in loads)
    for key, tokens in spooled_loads.items():
        if key[0] == last_step:
            assert loads[key] >= tokens, key
        else:
            assert loads[key] == tokens, key


def _wait_for(process: subprocess.Popen[bytes], condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_BOUND_S
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _spooled(port: int) -> float:
    """What the run's /metrics says waits in its spool."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = catalogue.SPOOLED_SAMPLES.prometheus_name
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == wanted
    )


def _spooled_batches(slot: Path, copy: Path) -> list[Batch]:
    """The batches waiting in `slot`, read from a copy so the slot stays as it is."""
    shutil.copytree(slot, copy)
    spool = Spool(copy, 1 << 30)
    batches = []
    try:
        while (entry := spool.peek()) is not None:
            batches.append(entry.batch)
            spool.ack(entry)
    finally:
        spool.close()
    return batches


def _stored_loads(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text("SELECT count(*) FROM expert_load")).scalar_one())
    except sa.exc.ProgrammingError:  # not migrated yet
        return 0
    finally:
        engine.dispose()


def _stored_status(url: str, run_id: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.text("SELECT status FROM runs WHERE id = :run")
            return str(connection.execute(query, {"run": run_id}).scalar_one())
    finally:
        engine.dispose()


def _stored_rows(url: str, run_id: str) -> tuple[Counter[Any], dict[tuple[int, int, int], int]]:
    """The run's samples, each with how often it is there, and its expert loads by (step,
    layer, expert), which the store keeps one row each."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            samples = connection.execute(
                sa.text(
                    f"SELECT s.name, s.labels, x.time, x.value FROM ({RUN_POINTS}) AS x "
                    "JOIN series AS s ON s.id = x.series_id"
                ),
                {"run": run_id},
            )
            loads = connection.execute(
                sa.text("SELECT step, layer, expert, tokens FROM expert_load WHERE run_id = :run"),
                {"run": run_id},
            )
            return (
                Counter(
                    (name, tuple(sorted(labels.items())), time, value)
                    for name, labels, time, value in samples
                ),
                {(step, layer, expert): tokens for step, layer, expert, tokens in loads},
            )
    finally:
        engine.dispose()
