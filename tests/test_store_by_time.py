"""Samples found by time: each run's row keeps the span of its samples, which bounds every
per-run read, in one update per batch; a family's first window creates its series in bulk,
labels verbatim."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from test_hostile_labels import HOSTILE

from observe.store import alerting
from observe.store.queries import list_runs, query
from observe.store.records import Batch, Family, Sample
from observe.store.schema import RUNS
from observe.store.writer import Store

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
METRIC = "observe_moe_routing_entropy"


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def batch(run: str, seconds: int, value: float, **kwargs: Any) -> Batch:
    return Batch(run, (Sample(at(seconds), METRIC, {"run": run}, value),), **kwargs)


def span(store: Store, run: str) -> tuple[datetime | None, datetime | None]:
    with store.engine.connect() as connection:
        row = connection.execute(
            sa.select(RUNS.c.first_sample, RUNS.c.last_sample).where(RUNS.c.id == run)
        ).one()
    return row[0], row[1]


def test_a_run_keeps_the_span_of_its_samples_and_reads_within_it(store: Store) -> None:
    store.start_run("a", "m", {})
    store.start_run("idle", "m", {})
    assert span(store, "a") == (None, None)
    store.write(batch("a", 20, 2.0))
    # Delivered late from the spool: older than what the run already holds.
    store.write(batch("a", 10, 1.0))
    store.write(batch("a", 30, 3.0))
    # Another run at the same times, in the same blocks: never read as run a's.
    store.write(batch("b", 10, 10.0))
    store.write(batch("b", 40, 40.0))
    assert span(store, "a") == (at(10), at(30))
    assert span(store, "idle") == (None, None)
    # The first and last samples are inside the bounds, not cut off by them.
    assert [r.value for r in query(store.engine, METRIC, run="a")] == [1.0, 2.0, 3.0]
    assert [r.value for r in query(store.engine, METRIC, run="b")] == [10.0, 40.0]
    assert query(store.engine, METRIC, run="idle") == []
    assert alerting.last_sample_time(store.engine, "a") == at(30)
    assert alerting.last_sample_time(store.engine, "idle") is None
    counts = {r.id: r.samples for r in list_runs(store.engine)}
    assert counts == {"a": 3, "b": 2, "idle": 0}


@pytest.fixture
def run_updates(store: Store) -> Iterator[list[str]]:
    """The UPDATE statements of `runs` the store's engine runs during the test."""
    statements: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE RUNS"):
            statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", spy)
    yield statements
    sa.event.remove(store.engine, "before_cursor_execute", spy)


def test_a_batch_updates_its_run_once(store: Store, run_updates: list[str]) -> None:
    store.start_run("once", "m", {})
    run_updates.clear()
    store.write(batch("once", 1, 1.0, heartbeat=at(1)), delivery_id="e" * 32)
    assert len(run_updates) == 1
    [run] = [r for r in list_runs(store.engine) if r.id == "once"]
    assert run.samples == 1
    assert span(store, "once") == (at(1), at(1))
    # A heartbeat older than the run's own does not move it back; the count still adds.
    store.write(batch("once", 2, 2.0, heartbeat=T0 - timedelta(days=1)))
    with store.engine.connect() as connection:
        heartbeat = connection.execute(
            sa.select(RUNS.c.heartbeat).where(RUNS.c.id == "once")
        ).scalar_one()
    assert heartbeat > T0
    assert len(run_updates) == 2


def family(run: str, time: datetime, labels: dict[str, str], size: int) -> Family:
    return Family.grid(
        time,
        "observe_moe_slot_tokens",
        labels,
        {"layer": range(2), "expert": range(size // 2)},
        np.arange(size, dtype=np.float64).reshape(2, size // 2),
    )


def test_a_large_family_s_series_are_created_at_once_with_labels_verbatim(store: Store) -> None:
    """Past a thousand new series PostgreSQL creates them through a staging COPY, whose text
    format escapes tabs, newlines and backslashes: every hostile value comes back exact."""
    size = 2_400
    labels = {"run": "big", **{f"h{i}": value for i, value in enumerate(HOSTILE)}}
    store.write(Batch("big", families=(family("big", at(1), labels, size),)))
    rows = query(store.engine, "observe_moe_slot_tokens", run="big")
    assert len(rows) == size
    assert [r.value for r in rows] == [float(v) for v in range(size)]
    first = dict(rows[0].labels)
    assert first == {**labels, "layer": "0", "expert": "0"}
    # A store that never saw the family finds the same series rather than making more.
    again = Store(store.engine)
    again.write(Batch("big", families=(family("big", at(2), labels, size),)))
    with store.engine.connect() as connection:
        series = connection.execute(
            sa.text("SELECT count(*) FROM series WHERE run_id = 'big'")
        ).scalar_one()
    assert series == size
    assert len(query(store.engine, "observe_moe_slot_tokens", run="big")) == 2 * size
