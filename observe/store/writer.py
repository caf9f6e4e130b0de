"""Writes batches to the store: one transaction each, samples through COPY on PostgreSQL."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Column, Connection, Engine, and_, case, insert, literal, or_, select, update
from sqlalchemy.exc import DBAPIError

from observe.errors import ObserveError
from observe.store.engine import connect, mask_url, summarise
from observe.store.liveness import this_process
from observe.store.migrate import require_head, upgrade_engine
from observe.store.records import Batch, Family, HistogramSample, Sample
from observe.store.rows import Written, write_rows
from observe.store.schema import DELIVERED, RUNS, SAMPLES, UTCDateTime
from observe.store.series import BatchSeries, SeriesCache, series_key, upsert
from observe.store.storable import check


class StoreUnavailable(ObserveError):
    """The database could not be reached or lost the connection; write again later.

    The transaction was rolled back, unless the connection died while it committed: a
    write with a `delivery_id` is safe to repeat either way.
    """


class Store:
    """observe's SQL store. Not thread-safe: give each thread its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Series and runs known to be committed; a rolled-back transaction's never enter.
        self._series = SeriesCache()
        self._runs: set[str] = set()

    @classmethod
    def open(cls, url: str | None = None, *, upgrade: bool = True) -> Store:
        """Connects and, unless `upgrade` is False, migrates the schema to the newest revision."""
        engine = connect(url)
        try:
            if upgrade:
                upgrade_engine(engine)
            else:
                require_head(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def start_run(self, run_id: str, model: str, config: Mapping[str, Any]) -> None:
        """Records a run as running in this process; starting a known run again (a resume)
        reopens it, here."""
        check("model name", model, identifier=True)
        check("run id", run_id, identifier=True)
        now = _now()
        process = this_process()
        life = {"host": process.host, "pid": process.pid, "heartbeat": now}
        row = {"id": run_id, "model": model, "config": dict(config), "started": now, **life}
        with _unavailable_on_failure(self.engine), self.engine.begin() as connection:
            connection.execute(
                upsert(connection)(RUNS)
                .values(status="running", **row)
                .on_conflict_do_update(
                    index_elements=["id"],
                    set_={
                        "model": model,
                        "config": row["config"],
                        "status": "running",
                        "ended": None,
                        **life,
                    },
                )
            )
        self._runs.add(run_id)

    def update_run_config(self, run_id: str, entries: Mapping[str, Any]) -> None:
        """Sets `entries` in a started run's config, beside what it holds already."""
        with _unavailable_on_failure(self.engine), self.engine.begin() as connection:
            config = connection.execute(
                select(RUNS.c.config).where(RUNS.c.id == run_id).with_for_update()
            ).scalar()
            if config is None:
                raise ObserveError(f"no run {run_id!r} in the store: call start_run first")
            connection.execute(
                update(RUNS).where(RUNS.c.id == run_id).values(config={**config, **entries})
            )

    def write(self, batch: Batch, *, delivery_id: str | None = None) -> None:
        """Writes every row of `batch` or, on any error, none.

        With `delivery_id`, a batch already written under that id is skipped: the spool
        resends batches whose commit it could not confirm.
        """
        if batch.empty and delivery_id is None:
            return
        with _unavailable_on_failure(self.engine), self.engine.begin() as connection:
            if (
                delivery_id is not None
                and connection.execute(
                    select(DELIVERED.c.id).where(DELIVERED.c.id == delivery_id)
                ).first()
            ):
                return
            series = self._prepare(connection, batch)
            written = write_rows(connection, batch, series)
            if delivery_id is not None:
                connection.execute(insert(DELIVERED), {"id": delivery_id, "delivered": _now()})
            # Last: the run's row is locked from its update to the commit, and every rank of
            # a job writes its batches under the one run.
            _record_life(connection, batch, written)
        self._series.keep(series)
        self._runs.add(batch.run_id)

    def write_naive(self, batch: Batch) -> None:
        """One ORM object and one commit per sample: the benchmark's baseline, never used."""
        if batch.histograms or batch.expert_loads or batch.families:
            raise ValueError("write_naive writes samples only")
        with self.engine.begin() as connection:
            series = self._prepare(connection, batch)
        self._series.keep(series)
        self._runs.add(batch.run_id)

        from sqlalchemy.orm import Session

        row_class = _orm_sample()
        with Session(self.engine) as session:
            for s in batch.samples:
                row = row_class()
                row.time = s.time
                row.series_id = series.ids[series_key(batch.run_id, s.metric, s.labels)]
                row.value = s.value
                session.add(row)
                session.commit()

    def close(self) -> None:
        self.engine.dispose()

    def _prepare(self, connection: Connection, batch: Batch) -> BatchSeries:
        """Creates the run's row if it is new, and returns the ids of the batch's series.
        Text the store cannot keep is an ObserveError before anything is written."""
        if batch.run_id not in self._runs:
            check("run id", batch.run_id, identifier=True)
            # A run nobody started (its start was lost, or the exporter never calls
            # start_run) still gets its rows; start_run fills in the details later.
            connection.execute(
                upsert(connection)(RUNS)
                .values(
                    id=batch.run_id,
                    model=_model_label(batch),
                    config={},
                    started=_now(),
                    heartbeat=_now(),
                    status="running",
                )
                .on_conflict_do_nothing(index_elements=["id"])
            )
        return self._series.resolve(connection, batch)


def _record_life(connection: Connection, batch: Batch, written: Written) -> None:
    """The run's end, heartbeat and sample count, as `batch` carries them, in its
    transaction: one UPDATE of the run's row for a batch that does not end it."""
    run = RUNS.c.id == batch.run_id
    end = batch.end
    if end is not None:
        # Only the end of the process that runs the run now: one replayed late from an
        # earlier process must not close the run a later one resumed.
        ours = and_(RUNS.c.host == end.host, RUNS.c.pid == end.pid)
        connection.execute(
            update(RUNS)
            .where(run, or_(RUNS.c.host.is_(None), ours))
            .values(status=end.status, ended=end.time)
        )
    values: dict[str, Any] = {}
    if written.samples:
        # `observe runs` reads the count, and per-run reads of samples are bounded by the
        # span: the table has no index by series (see observe/store/schema.py).
        values["samples"] = RUNS.c.samples + written.samples
        values["first_sample"] = _kept(RUNS.c.first_sample, written.first, earliest=True)
        values["last_sample"] = _kept(RUNS.c.last_sample, written.last)
    # An end is a sign of life too.
    signs = [t for t in (batch.heartbeat, end.time if end else None) if t is not None]
    if signs:
        # The latest wins: a heartbeat replayed late says when its process was last alive.
        values["heartbeat"] = _kept(RUNS.c.heartbeat, max(signs))
        # Delivered by the run's own process, a heartbeat proves it alive: a run marked
        # lost while the store could not hear from it (a partition) runs again.
        process = this_process()
        revived = and_(
            RUNS.c.status == "lost", RUNS.c.host == process.host, RUNS.c.pid == process.pid
        )
        values["status"] = case((revived, "running"), else_=RUNS.c.status)
    if values:
        connection.execute(update(RUNS).where(run).values(values))


def _kept(column: Column[datetime], time: datetime | None, *, earliest: bool = False) -> Any:
    """`time` where the column is empty or `time` is later (earlier, with `earliest`) than
    what it holds; else what it holds."""
    value = literal(time, UTCDateTime())
    beaten = column > value if earliest else column < value
    return case((or_(column.is_(None), beaten), value), else_=column)


@contextmanager
def _unavailable_on_failure(engine: Engine) -> Iterator[None]:
    """Turns connection-level failures into StoreUnavailable and drops pooled connections.

    A COPY runs on the raw psycopg connection, outside SQLAlchemy's error handling, so its
    errors arrive unwrapped and SQLAlchemy never learns that the connection died.
    """
    try:
        yield
    except Exception as exc:
        if not _connection_level(exc):
            raise
        engine.dispose()
        raise StoreUnavailable(
            f"lost the database at {mask_url(engine.url)} ({summarise(engine.url, exc)}): "
            "retry the write when it is back"
        ) from exc


def _connection_level(exc: BaseException) -> bool:
    orig: BaseException | None = exc
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
    # sqlite3's OperationalError also covers a locked database, which passes. A program
    # limit (an index entry too large) is PostgreSQL refusing these rows for good: retried,
    # it would hold up every batch behind it.
    if isinstance(orig, psycopg.errors.ProgramLimitExceeded):
        return False
    return isinstance(
        orig, psycopg.OperationalError | psycopg.InterfaceError | sqlite3.OperationalError
    )


def _model_label(batch: Batch) -> str:
    labelled: tuple[Sample | HistogramSample | Family, ...] = (
        *batch.samples,
        *batch.histograms,
        *batch.families,
    )
    for s in labelled:
        if "model" in s.labels:
            return s.labels["model"]
    return "unknown"


@functools.cache
def _orm_sample() -> type[Any]:
    """An ORM class for `samples`, mapped on first use: only the naive path needs the ORM."""
    from sqlalchemy.orm import registry

    class SampleRow:
        pass

    registry().map_imperatively(
        SampleRow, SAMPLES, primary_key=[SAMPLES.c.time, SAMPLES.c.series_id]
    )
    return SampleRow


def _now() -> datetime:
    return datetime.now(UTC)
