"""Bulk writes of a batch's rows: COPY on PostgreSQL, executemany on SQLite."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import Connection, Table, insert, text
from sqlalchemy.dialects import sqlite

from observe.store import binary_copy as copy
from observe.store.blocks import Block, block_copy_data
from observe.store.records import Batch, ExpertLoads
from observe.store.schema import (
    DRIFT_RESULTS,
    EXPERT_LOAD,
    HIDDEN_SAMPLES,
    HISTOGRAMS,
    SAMPLE_BLOCKS,
    SAMPLES,
    WINDOW_SAMPLES,
)
from observe.store.series import BatchSeries, series_key, upsert

_COPY_SAMPLES = "COPY samples (time, series_id, value) FROM STDIN (FORMAT BINARY)"
_COPY_BLOCKS = (
    "COPY sample_blocks (time, run_id, name, series_ids, series_values) FROM STDIN (FORMAT BINARY)"
)
_COPY_STAGED_LOADS = (
    "COPY staged_expert_load (step, layer, expert, tokens) FROM STDIN (FORMAT BINARY)"
)


@dataclasses.dataclass(frozen=True)
class Written:
    """What a batch added to `samples` and `sample_blocks`, which its run's row keeps
    count of."""

    samples: int
    # The oldest and newest sample time; None without samples.
    first: datetime | None
    last: datetime | None


def write_rows(connection: Connection, batch: Batch, series: BatchSeries) -> Written:
    """Every row of `batch`, in the connection's transaction: one COPY per table on
    PostgreSQL, an executemany on SQLite."""
    run = batch.run_id
    postgres = connection.dialect.name == "postgresql"
    if batch.samples:
        _write_samples(connection, batch, series, postgres=postgres)
    families = [
        (f, ids) for f, ids in zip(batch.families, series.family_ids, strict=True) if len(f)
    ]
    if families:
        blocks = [Block(f.time, f.metric, ids, f.values) for f, ids in families]
        if postgres:
            _copy(connection, _COPY_BLOCKS, block_copy_data(run, blocks))
        else:
            connection.execute(insert(SAMPLE_BLOCKS), [b.row(run) for b in blocks])
    if batch.expert_loads:
        _add_expert_loads(connection, run, batch.expert_loads, postgres=postgres)
    # Few per batch, with JSON columns: an executemany on both engines.
    if batch.drift_results:
        connection.execute(
            insert(DRIFT_RESULTS),
            [
                {
                    "time": d.time,
                    "run_id": run,
                    "layer": d.layer,
                    "method": d.method,
                    "score": d.score,
                    "threshold": d.threshold,
                    "drifted": d.drifted,
                    "details": dict(d.details),
                    "first_step": d.first_step,
                    "last_step": d.last_step,
                    "baseline_id": d.baseline_id,
                }
                for d in batch.drift_results
            ],
        )
    # A run's samples kept at its end replace what an earlier process of the run kept.
    if batch.hidden_samples:
        _replace(
            connection,
            HIDDEN_SAMPLES,
            [{"run_id": run, **dataclasses.asdict(h)} for h in batch.hidden_samples],
        )
    if batch.window_samples:
        _replace(
            connection,
            WINDOW_SAMPLES,
            [{"run_id": run, **dataclasses.asdict(w)} for w in batch.window_samples],
        )
    if batch.histograms:
        connection.execute(
            insert(HISTOGRAMS),
            [
                {
                    "time": h.time,
                    "series_id": series.ids[series_key(run, h.metric, h.labels)],
                    "count": h.count,
                    "sum": h.sum,
                    "bounds": list(h.bounds),
                    "bucket_counts": list(h.bucket_counts),
                }
                for h in batch.histograms
            ],
        )
    times = [s.time for s in batch.samples] + [f.time for f, _ in families]
    if not times:
        return Written(0, None, None)
    count = len(batch.samples) + sum(len(f) for f, _ in families)
    return Written(count, min(times), max(times))


def _write_samples(
    connection: Connection, batch: Batch, series: BatchSeries, *, postgres: bool
) -> None:
    """The batch's sparse counter and gauge samples, a row each."""
    run = batch.run_id
    ids = [series.ids[series_key(run, s.metric, s.labels)] for s in batch.samples]
    if not postgres:
        connection.execute(
            insert(SAMPLES),
            [
                {"time": s.time, "series_id": i, "value": s.value}
                for s, i in zip(batch.samples, ids, strict=True)
            ],
        )
        return
    count = len(batch.samples)
    data = copy.rows(
        [
            (
                copy.TIMESTAMPTZ,
                np.fromiter((copy.timestamp(s.time) for s in batch.samples), np.int64, count),
            ),
            (copy.INT4, np.asarray(ids, np.int32)),
            (copy.FLOAT8, np.fromiter((s.value for s in batch.samples), np.float64, count)),
        ]
    )
    _copy(connection, _COPY_SAMPLES, data)


