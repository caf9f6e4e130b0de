"""Spooled batches belong to their store: a later run on another database leaves them
waiting, and `observe spool` shows, replays or discards them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
import torch
from cli_runner import invoke
from conftest import libpq_url
from pg_cluster import PgCluster

from observe.hooks.config import MonitorConfig
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.store.spools import fingerprint
from observe.workload.config import get_config
from observe.workload.model import MoETransformer


def monitored_steps(session: MonitoringSession, steps: int = 4) -> None:
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    monitor = session.attach(model)
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randint(3, 250, (2, 16)))
            monitor.step()


def stored_runs(url: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            return dict(db.execute(sa.text("select id, model from runs")).all())
    finally:
        engine.dispose()


def test_batches_wait_for_their_own_store(
    tmp_path: Path, throwaway_pg: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"spool_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(throwaway_pg.url()), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    pg_url = throwaway_pg.url(database=database)
    sqlite_url = f"sqlite:///{tmp_path / 'observe.db'}"
    spool_dir = tmp_path / "spool"
    common = {
        "spool_dir": spool_dir,
        "prometheus_port": None,
        "close_timeout_s": 2.0,
        "monitor": MonitorConfig(flush_every=1),
        "export_interval_s": 0.2,
    }

    # A PostgreSQL run whose database goes away mid-run: its batches stay spooled.
    session = MonitoringSession(Settings(db_url=pg_url, **common), model="pg-model")
    throwaway_pg.stop()
    try:
        monitored_steps(session)
        session.close()
        # A later run in the same directory, on the embedded default store.
        with MonitoringSession(Settings(db_url=sqlite_url, **common), model="local") as local:
            monitored_steps(local)
        assert stored_runs(sqlite_url) == {local.run_id: "local"}  # nothing of PostgreSQL's

        monkeypatch.setenv("OBSERVE_SPOOL_DIR", str(spool_dir))
        code, output = invoke("spool", "status", "--json")
        assert code == 0, output
        waiting = [s for s in json.loads(output) if s["pending_rows"]]
        assert [s["fingerprint"] for s in waiting] == [fingerprint(pg_url)]
        assert "***" in waiting[0]["store"] and PgCluster.PASSWORD not in output
        # Replaying into the wrong store is refused, naming the right one.
        code, output = invoke("spool", "replay", "--slot", waiting[0]["slot"],
                              "--db-url", sqlite_url)  # fmt: skip
        assert code == 2 and "belongs to postgresql" in output
    finally:
        throwaway_pg.start()

    code, output = invoke("spool", "replay", "--db-url", pg_url, "--timeout", "60")
    assert code == 0 and "0 left" in output, output
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as db:
        loads = db.execute(
            sa.text("select count(*) from expert_load where run_id = :r"), {"r": session.run_id}
        ).scalar_one()
    engine.dispose()
    assert loads > 0
    assert session.run_id not in stored_runs(sqlite_url)


def test_discarding_a_slot_needs_yes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool_dir = tmp_path / "spool"
    url = f"sqlite:///{tmp_path / 'observe.db'}"
    with MonitoringSession(
        Settings(db_url=url, spool_dir=spool_dir, prometheus_port=None), model="m"
    ):
        pass
    monkeypatch.setenv("OBSERVE_SPOOL_DIR", str(spool_dir))
    [slot] = json.loads(invoke("spool", "status", "--json")[1])
    code, output = invoke("spool", "discard", "--slot", slot["slot"])
    assert code == 2 and "pass --yes" in output
    code, output = invoke("spool", "discard", "--slot", slot["slot"], "--yes")
    assert code == 0 and not Path(slot["slot"]).exists()
