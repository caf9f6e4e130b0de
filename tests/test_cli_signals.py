"""SIGTERM ends a monitored run cleanly: marked failed, with what it measured delivered."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from observe.store.spool import Spool


@pytest.mark.slow
def test_sigterm_ends_the_run_as_failed_and_delivers_what_it_measured(tmp_path: Path) -> None:
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
    command = [
        sys.executable, "-c", "from observe.cli import main; main()",
        "train", "--model-size", "tiny", "--domain", "general", "--steps", "100000",
        "--batch-size", "2", "--seq-len", "32", "--docs", "40", "--no-progress",
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _loads(db) == 0:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never reached the store"
            time.sleep(0.2)
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
    assert spool.pending_rows == 0
    spool.close()


def _loads(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as connection:
            return int(connection.execute("select count(*) from expert_load").fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet
        return 0
