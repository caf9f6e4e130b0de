"""Series ids of a run, found or created once: by key for a sparse sample, as one array per
family for a dense one, so a window of a family seen before costs no lookup per series.

A family's first window creates its series (262,144 for a 64 × 256 × 16 heatmap). Its labels
are formatted from fragments encoded once per label value, and never held as one Python
object per series: that work holds the interpreter lock, which /metrics scrapes and the
training loop's own threads wait for.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import ChainMap
from collections.abc import Iterable, Mapping, Sequence
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
        new_ids = series_ids(connection, run, wanted) if wanted else {}
        known = ChainMap(new_ids, self._ids)
        # The first window of a family pays a lookup per series; later ones none.
        new_families: dict[FamilyKey, npt.NDArray[np.int32]] = {}
        family_keys = [family_key(run, f) for f in batch.families]
        for family, fkey in zip(batch.families, family_keys, strict=True):
            if fkey not in self._families and fkey not in new_families:
                new_families[fkey] = family_ids(connection, run, family)
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
        _check(name, labels)
    names = [name for _, name, _ in wanted]
    texts = [labels_text(labels) for labels in wanted.values()]
    keys = [_digest(text) for text in texts]
    _create(connection, run_id, names, texts, keys)
    by_key = dict(zip(zip(names, keys, strict=True), wanted, strict=True))
    return {
        by_key[found]: id_
        for found, id_ in _stored(connection, run_id, set(names)).items()
        if found in by_key
    }


def family_ids(connection: Connection, run_id: str, family: Family) -> npt.NDArray[np.int32]:
    """Ids of `family`'s series in the order of its values, creating those the table lacks;
    labels the store cannot keep are an ObserveError before anything is written."""
    texts = family_labels_texts(family)
    if not texts:  # a grid with an empty axis: a monitor of no MoE layer
        return np.zeros(0, np.int32)
    keys = [_digest(text) for text in texts]
    metric = family.metric
    _create(connection, run_id, [metric] * len(texts), texts, keys)
    stored = _stored(connection, run_id, {metric})
    return np.fromiter((stored[metric, key] for key in keys), np.int32, len(keys))


def family_labels_texts(family: Family) -> list[str]:
    """`labels_text` of each of `family`'s series, in the order of its values: one format
    per series, each label's fragment of JSON encoded once per value."""
    where: dict[str, tuple[int, int]] = {}  # label name: (axis, place in the axis' keys)
    for axis, (names, keys) in enumerate(family.axes):
        for key in keys:
            _check(family.metric, dict(zip(names, key, strict=True)))
        where.update({name: (axis, place) for place, name in enumerate(names)})
    shared = {name: value for name, value in family.labels.items() if name not in where}
    _check(family.metric, shared)
    # A str.format template: the shared labels as literal text (braces doubled), each axis
    # label a field "{axis[place]}" of the series' position on that axis.
    parts = [
        _fragment(name, shared[name]).replace("{", "{{").replace("}", "}}")
        if name in shared
        else "{{{}[{}]}}".format(*where[name])
        for name in sorted({*shared, *where})
    ]
    template = "{{" + ",".join(parts) + "}}"
    fragments = [[tuple(map(_fragment, names, key)) for key in keys] for names, keys in family.axes]
    return [template.format(*position) for position in itertools.product(*fragments)]


def _check(metric: str, labels: Mapping[str, str]) -> None:
    """An ObserveError where the store cannot keep a series of `metric` with `labels`."""
    problem = labels_problem(labels)
    if problem is not None:
        raise ObserveError(f"a series of {metric}: {problem}")


def _fragment(name: str, value: str) -> str:
    """`"name":"value"` as `labels_text` writes it."""
    return f"{json.dumps(name, ensure_ascii=False)}:{json.dumps(value, ensure_ascii=False)}"


def _create(
    connection: Connection,
    run_id: str,
    names: Sequence[str],
    texts: Sequence[str],
    keys: Sequence[str],
) -> None:
    """Creates the run's series (name, labels text, labels key) that the table lacks."""
    rows = zip(names, texts, keys, strict=True)
    postgres = connection.dialect.name == "postgresql"
    if postgres and len(texts) > _STAGE_FROM:
        _create_staged(connection, run_id, rows)
        return
    # The canonical text as it is: through the JSON column type, each row's labels would be
    # encoded again.
    mark, labels = ("%s", "%s::jsonb") if postgres else ("?", "?")
    connection.exec_driver_sql(
        f"INSERT INTO series (run_id, name, labels, labels_key) "
        f"VALUES ({mark}, {mark}, {labels}, {mark}) "
        "ON CONFLICT (run_id, name, labels_key) DO NOTHING",
        [(run_id, name, text, key) for name, text, key in rows],
    )


def _stored(connection: Connection, run_id: str, names: set[str]) -> dict[tuple[str, str], int]:
    """Ids of the run's series named `names`, by (name, labels key)."""
    # By run and metric, not by label set: one statement on the unique index's prefix, where
    # a list of (name, labels) pairs took a statement per few hundred series.
    result = connection.execute(
        select(SERIES.c.name, SERIES.c.labels_key, SERIES.c.id).where(
            SERIES.c.run_id == run_id, SERIES.c.name.in_(sorted(names))
        )
    )
    return {(name, key): id_ for name, key, id_ in result}


def _create_staged(
    connection: Connection, run_id: str, rows: Iterable[tuple[str, str, str]]
) -> None:
    """Creates the run's series among `rows` (name, labels text, labels key) that the table
    lacks, through a staging table filled by one COPY: an INSERT of 262,144 series (a
    64 × 256 × 16 family's first window) as statements of a thousand rows took 16 s, each
    row's JSON bound on its own."""
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
