"""Reading the store: runs and one metric's samples."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import DBAPIError

from observe.catalogue import BY_NAME, Kind
from observe.errors import ObserveError
from observe.store.blocks import read_blocks
from observe.store.engine import connection_error
from observe.store.schema import EXPERT_LOAD, RUNS, SAMPLES, SERIES

# PostgreSQL's SQLSTATE for a statement the server cancelled, here for its statement_timeout.
QUERY_CANCELED = "57014"
_SINCE = re.compile(r"\s*(\d+)\s*([smhd])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class RunInfo:
    id: str
    model: str
    status: str
    started: datetime
    ended: datetime | None
    # Where its process ran (None for a run whose rows came before its start) and when it
    # last showed life.
    host: str | None
    pid: int | None
    heartbeat: datetime
    samples: int


@dataclass(frozen=True)
class QueryRow:
    time: datetime
    labels: Mapping[str, str]
    value: float


def list_runs(engine: Engine) -> list[RunInfo]:
    """Every run, newest first, with the number of samples stored for it."""
    statement = select(
        RUNS.c.id,
        RUNS.c.model,
        RUNS.c.status,
        RUNS.c.started,
        RUNS.c.ended,
        RUNS.c.host,
        RUNS.c.pid,
        RUNS.c.heartbeat,
        RUNS.c.samples,
    ).order_by(RUNS.c.started.desc(), RUNS.c.id)
    with schema_checked(engine), engine.connect() as connection:
        return [RunInfo(*row) for row in connection.execute(statement)]


@dataclass(frozen=True)
class RunRecord:
    id: str
    model: str
    status: str
    config: Mapping[str, Any]


def find_run(engine: Engine, run_id: str) -> RunRecord:
    """Run `run_id`, or an error naming the nearest run ids."""
    with schema_checked(engine), engine.connect() as connection:
        row = connection.execute(
            select(RUNS.c.id, RUNS.c.model, RUNS.c.status, RUNS.c.config).where(RUNS.c.id == run_id)
        ).first()
        if row is not None:
            return RunRecord(*row)
        known = list(connection.execute(select(RUNS.c.id)).scalars())
    close = difflib.get_close_matches(run_id, known, n=3, cutoff=0.3)
    hint = f": did you mean {', '.join(close)}?" if close else ": `observe runs` lists them"
    raise ObserveError(f"no run {run_id!r} in the store{hint}")


def expert_totals(engine: Engine, run_id: str) -> dict[int, list[int]]:
    """Tokens per expert over the whole run, per MoE layer."""
    statement = (
        select(EXPERT_LOAD.c.layer, EXPERT_LOAD.c.expert, func.sum(EXPERT_LOAD.c.tokens))
        .where(EXPERT_LOAD.c.run_id == run_id)
        .group_by(EXPERT_LOAD.c.layer, EXPERT_LOAD.c.expert)
    )
    totals: dict[int, list[int]] = {}
    with schema_checked(engine), engine.connect() as connection:
        for layer, expert, tokens in connection.execute(statement):
            row = totals.setdefault(layer, [])
            row.extend([0] * (expert + 1 - len(row)))
            row[expert] = int(tokens)
    return dict(sorted(totals.items()))


def query(
    engine: Engine, metric: str, *, run: str | None = None, since: timedelta | None = None
) -> list[QueryRow]:
    """Samples of the counter or gauge `metric`, oldest first; `since` counts back from now."""
    known = BY_NAME.get(metric)
    if known is not None and known.kind is Kind.HISTOGRAM:
        raise ObserveError(
            f"{metric} is a histogram: query shows counters and gauges; its buckets are in "
            "the histogram_samples table"
        )
    statement = (
        select(SAMPLES.c.time, SERIES.c.id, SAMPLES.c.value)
        .join(SERIES, SERIES.c.id == SAMPLES.c.series_id)
        .where(SERIES.c.name == metric)
    )
    if run is not None:
        # Within the run's span: `samples` is found by time (observe/store/schema.py).
        first, last = (
            select(bound).where(RUNS.c.id == run).scalar_subquery()
            for bound in (RUNS.c.first_sample, RUNS.c.last_sample)
        )
        statement = statement.where(
            SERIES.c.run_id == run, SAMPLES.c.time >= first, SAMPLES.c.time <= last
        )
    start = None if since is None else datetime.now(UTC) - since
    if start is not None:
        statement = statement.where(SAMPLES.c.time >= start)
    with schema_checked(engine), engine.connect() as connection:
        points = [tuple(row) for row in connection.execute(statement)]
        for block in read_blocks(connection, [metric], run_id=run, since=start):
            points += ((block.time, id_, value) for id_, value in block.points())
        labels = _labels(connection, metric, run, {id_ for _, id_, _ in points})
        rows = [QueryRow(time, labels[id_], value) for time, id_, value in sorted(points)]
        if not rows and known is None:
            stored: set[str] = set(connection.execute(select(SERIES.c.name).distinct()).scalars())
            _check_stored(stored, metric)
    return rows


def _labels(
    connection: Connection, metric: str, run: str | None, ids: set[int]
) -> dict[int, Mapping[str, str]]:
    """The labels of the series `ids` of `metric`."""
    if not ids:
        return {}
    statement = select(SERIES.c.id, SERIES.c.labels).where(SERIES.c.name == metric)
    if run is not None:
        statement = statement.where(SERIES.c.run_id == run)
    return {id_: labels for id_, labels in connection.execute(statement) if id_ in ids}


def parse_since(text: str) -> timedelta:
    """'30s', '10m', '2h' or '1d' as a duration."""
    match = _SINCE.fullmatch(text)
    if match is None or int(match[1]) == 0:
        raise ObserveError(
            f"cannot read the duration {text!r}: write a positive whole number and a unit, "
            "s, m, h or d (30s, 10m, 2h, 1d)"
        )
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


@contextmanager
def schema_checked(engine: Engine) -> Iterator[None]:
    # A database nobody migrated fails with "no such table": say what to run instead.
    try:
        yield
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == QUERY_CANCELED:
            raise connection_error(engine.url, exc) from None
        # Imported here: Alembic costs a reader of a healthy store a tenth of a second.
        from observe.store.migrate import require_head

        require_head(engine)
        raise


def _check_stored(stored: set[str], metric: str) -> None:
    # An empty answer for a name nobody ever stored is usually a typo: say so.
    if metric in stored:
        return
    close = difflib.get_close_matches(metric, sorted(stored | set(BY_NAME)), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ObserveError(f"no metric {metric!r} in the store or the catalogue{hint}")
