"""Bulk writes of a batch's rows: COPY on PostgreSQL, executemany on SQLite."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, Table, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from observe.store.records import Batch
from observe.store.schema import (
    DRIFT_RESULTS,
    EXPERT_LOAD,
    HIDDEN_SAMPLES,
    HISTOGRAMS,
    SAMPLES,
    SERIES,
    WINDOW_SAMPLES,
)

# Binary COPY: no text formatting of timestamps and floats on either side.
_COPY_SAMPLES = "COPY samples (time, series_id, run_id, value) FROM STDIN (FORMAT BINARY)"
_SAMPLE_TYPES = ("timestamptz", "int4", "text", "float8")
_COPY_EXPERT_LOAD = (
    "COPY expert_load (run_id, step, layer, expert, tokens) FROM STDIN (FORMAT BINARY)"
)
_EXPERT_LOAD_TYPES = ("text", "int8", "int4", "int4", "int8")
# Series looked up per statement: well under SQLite's limit on bound parameters.
_LOOKUP_CHUNK = 500

# A series as the cache knows it: metric name and sorted label pairs (cheaper than JSON).
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def series_key(metric: str, labels: Mapping[str, str]) -> SeriesKey:
    return metric, tuple(sorted(labels.items()))


def upsert(connection: Connection) -> Callable[[Table], Any]:
    """The dialect's INSERT, which has ON CONFLICT on both engines."""
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


def series_ids(
    connection: Connection, wanted: Mapping[SeriesKey, Mapping[str, str]]
) -> dict[SeriesKey, int]:
    """Ids of the `wanted` series, creating those the table lacks."""
    rows = [
        {"name": name, "labels": dict(labels), "labels_key": labels_key(labels)}
        for (name, _), labels in wanted.items()
    ]
    connection.execute(
        upsert(connection)(SERIES).on_conflict_do_nothing(index_elements=["name", "labels_key"]),
        rows,
    )
    by_text = {(r["name"], r["labels_key"]): key for r, key in zip(rows, wanted, strict=True)}
    pairs = list(by_text)
    found: dict[SeriesKey, int] = {}
    for start in range(0, len(pairs), _LOOKUP_CHUNK):
        chunk = pairs[start : start + _LOOKUP_CHUNK]
        for id_, name, labels_text in connection.execute(
            select(SERIES.c.id, SERIES.c.name, SERIES.c.labels_key).where(
                tuple_(SERIES.c.name, SERIES.c.labels_key).in_(chunk)
            )
        ):
            found[by_text[(name, labels_text)]] = id_
    return found


def write_rows(connection: Connection, batch: Batch, series: Mapping[SeriesKey, int]) -> None:
    """Every row of `batch`, in the connection's transaction."""
    run = batch.run_id
    if connection.dialect.name == "postgresql":
        if batch.samples:
            _copy(
                connection,
                _COPY_SAMPLES,
                _SAMPLE_TYPES,
                (
                    (s.time, series[series_key(s.metric, s.labels)], run, s.value)
                    for s in batch.samples
                ),
            )
        if batch.expert_loads:
            _copy(
                connection,
                _COPY_EXPERT_LOAD,
                _EXPERT_LOAD_TYPES,
                ((run, e.step, e.layer, e.expert, e.tokens) for e in batch.expert_loads),
            )
    else:
        if batch.samples:
            connection.execute(
                insert(SAMPLES),
                [
                    {
                        "time": s.time,
                        "series_id": series[series_key(s.metric, s.labels)],
                        "run_id": run,
                        "value": s.value,
                    }
                    for s in batch.samples
                ],
            )
        if batch.expert_loads:
            connection.execute(
                insert(EXPERT_LOAD),
                [
                    {
                        "run_id": run,
                        "step": e.step,
                        "layer": e.layer,
                        "expert": e.expert,
                        "tokens": e.tokens,
                    }
                    for e in batch.expert_loads
                ],
            )
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
                    "series_id": series[series_key(h.metric, h.labels)],
                    "run_id": run,
                    "count": h.count,
                    "sum": h.sum,
                    "bounds": list(h.bounds),
                    "bucket_counts": list(h.bucket_counts),
                }
                for h in batch.histograms
            ],
        )


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


def _copy(
    connection: Connection, sql: str, types: Sequence[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    # COPY is psycopg's, not SQLAlchemy's: run it on the driver connection, which is in the
    # same transaction.
    raw: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
    with raw.cursor() as cursor, cursor.copy(sql) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def labels_text(labels: Mapping[str, str]) -> str:
    """The labels as canonical JSON: the same labels in any order give the same text."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def labels_key(labels: Mapping[str, str]) -> str:
    """`series.labels_key`, the series' unique key with its name: a digest of the canonical
    text, of fixed size, so that label values of any length fit PostgreSQL's B-tree index,
    whose entries are capped at 2,704 bytes."""
    return hashlib.sha256(labels_text(labels).encode()).hexdigest()
