"""Alembic migrations on SQLite and PostgreSQL, and that they match the models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import ENGINES, label_sets
from sqlalchemy.dialects import postgresql

from observe.errors import ObserveError
from observe.store import migrate
from observe.store.engine import connect
from observe.store.records import Batch, Family, Sample
from observe.store.schema import METADATA, RUNS, SERIES
from observe.store.series import labels_key
from observe.store.writer import Store

TABLES = {
    "runs",
    "series",
    "samples",
    "sample_blocks",
    "histogram_samples",
    "expert_load",
    "drift_results",
    "alert_events",
    "delivered_batches",
    "baselines",
    "baseline_layers",
    "hidden_samples",
    "window_samples",
}


@pytest.fixture(params=ENGINES)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing of observe's in it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url = str(request.getfixturevalue("pg_url"))
    migrate.downgrade(url, "base")
    return url


def tables(url: str) -> set[str]:
    engine = connect(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def schema_diff(url: str, metadata: sa.MetaData) -> list[object]:
    engine = connect(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), metadata))
    finally:
        engine.dispose()


def test_upgrade_from_empty_to_head_and_down_to_base(empty_url: str) -> None:
    assert migrate.current(empty_url) is None
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == migrate.head() == "0008"
    assert tables(empty_url) == TABLES | {"alembic_version"}
    migrate.upgrade(empty_url)  # at head already: nothing to do
    migrate.downgrade(empty_url, "base")
    assert migrate.current(empty_url) is None
    assert tables(empty_url) <= {"alembic_version"}


def test_series_written_before_keys_were_digests_are_found_after(empty_url: str) -> None:
    """0004 turns each series' key into the digest of its text: a series written before it
    takes the samples written after; a downgrade puts the text back."""
    migrate.upgrade(empty_url, "0003")
    labels = {"run": "r", "model": 'ü"\n', "layer": "0"}
    text = json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    engine = connect(empty_url)
    keys = sa.select(SERIES.c.labels_key)
    try:
        t = "2026-11-01 10:00:00+00:00"
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO runs (id, model, config, started, status, heartbeat) "
                    f"VALUES ('r', 'm', '{{}}', '{t}', 'running', '{t}')"
                )
            )
            connection.execute(sa.insert(SERIES).values(name="m", labels=labels, labels_key=text))
            connection.execute(sa.text(f"INSERT INTO samples VALUES ('{t}', 1, 'r', 1.0)"))
        migrate.upgrade(empty_url)
        with engine.connect() as connection:
            assert connection.execute(keys).scalars().all() == [labels_key(labels)]
        store = Store(engine)
        store.write(
            Batch("r", (Sample(datetime.now(UTC), "m", dict(reversed(labels.items())), 1),))
        )
        with engine.connect() as connection:
            assert connection.execute(keys).scalars().all() == [labels_key(labels)]
        migrate.downgrade(empty_url, "0003")
        with engine.connect() as connection:
            assert connection.execute(keys).scalars().all() == [text]
    finally:
        engine.dispose()


def test_models_match_migrations(empty_url: str) -> None:
    """Fails when a model changes without a migration (or the other way round)."""
    migrate.upgrade(empty_url)
    assert schema_diff(empty_url, METADATA) == []
    # The comparison is not blind: a column the migrations lack shows up.
    changed = sa.MetaData()
    for table in METADATA.tables.values():
        table.to_metadata(changed)
    changed.tables["samples"].append_column(sa.Column("extra", sa.Integer()))
    assert [d[0] for d in schema_diff(empty_url, changed)] == ["add_column"]


def test_postgres_time_indexes_are_brin(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    engine = connect(pg_url)
    with engine.connect() as connection:
        brin = connection.execute(
            sa.text("SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%USING brin%'")
        ).scalars()
        assert set(brin) == {"ix_samples_time", "ix_histogram_samples_time"}
        # The block arrays are kept uncompressed: pglz's attempt halved COPY's rate.
        storage = connection.execute(
            sa.text(
                "SELECT attname, attstorage FROM pg_attribute "
                "WHERE attrelid = 'sample_blocks'::regclass AND attname LIKE 'series_%'"
            )
        ).all()
        assert dict(storage) == {"series_ids": "e", "series_values": "e"}
    engine.dispose()


def test_timescale_is_skipped_where_it_is_not_installed(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    initial = ScriptDirectory.from_config(migrate.alembic_config()).get_revision("0001")
    engine = connect(pg_url)
    with engine.connect() as connection:
        available = connection.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        ).first()
        if available is not None:
            pytest.skip("TimescaleDB is installed here: the skip path cannot be exercised")
        assert initial.module.timescale_ready(connection) is False
        extensions = connection.execute(sa.text("SELECT extname FROM pg_extension")).scalars()
        assert "timescaledb" not in set(extensions)
    engine.dispose()


def test_sqlite_never_tries_timescale(tmp_path: Path) -> None:
    initial = ScriptDirectory.from_config(migrate.alembic_config()).get_revision("0001")
    engine = connect(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        assert initial.module.timescale_ready(connection) is False
    engine.dispose()


def test_unknown_revisions_are_explained(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(ObserveError, match=r"cannot migrate .* to 'nope'"):
        migrate.upgrade(url, "nope")
    assert migrate.current(url) is None


def test_missing_migrations_folder_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a broken install looks like to observe: a package without the folder.
    monkeypatch.setattr(migrate, "SCRIPT_LOCATION", "observe.store:no_such_folder")
    with pytest.raises(ObserveError, match=r"migrations are missing.*Reinstall observe"):
        migrate.upgrade(f"sqlite:///{tmp_path / 'x.db'}")


def test_runs_gain_liveness_and_lose_it_again(empty_url: str) -> None:
    """0002 → 0003 → 0002 with runs in the store: nothing refused, nothing left lying."""
    migrate.upgrade(empty_url, "0002")
    engine = connect(empty_url)
    insert = sa.text(
        "INSERT INTO runs (id, model, config, started, ended, status) "
        "VALUES (:id, 'm', '{}', :started, :ended, :status)"
    )
    started, ended = "2026-11-01 10:00:00+00:00", "2026-11-01 11:00:00+00:00"
    with engine.begin() as connection:
        connection.execute(insert, {"id": "on", "started": started, "ended": None,
                                    "status": "running"})  # fmt: skip
        connection.execute(insert, {"id": "done", "started": started, "ended": ended,
                                    "status": "finished"})  # fmt: skip
        # A sample keeps a reference to its run: SQLite's rebuild of `runs` must keep it.
        connection.execute(sa.text("INSERT INTO series VALUES (1, 'm', '{}', '{}')"))
        connection.execute(sa.text(f"INSERT INTO samples VALUES ('{started}', 1, 'on', 1.0)"))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(sa.text("UPDATE runs SET status = 'lost' WHERE id = 'on'"))
    engine.dispose()

    migrate.upgrade(empty_url, "0003")
    engine = connect(empty_url)
    with engine.begin() as connection:
        rows = connection.execute(
            sa.select(RUNS.c.id, RUNS.c.host, RUNS.c.pid, RUNS.c.heartbeat).order_by(RUNS.c.id)
        ).all()
        # A stored run's heartbeat is its end, or, still running, its start.
        assert [tuple(r) for r in rows] == [
            ("done", None, None, datetime(2026, 11, 1, 11, tzinfo=UTC)),
            ("on", None, None, datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ]
        connection.execute(sa.text("UPDATE runs SET status = 'lost' WHERE id = 'on'"))
    engine.dispose()

    migrate.downgrade(empty_url, "0002")
    engine = connect(empty_url)
    with engine.connect() as connection:
        back = connection.execute(sa.text("SELECT id, status, ended FROM runs ORDER BY id")).all()
        samples = connection.execute(sa.text("SELECT count(*) FROM samples")).scalar_one()
    engine.dispose()
    # The older schema has no `lost`: the run failed, ended at its last sign of life.
    assert [(r[0], r[1]) for r in back] == [("done", "finished"), ("on", "failed")]
    assert back[1][2] is not None and samples == 1


def _rows(connection: sa.Connection, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in connection.execute(sa.text(sql))]


SAMPLES_BY_RUN = (
    "SELECT s.run_id, series.name, s.{value} FROM {table} AS s "
    "JOIN series ON series.id = s.series_id ORDER BY s.run_id, series.name, s.{value}"
)


def test_series_take_their_runs_and_give_them_back(empty_url: str) -> None:
    """0004 → 0005 → 0004 with samples, histograms and expert loads: every row keeps its run,
    a series two runs shared is split and merged again, duplicate loads keep one row."""
    migrate.upgrade(empty_url, "0004")
    t = "2026-11-01 10:00:00+00:00"
    statements = [
        *(
            f"INSERT INTO runs (id, model, config, started, status, heartbeat) "
            f"VALUES ('{run}', 'm', '{{}}', '{t}', 'running', '{t}')"
            for run in ("a", "b", "idle")
        ),
        # Ids 1, 2 and 3 in a new table, from the table's own sequence.
        *(
            f"INSERT INTO series (name, labels, labels_key) VALUES ('{name}', '{labels}', "
            f"'{labels}')"
            for name, labels in (("own", '{"run":"a"}'), ("shared", "{}"), ("unused", "{}"))
        ),
        f"INSERT INTO samples VALUES ('{t}', 1, 'a', 1.0)",
        f"INSERT INTO samples VALUES ('{t}', 2, 'a', 2.0)",
        f"INSERT INTO samples VALUES ('{t}', 2, 'b', 3.0)",
        f"INSERT INTO histogram_samples VALUES ('{t}', 2, 'b', 4, 1.5, '[1]', '[3, 4]')",
        # The same figure twice (stored twice), and another expert's.
        "INSERT INTO expert_load VALUES ('a', 5, 0, 0, 7)",
        "INSERT INTO expert_load VALUES ('a', 5, 0, 0, 7)",
        "INSERT INTO expert_load VALUES ('a', 5, 0, 1, 3)",
    ]
    engine = connect(empty_url)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
        before = _rows(connection, SAMPLES_BY_RUN.format(table="samples", value="value"))
        histograms_before = _rows(
            connection, SAMPLES_BY_RUN.format(table="histogram_samples", value="count")
        )
    engine.dispose()

    migrate.upgrade(empty_url, "0005")
    engine = connect(empty_url)
    by_series = (
        "SELECT series.run_id, series.name, s.{value} FROM {table} AS s "
        "JOIN series ON series.id = s.series_id ORDER BY series.run_id, series.name, s.{value}"
    )
    with engine.begin() as connection:
        assert _rows(connection, by_series.format(table="samples", value="value")) == before
        assert _rows(connection, by_series.format(table="histogram_samples", value="count")) == (
            histograms_before
        )
        assert _rows(connection, "SELECT run_id, name FROM series ORDER BY run_id, name") == [
            ("a", "own"), ("a", "shared"), ("b", "shared"),
        ]  # fmt: skip
        assert _rows(connection, "SELECT id, samples FROM runs ORDER BY id") == [
            ("a", 2), ("b", 1), ("idle", 0),
        ]  # fmt: skip
        assert _rows(connection, "SELECT expert, tokens FROM expert_load ORDER BY expert") == [
            (0, 7), (1, 3),
        ]  # fmt: skip
    # The guard: the same figure again is refused.
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO expert_load VALUES ('a', 5, 0, 0, 8)"))
    engine.dispose()

    migrate.downgrade(empty_url, "0004")
    engine = connect(empty_url)
    with engine.begin() as connection:
        assert _rows(connection, SAMPLES_BY_RUN.format(table="samples", value="value")) == before
        assert _rows(connection, "SELECT name FROM series ORDER BY name") == [
            ("own",), ("shared",),
        ]  # fmt: skip
        assert [
            r[:2]
            for r in _rows(
                connection, SAMPLES_BY_RUN.format(table="histogram_samples", value="count")
            )
        ] == [r[:2] for r in histograms_before]
    # The foreign keys are back.
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO samples (time, series_id, run_id, value) "
                f"VALUES ('{t}', 1, 'nobody', 1.0)"
            )
        )
    engine.dispose()


def test_runs_gain_their_sample_spans_and_samples_lose_the_series_index(empty_url: str) -> None:
    """0005 → 0006 → 0005: each run's span is computed from the samples it holds, and the
    (series_id, time) index goes, then comes back."""
    migrate.upgrade(empty_url, "0005")
    t = "2026-11-01 10:00:{:02d}+00:00"
    statements = [
        *(
            f"INSERT INTO runs (id, model, config, started, status, heartbeat) "
            f"VALUES ('{run}', 'm', '{{}}', '{t.format(0)}', 'running', '{t.format(0)}')"
            for run in ("a", "b", "idle")
        ),
        "INSERT INTO series (run_id, name, labels, labels_key) VALUES ('a', 'x', '{}', 'k')",
        "INSERT INTO series (run_id, name, labels, labels_key) VALUES ('b', 'x', '{}', 'k')",
        f"INSERT INTO samples VALUES ('{t.format(30)}', 1, 1.0)",
        f"INSERT INTO samples VALUES ('{t.format(10)}', 1, 2.0)",
        f"INSERT INTO samples VALUES ('{t.format(20)}', 2, 3.0)",
    ]
    engine = connect(empty_url)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    engine.dispose()

    migrate.upgrade(empty_url, "0006")
    engine = connect(empty_url)
    with engine.connect() as connection:
        spans = connection.execute(
            sa.select(RUNS.c.id, RUNS.c.first_sample, RUNS.c.last_sample).order_by(RUNS.c.id)
        ).all()
    assert [tuple(row) for row in spans] == [
        ("a", _at(10), _at(30)), ("b", _at(20), _at(20)), ("idle", None, None),
    ]  # fmt: skip
    assert _sample_indexes(engine) == {"ix_samples_time"}
    engine.dispose()

    migrate.downgrade(empty_url, "0005")
    engine = connect(empty_url)
    assert _sample_indexes(engine) == {"ix_samples_time", "ix_samples_series_id_time"}
    assert "first_sample" not in {c["name"] for c in sa.inspect(engine).get_columns("runs")}
    engine.dispose()


def _at(second: int) -> datetime:
    return datetime(2026, 11, 1, 10, 0, second, tzinfo=UTC)


def _sample_indexes(engine: sa.Engine) -> set[str]:
    return {str(index["name"]) for index in sa.inspect(engine).get_indexes("samples")}


def test_blocks_become_rows_of_samples_going_back(empty_url: str) -> None:
    """0007 → 0006: each sample block's values become rows of `samples`, series by series."""
    migrate.upgrade(empty_url)
    engine = connect(empty_url)
    family = Family.grid(
        _at(5), "observe_x", {"run": "r"}, {"layer": range(2), "expert": range(3)},
        np.arange(6.0).reshape(2, 3),
    )  # fmt: skip
    Store(engine).write(Batch("r", families=(family,)))
    engine.dispose()

    migrate.downgrade(empty_url, "0006")
    engine = connect(empty_url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT samples.time, series.labels, samples.value FROM samples "
                "JOIN series ON series.id = samples.series_id ORDER BY samples.value"
            )
        ).all()
    engine.dispose()
    assert [value for _, _, value in rows] == family.values.tolist()
    assert {_aware(time) for time, _, _ in rows} == {_at(5)}
    labels = [json.loads(ls) if isinstance(ls, str) else ls for _, ls, _ in rows]
    assert labels == label_sets(family)


