"""The store's side of alerting: a run's recent points per series, for evaluating rules,
and the `alert_events` table, where evaluators record when alerts fire and resolve."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text

from observe.store.blocks import Block, read_blocks
from observe.store.queries import schema_checked
from observe.store.schema import ALERT_EVENTS, HISTOGRAMS, RUNS, SAMPLES, SERIES
from observe.store.series import labels_text

# Seconds one read or write may take on PostgreSQL; SQLite waits at most its busy timeout.
STATEMENT_TIMEOUT_S = 10


@dataclass(frozen=True)
class SeriesPoints:
    """One stored series' points, oldest first: (unix seconds, value), or for a histogram
    (unix seconds, per-bucket counts) with its bucket `bounds`."""

    name: str
    labels: Mapping[str, str]
    points: list[tuple[float, Any]]
    bounds: tuple[float, ...] = ()


@dataclass(frozen=True)
class AlertEvent:
    time: datetime
    run_id: str | None
    alert: str
    severity: str
    state: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "run": self.run_id,
            "alert": self.alert,
            "severity": self.severity,
            "state": self.state,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
        }


@contextmanager
def bounded(engine: Engine) -> Iterator[Connection]:
    """A transaction whose statements give up after STATEMENT_TIMEOUT_S on PostgreSQL."""
    with schema_checked(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT_S}s'"))
        yield connection


def samples(
    engine: Engine, run_id: str, names: Sequence[str], since: datetime, until: datetime
) -> list[SeriesPoints]:
    """The run's counter and gauge series named `names`, with their points in [since, until]."""
    statement = (
        select(SERIES.c.id, SERIES.c.name, SERIES.c.labels, SAMPLES.c.time, SAMPLES.c.value)
        .join(SERIES, SERIES.c.id == SAMPLES.c.series_id)
        .where(SERIES.c.run_id == run_id, SERIES.c.name.in_(names))
        .where(SAMPLES.c.time >= since, SAMPLES.c.time <= until)
        .order_by(SAMPLES.c.series_id, SAMPLES.c.time)
    )
    found: dict[int, SeriesPoints] = {}
    with bounded(engine) as connection:
        for series_id, name, labels, time, value in connection.execute(statement):
            series = found.setdefault(series_id, SeriesPoints(name, labels, []))
            series.points.append((time.timestamp(), value))
        blocks = read_blocks(connection, names, run_id=run_id, since=since, until=until)
        if blocks:
            _add_blocks(connection, run_id, names, blocks, found)
    return list(found.values())


def _add_blocks(
    connection: Connection,
    run_id: str,
    names: Sequence[str],
    blocks: Sequence[Block],
    found: dict[int, SeriesPoints],
) -> None:
    """Adds the points of `blocks` to the series in `found`, each kept oldest first."""
    series = {
        id_: (name, labels)
        for id_, name, labels in connection.execute(
            select(SERIES.c.id, SERIES.c.name, SERIES.c.labels).where(
                SERIES.c.run_id == run_id, SERIES.c.name.in_(names)
            )
        )
    }
    for block in blocks:
        seconds = block.time.timestamp()
        for id_, value in block.points():
            points = found.setdefault(id_, SeriesPoints(*series[id_], [])).points
            points.append((seconds, value))
    for each in found.values():
        each.points.sort(key=lambda point: point[0])


def histograms(
    engine: Engine, run_id: str, name: str, since: datetime, until: datetime
) -> list[SeriesPoints]:
    """The run's histogram series `name`, with per-bucket counts in [since, until]."""
    statement = (
        select(
            SERIES.c.id,
            SERIES.c.labels,
            HISTOGRAMS.c.time,
            HISTOGRAMS.c.bounds,
            HISTOGRAMS.c.bucket_counts,
        )
        .join(SERIES, SERIES.c.id == HISTOGRAMS.c.series_id)
        .where(SERIES.c.run_id == run_id, SERIES.c.name == name)
        .where(HISTOGRAMS.c.time >= since, HISTOGRAMS.c.time <= until)
        .order_by(HISTOGRAMS.c.series_id, HISTOGRAMS.c.time)
    )
    found: dict[int, tuple[Mapping[str, str], list[tuple[float, Any]]]] = {}
    newest_bounds: dict[int, tuple[float, ...]] = {}
    with bounded(engine) as connection:
        for series_id, labels, time, bounds, counts in connection.execute(statement):
            found.setdefault(series_id, (labels, []))[1].append(
                (time.timestamp(), [float(c) for c in counts])
            )
            # A change of buckets is a reset, which the figures handle: the newest bounds hold.
            newest_bounds[series_id] = tuple(float(b) for b in bounds)
    return [
        SeriesPoints(name, labels, points, newest_bounds[series_id])
        for series_id, (labels, points) in found.items()
    ]


def last_sample_time(engine: Engine, run_id: str) -> datetime | None:
    """When the run's newest counter or gauge sample was taken."""
    with bounded(engine) as connection:
        return connection.execute(select(RUNS.c.last_sample).where(RUNS.c.id == run_id)).scalar()


def latest_run(engine: Engine) -> str | None:
    """The id of the run started last, or None in an empty store."""
    with bounded(engine) as connection:
        return connection.execute(
            select(RUNS.c.id).order_by(RUNS.c.started.desc(), RUNS.c.id.desc()).limit(1)
        ).scalar()


def record_events(engine: Engine, events: Iterable[AlertEvent]) -> None:
    rows = [
        {
            "time": e.time,
            "run_id": e.run_id,
            "alert": e.alert,
            "severity": e.severity,
            "state": e.state,
            "labels": dict(e.labels),
            "annotations": dict(e.annotations),
        }
        for e in events
    ]
    if rows:
        with bounded(engine) as connection:
            connection.execute(insert(ALERT_EVENTS), rows)


def alert_events(
    engine: Engine, *, run_id: str | None = None, since: datetime | None = None
) -> list[AlertEvent]:
    """Recorded state changes, oldest first: all of them, one run's, or those since a time."""
    statement = select(
        ALERT_EVENTS.c.time,
        ALERT_EVENTS.c.run_id,
        ALERT_EVENTS.c.alert,
        ALERT_EVENTS.c.severity,
        ALERT_EVENTS.c.state,
        ALERT_EVENTS.c.labels,
        ALERT_EVENTS.c.annotations,
    ).order_by(ALERT_EVENTS.c.time, ALERT_EVENTS.c.id)
    if run_id is not None:
        statement = statement.where(ALERT_EVENTS.c.run_id == run_id)
    if since is not None:
        statement = statement.where(ALERT_EVENTS.c.time >= since)
    with bounded(engine) as connection:
        return [AlertEvent(*row) for row in connection.execute(statement)]


def firing_since(engine: Engine, run_id: str) -> dict[tuple[str, str], datetime]:
    """Per (alert, labels key), when the run's alerts still firing began: those whose last
    recorded event is `firing`."""
    last: dict[tuple[str, str], AlertEvent] = {}
    for event in alert_events(engine, run_id=run_id):
        last[(event.alert, labels_text(event.labels))] = event
    return {key: e.time for key, e in last.items() if e.state == "firing"}
