"""Series ids of a run, found or created once: by key for a sparse sample, as one array per
family for a dense one, so a window of a family seen before costs no lookup per series."""

from __future__ import annotations

import hashlib
import json
from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from sqlalchemy import Connection, select, text
from sqlalchemy.dialects import postgresql, sqlite

from observe.errors import ObserveError
from observe.store.records import Batch, Family, HistogramSample, Sample
from observe.store.schema import SERIES
from observe.store.storable import labels_problem

# A series as the cache knows it: run, metric name and sorted label pairs (cheaper than JSON).
SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]
# A family's series: run, metric, shared labels and axes.
FamilyKey = tuple[str, str, tuple[tuple[str, str], ...], Any]

# New series of a batch past which PostgreSQL gets them through a staging COPY: below it,
# creating a temporary table costs more than the INSERT it saves.
_STAGE_FROM = 1_000


def series_key(run_id: str, metric: str, labels: Mapping[str, str]) -> SeriesKey:
    return run_id, metric, tuple(sorted(labels.items()))


def family_key(run_id: str, family: Family) -> FamilyKey:
    return run_id, family.metric, tuple(sorted(family.labels.items())), family.axes


def upsert(connection: Connection) -> Any:
    """The dialect's INSERT, which has ON CONFLICT on both engines."""
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


@dataclass(frozen=True)
class BatchSeries:
    """The series ids of one batch's rows, and those the cache does not hold yet."""

    ids: Mapping[SeriesKey, int]
    # Per family of the batch, in order: its series ids in the order of its values.
    family_ids: tuple[npt.NDArray[np.int32], ...]
    new_ids: dict[SeriesKey, int]
    new_families: dict[FamilyKey, npt.NDArray[np.int32]]


class SeriesCache:
    """Ids of series known to be committed; a rolled-back transaction's never enter."""

    def __init__(self) -> None:
        self._ids: dict[SeriesKey, int] = {}
        self._families: dict[FamilyKey, npt.NDArray[np.int32]] = {}

    def resolve(self, connection: Connection, batch: Batch) -> BatchSeries:
        """Ids of every series in `batch`, creating in the connection's transaction those
        the table lacks."""
        run = batch.run_id
        wanted: dict[SeriesKey, Mapping[str, str]] = {}
        sparse: tuple[Sample | HistogramSample, ...] = (*batch.samples, *batch.histograms)
        for s in sparse:
            key = series_key(run, s.metric, s.labels)
            if key not in self._ids:
                wanted.setdefault(key, s.labels)
        # The first window of a family pays a lookup per series; later ones none.
        unseen: dict[FamilyKey, list[SeriesKey]] = {}
        family_keys = [family_key(run, f) for f in batch.families]
        for family, fkey in zip(batch.families, family_keys, strict=True):
            if fkey in self._families or fkey in unseen:
                continue
            keys = unseen[fkey] = []
            for labels in family.label_sets():
                key = series_key(run, family.metric, labels)
                keys.append(key)
                wanted.setdefault(key, labels)
        new_ids = series_ids(connection, run, wanted) if wanted else {}
        known = ChainMap(new_ids, self._ids)
        new_families = {
            fkey: np.fromiter((known[k] for k in keys), np.int32, len(keys))
            for fkey, keys in unseen.items()
        }
        families = ChainMap(new_families, self._families)
        return BatchSeries(known, tuple(families[k] for k in family_keys), new_ids, new_families)

    def keep(self, resolved: BatchSeries) -> None:
        """Remembers the batch's new series, once its transaction committed."""
        self._ids.update(resolved.new_ids)
        self._families.update(resolved.new_families)


def series_ids(
    connection: Connection, run_id: str, wanted: Mapping[SeriesKey, Mapping[str, str]]
) -> dict[SeriesKey, int]:
    """Ids of the run's `wanted` series, creating those the table lacks; text the store
    cannot keep in their labels is an ObserveError before anything is written."""
    for (_, name, _), labels in wanted.items():
        problem = labels_problem(labels)
        if problem is not None:
            raise ObserveError(f"a series of {name}: {problem}")
    names = [name for _, name, _ in wanted]
    texts = [labels_text(labels) for labels in wanted.values()]
    keys = [_digest(text) for text in texts]
    if connection.dialect.name == "postgresql" and len(wanted) > _STAGE_FROM:
        _create_staged(connection, run_id, zip(names, texts, keys, strict=True))
    else:
        connection.execute(
            upsert(connection)(SERIES).on_conflict_do_nothing(
                index_elements=["run_id", "name", "labels_key"]
            ),
            [
                {"run_id": run_id, "name": name, "labels": dict(labels), "labels_key": key}
                for name, labels, key in zip(names, wanted.values(), keys, strict=True)
            ],
        )
    by_key = dict(zip(zip(names, keys, strict=True), wanted, strict=True))
    found: dict[SeriesKey, int] = {}
    # By run and metric, not by label set: one statement on the unique index's prefix, where
    # a list of (name, labels) pairs took a statement per few hundred series.
    for id_, name, stored_key in connection.execute(
        select(SERIES.c.id, SERIES.c.name, SERIES.c.labels_key).where(
            SERIES.c.run_id == run_id, SERIES.c.name.in_(sorted(set(names)))
        )
    ):
        key = by_key.get((name, stored_key))
        if key is not None:
            found[key] = id_
    return found


def _create_staged(
    connection: Connection, run_id: str, rows: Iterable[tuple[str, str, str]]
) -> None:
    """Creates the run's series among `rows` (name, labels text, labels key) that the table
    lacks, through a staging table
    filled by one COPY: an INSERT of 262,144 series (a 64 × 256 × 16 family's first window)
    as statements of a thousand rows took 16 s, each row's JSON bound on its own."""
    connection.exec_driver_sql(
        "CREATE TEMPORARY TABLE IF NOT EXISTS staged_series "
        "(name text, labels jsonb, labels_key text) ON COMMIT DELETE ROWS"
    )
    raw: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
    with (
        raw.cursor() as cursor,
        cursor.copy("COPY staged_series (name, labels, labels_key) FROM STDIN") as copy,
    ):
        # psycopg escapes each field for COPY's text format: label values hold anything.
        for row in rows:
            copy.write_row(row)
    connection.execute(
        text(
            "INSERT INTO series (run_id, name, labels, labels_key) "
            "SELECT :run, name, labels, labels_key FROM staged_series "
            "ON CONFLICT (run_id, name, labels_key) DO NOTHING"
        ),
        {"run": run_id},
    )


def labels_text(labels: Mapping[str, str]) -> str:
    """The labels as canonical JSON: the same labels in any order give the same text."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def labels_key(labels: Mapping[str, str]) -> str:
    """`series.labels_key`, the series' unique key with its run and name: a digest of the
    canonical text, of fixed size, so that label values of any length fit PostgreSQL's
    B-tree index, whose entries are capped at 2,704 bytes."""
    return _digest(labels_text(labels))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