def _replace(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Inserts `rows`, each replacing the row with its (run_id, layer)."""
    statement = upsert(connection)(table)
    key = ("run_id", "layer")
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=list(key),
            set_={c.name: statement.excluded[c.name] for c in table.c if c.name not in key},
        ),
        rows,
    )


def _add_expert_loads(
    connection: Connection, run: str, loads: Sequence[ExpertLoads], *, postgres: bool
) -> None:
    """Adds each row's tokens to the run's figure for its (step, layer, expert).

    A second figure for a key is real traffic, not a copy (a resend is caught by its
    delivery id): two windows that end at one step, or ranks that each count their own
    tokens. Adding keeps one row per key with the total.
    """
    layer = np.concatenate([e.layer for e in loads])
    expert = np.concatenate([e.expert for e in loads])
    tokens = np.concatenate([e.tokens for e in loads])
    steps = np.repeat([e.step for e in loads], [len(e) for e in loads])
    if postgres:
        # COPY cannot resolve conflicts: stage the rows, then one INSERT … ON CONFLICT.
        connection.exec_driver_sql(
            "CREATE TEMPORARY TABLE IF NOT EXISTS staged_expert_load "
            "(step int8, layer int4, expert int4, tokens int8) ON COMMIT DELETE ROWS"
        )
        data = copy.rows(
            [(copy.INT8, steps), (copy.INT4, layer), (copy.INT4, expert), (copy.INT8, tokens)]
        )
        _copy(connection, _COPY_STAGED_LOADS, data)
        connection.execute(
            text(
                "INSERT INTO expert_load (run_id, step, layer, expert, tokens) "
                "SELECT :run, step, layer, expert, sum(tokens) FROM staged_expert_load "
                # In key order: ranks adding to the same rows lock them in one order, so
                # they wait for each other rather than deadlock.
                "GROUP BY step, layer, expert ORDER BY step, layer, expert "
                "ON CONFLICT (run_id, step, layer, expert) "
                "DO UPDATE SET tokens = expert_load.tokens + EXCLUDED.tokens"
            ),
            {"run": run},
        )
        return
    statement = sqlite.insert(EXPERT_LOAD)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["run_id", "step", "layer", "expert"],
            set_={"tokens": EXPERT_LOAD.c.tokens + statement.excluded.tokens},
        ),
        [
            {"run_id": run, "step": st, "layer": la, "expert": ex, "tokens": to}
            for st, la, ex, to in zip(
                steps.tolist(), layer.tolist(), expert.tolist(), tokens.tolist(), strict=True
            )
        ],
    )


def _copy(connection: Connection, sql: str, data: bytes) -> None:
    # COPY is psycopg's, not SQLAlchemy's: run it on the driver connection, which is in the
    # same transaction.
    raw: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
    with raw.cursor() as cursor, cursor.copy(sql) as stream:
        stream.write(data)