def _aware(time: datetime | str) -> datetime:
    # SQLite gives back text without a zone, for a UTC time.
    if isinstance(time, str):
        time = datetime.fromisoformat(time)
    return time.replace(tzinfo=UTC) if time.tzinfo is None else time.astimezone(UTC)


def test_thresholds_become_per_window_size_and_back(empty_url: str) -> None:
    """0007 → 0008: a baseline's thresholds, held at its window_rows alone, become that
    size's; going back, each method keeps that size's threshold alone."""
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    layers = sa.table(
        "baseline_layers",
        *(sa.column(name) for name in ("baseline_id", "kind", "layer", "name", "data")),
        sa.column("thresholds", json_type),
    )
    migrate.upgrade(empty_url, "0007")
    engine = connect(empty_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO baselines (id, model, created, active, window_rows) "
                "VALUES (1, 'm', :created, true, 256)"
            ),
            {"created": _at(0)},
        )
        connection.execute(
            sa.insert(layers),
            [
                {
                    "baseline_id": 1,
                    "kind": "hidden_states",
                    "layer": 0,
                    "name": "a",
                    "data": b"",
                    "thresholds": {"classifier": 0.3, "mmd": 0.025},
                },
                {
                    "baseline_id": 1,
                    "kind": "experts",
                    "layer": 0,
                    "name": "r",
                    "data": b"",
                    "thresholds": {},
                },
            ],
        )
    engine.dispose()

    def thresholds() -> dict[str, object]:
        engine = connect(empty_url)
        with engine.connect() as connection:
            rows = connection.execute(sa.select(layers.c.kind, layers.c.thresholds)).all()
        engine.dispose()
        return dict(rows)  # type: ignore[arg-type]

    migrate.upgrade(empty_url)
    assert thresholds() == {
        "hidden_states": {"classifier": {"256": 0.3}, "mmd": {"256": 0.025}},
        "experts": {},
    }
    migrate.downgrade(empty_url, "0007")
    assert thresholds() == {"hidden_states": {"classifier": 0.3, "mmd": 0.025}, "experts": {}}
