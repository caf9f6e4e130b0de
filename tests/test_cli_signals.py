"""A monitored run ends truthfully: SIGTERM marks it failed with what it measured delivered;
SIGKILL, which leaves it no word, leaves it lost rather than running forever."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import invoke

from observe.store.spool import Spool


def start_training(tmp_path: Path) -> subprocess.Popen[bytes]:
    """`observe train` of the tiny model for far more steps than a test waits for."""
    env = {
        **os.environ,
        "OBSERVE_DB_URL": f"sqlite:///{tmp_path / 'observe.db'}",
        "OBSERVE_SPOOL_DIR": str(tmp_path / "spool"),
        "OBSERVE_PROMETHEUS_PORT": "0",
        "OBSERVE_MONITOR_FLUSH_EVERY": "1",
        "OBSERVE_EXPORT_INTERVAL_S": "0.2",
        "OBSERVE_CLOSE_TIMEOUT_S": "10",
    }
    command = [
        sys.executable, "-c", "from observe.cli import main; main()",
        "train", "--model-size", "tiny", "--domain", "general", "--steps", "100000",
        "--batch-size", "2", "--seq-len", "32", "--docs", "40", "--no-progress",
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_until_stored(process: subprocess.Popen[bytes], db: Path) -> None:
    deadline = time.monotonic() + 120
    while _loads(db) == 0:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never reached the store"
        time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_ends_the_run_as_failed_and_delivers_what_it_measured(tmp_path: Path) -> None:
    db = tmp_path / "observe.db"
    process = start_training(tmp_path)
    try:
        wait_until_stored(process, db)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)  # a bound: past it the run hung
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    with sqlite3.connect(db) as connection:
        [(status,)] = connection.execute("select status from runs").fetchall()
    assert status == "failed"
    assert _loads(db) > 0
    # Everything measured reached the store: nothing was left in the spool.
    assert b"stay spooled" not in stderr
    [slot] = (tmp_path / "spool").iterdir()
    spool = Spool(slot, 1 << 20)
    assert spool.pending_rows == spool.pending_bytes == 0
    spool.close()


@pytest.mark.slow
def test_a_killed_run_shows_as_lost_not_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "observe.db"
    process = start_training(tmp_path)
    try:
        wait_until_stored(process, db)
        process.send_signal(signal.SIGKILL)
    finally:
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
