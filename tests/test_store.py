"""The SQL store on SQLite and PostgreSQL: URLs, connection errors, writes, reads."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pg_cluster import PgCluster
from prometheus_server import free_port

from observe.errors import ObserveError
from observe.store.engine import DEFAULT_SQLITE_PATH, connect, mask_url, resolve_url
from observe.store.liveness import this_process
from observe.store.queries import list_runs, parse_since, query
from observe.store.records import Batch, DriftResult, ExpertLoads, HistogramSample, RunEnd, Sample
from observe.store.schema import EXPERT_LOAD, HISTOGRAMS, RUNS, SERIES
from observe.store.writer import Store, StoreUnavailable

SECRET = "pa55-w0rd"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TOKENS = "observe_moe_expert_tokens"
LATENCY = "observe_inference_latency"


def labels(run: str, layer: int, expert: int) -> dict[str, str]:
    return {"run": run, "model": "tiny", "layer": str(layer), "expert": str(expert)}


def token_batch(run: str, start: int, n: int) -> Batch:
    """`n` samples over 4 series, values start, start+1, ... one second apart."""
    return Batch(
        run,
        samples=tuple(
            Sample(
                T0 + timedelta(seconds=start + i),
                TOKENS,
                labels(run, i % 2, i % 4 // 2),
                float(start + i),
            )
            for i in range(n)
        ),
    )


RUN_SERIES = "series_id IN (SELECT id FROM series WHERE run_id = '{run}')"


def count(store: Store, table: str, where: str = "true") -> int:
    with store.engine.connect() as connection:
        return int(
            connection.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar_one()
        )


# -- URLs and connection errors ------------------------------------------------------------


def test_no_url_is_the_sqlite_file_under_dot_observe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_url(None) == f"sqlite:///{tmp_path / DEFAULT_SQLITE_PATH}"
    assert (tmp_path / ".observe").is_dir()


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_postgres_urls_get_the_psycopg_driver(url: str, resolved: str) -> None:
    assert resolve_url(url) == resolved


# Passwords as people write them, escaped or not: none may reach a message.
HOSTILE_SECRETS = ["s3cr/et", "p@ss@w0rd", "pa:ss", "p%40ss%2Fword", "q?x=1#frag"]


@pytest.mark.parametrize("secret", [SECRET, *HOSTILE_SECRETS])
@pytest.mark.parametrize(
    "template",
    [
        "postgresql+psycopg2://u:{}@h/db",
        "postgresql+pg8000://admin:{}@host/db",
        "mysql://u:{}@h/db",
        "postgresql://u:{}@127.0.0.1:notaport/x",
        "nonsense://u:{}@",
    ],
)
def test_unsupported_urls_are_explained_without_the_password(template: str, secret: str) -> None:
    with pytest.raises(ObserveError) as error:
        resolve_url(template.format(secret))
    message = str(error.value)
    assert secret not in message and "***" in message


def test_a_port_that_is_no_number_is_explained() -> None:
    with pytest.raises(ObserveError, match=r"cannot read the database URL .*notaport"):
        resolve_url(f"postgresql://u:{SECRET}@127.0.0.1:notaport/x")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"postgresql://u:{SECRET}@h:5/db", "postgresql://u:***@h:5/db"),
        (f"postgresql://u:{SECRET}@x@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:s3cr/et@h/db", "postgresql://u:***@h/db"),
        (
            f"postgresql://u@h/db?password={SECRET}&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def connect_error(url: str) -> str:
    with pytest.raises(ObserveError) as error:
        connect(url)
    message = str(error.value)
    assert SECRET not in message and PgCluster.PASSWORD not in message
    assert "***" in message
    return message


def test_unreachable_port_is_explained() -> None:
    message = connect_error(f"postgresql://postgres:{SECRET}@127.0.0.1:{free_port()}/test")
    assert "cannot reach" in message and "OBSERVE_DB_URL or --db-url" in message


def test_unknown_database_is_explained(pg_server: str) -> None:
    url = sa.make_url(pg_server).set(password=SECRET, database="observe_no_such_db")
    message = connect_error(url.render_as_string(hide_password=False))
    assert "'observe_no_such_db' does not exist" in message and "createdb" in message


def test_wrong_password_is_explained(throwaway_pg: PgCluster) -> None:
    message = connect_error(throwaway_pg.url(password=SECRET))
    assert "refused the password of user 'postgres'" in message
    assert "OBSERVE_DB_URL or --db-url" in message
    connect(throwaway_pg.url()).dispose()  # the right password works


def test_unwritable_sqlite_path_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ObserveError, match="cannot open the SQLite database"):
        connect(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() > 0
    engine.dispose()


# -- records ---------------------------------------------------------------------------------


def test_batches_round_trip_through_json() -> None:
    batch = Batch(
        "run-1",
        samples=(Sample(T0, TOKENS, {"layer": "0", "note": "é ✓"}, math.inf),),
        histograms=(HistogramSample(T0, LATENCY, {}, 3, 0.5, (0.1, 1.0), (1, 2, 0)),),
        expert_loads=(ExpertLoads(7, [1], [3], [120]),),
    )
    assert Batch.from_json(batch.to_json()) == batch
    assert len(batch) == 3


def test_naive_times_are_refused() -> None:
    with pytest.raises(ObserveError, match="no time zone"):
        Sample(datetime(2026, 1, 1), TOKENS, {}, 1.0)


def test_a_corrupt_batch_is_explained() -> None:
    with pytest.raises(ObserveError, match="not a serialised batch"):
        Batch.from_json('{"run_id": "r"}')


# -- writing and reading ---------------------------------------------------------------------


def test_what_is_written_reads_back(store: Store) -> None:
    store.start_run("rt", "tiny", {"lr": 0.002, "layers": [1, 2]})
    store.write(token_batch("rt", 0, 60))
    store.write(token_batch("rt", 60, 40))
    store.write(
        Batch(
            "rt",
            histograms=(
                HistogramSample(
                    T0, LATENCY, {"run": "rt", "model": "tiny"}, 4, 1.25, (0.1, 1.0), (1, 3, 0)
                ),
            ),
            expert_loads=(ExpertLoads.of_layers(5, {0: [0, 10, 20, 30], 1: [0, 10, 20, 30]}),),
        )
    )
    store.write(Batch("rt", end=ended_here("finished")))

    [run] = [r for r in list_runs(store.engine) if r.id == "rt"]
    assert (run.model, run.status, run.samples) == ("tiny", "finished", 100)
    assert run.ended is not None and run.ended >= run.started

    rows = query(store.engine, TOKENS, run="rt")
    assert [r.value for r in rows] == [float(i) for i in range(100)]
    assert rows[5].time == T0 + timedelta(seconds=5) and rows[5].time.tzinfo is not None
    assert dict(rows[5].labels) == labels("rt", 1, 0)
    assert count(store, "series", f"name = '{TOKENS}'") == 4

    H, E = HISTOGRAMS.c, EXPERT_LOAD.c
    with store.engine.connect() as connection:
        [histogram] = connection.execute(
            sa.select(H.count, H.sum, H.bounds, H.bucket_counts)
            .join(SERIES, SERIES.c.id == H.series_id)
            .where(SERIES.c.run_id == "rt")
        ).all()
        loads = connection.execute(
            sa.select(E.layer, E.expert, E.tokens)
            .where(E.run_id == "rt")
            .order_by(E.layer, E.expert)
        ).all()
    assert tuple(histogram) == (4, 1.25, [0.1, 1.0], [1, 3, 0])
    assert [tuple(r) for r in loads] == [(lay, e, 10 * e) for lay in (0, 1) for e in range(4)]


def test_a_run_nobody_started_is_created_by_its_first_write(store: Store) -> None:
    store.write(token_batch("unstarted", 0, 3))
    [run] = [r for r in list_runs(store.engine) if r.id == "unstarted"]
    assert (run.model, run.status, run.samples) == ("tiny", "running", 3)


def test_a_failed_batch_leaves_nothing_behind(store: Store) -> None:
    store.start_run("atomic", "tiny", {})
    before = count(store, "series")
    new_series = Sample(T0, "observe_moe_dead_experts", {"run": "atomic", "layer": "9"}, 1.0)
    # Drift results come after the samples: samples and the new series are already sent
    # when its details fail to serialise.
    unwritable = DriftResult(T0, 0, "m", 0.1, None, False, 1, 1, None, {"x": object()})
    broken = Batch("atomic", samples=(new_series,), drift_results=(unwritable,))
    with pytest.raises(Exception):  # noqa: B017 (whatever the driver raises)
        store.write(broken)
    assert count(store, "samples", RUN_SERIES.format(run="atomic")) == 0
    assert count(store, "series") == before
    store.write(Batch("atomic", samples=(new_series,)))  # the cache holds no rolled-back id
    assert count(store, "samples", RUN_SERIES.format(run="atomic")) == 1


def test_a_delivery_id_is_written_once(store: Store) -> None:
    batch = token_batch("once", 0, 5)
    store.write(batch, delivery_id="a" * 32)
    store.write(batch, delivery_id="a" * 32)
    assert count(store, "samples", RUN_SERIES.format(run="once")) == 5


def test_query_filters_by_run_and_time(store: Store) -> None:
    now = datetime.now(UTC)
    old, new = now - timedelta(hours=3), now - timedelta(minutes=1)
    for run in ("q1", "q2"):
        store.write(
            Batch(
                run,
                samples=(
                    Sample(old, TOKENS, labels(run, 0, 0), 1.0),
                    Sample(new, TOKENS, labels(run, 0, 0), 2.0),
                ),
            )
        )
    assert [r.value for r in query(store.engine, TOKENS, run="q1")] == [1.0, 2.0]
    recent = query(store.engine, TOKENS, since=timedelta(hours=1))
    assert sorted((r.labels["run"], r.value) for r in recent) == [("q1", 2.0), ("q2", 2.0)]
    assert query(store.engine, "observe_train_loss") == []  # in the catalogue, not stored


def test_query_explains_unknown_and_histogram_metrics(store: Store) -> None:
    store.write(token_batch("names", 0, 1))
    with pytest.raises(ObserveError, match="did you mean observe_moe_expert_tokens"):
        query(store.engine, "observe_moe_expert_tokenz")
    with pytest.raises(ObserveError, match="is a histogram"):
        query(store.engine, LATENCY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
    ],
)
def test_parse_since(text: str, expected: timedelta) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["", "10", "m", "1.5h", "-2h", "0m", "3w"])
def test_parse_since_explains_bad_input(text: str) -> None:
    with pytest.raises(ObserveError, match="30s, 10m, 2h, 1d"):
        parse_since(text)


def test_a_resumed_run_runs_again_and_an_earlier_end_replayed_late_leaves_it(
    store: Store,
) -> None:
    store.start_run("again", "tiny", {"a": 1})
    first_end = ended_here("failed")
    store.write(Batch("again", end=first_end))
    store.start_run("again", "tiny", {"a": 2})  # a resumed run...
    with store.engine.begin() as connection:  # ...by another process
        connection.execute(sa.update(RUNS).where(RUNS.c.id == "again").values(pid=0))
    [run] = [r for r in list_runs(store.engine) if r.id == "again"]
    assert (run.status, run.ended) == ("running", None)
    # The first process's end, delivered again (another delivery id) after the resume.
    store.write(Batch("again", end=first_end), delivery_id="e" * 32)
    [run] = [r for r in list_runs(store.engine) if r.id == "again"]
    assert (run.status, run.ended) == ("running", None)
    with pytest.raises(ObserveError, match="'finished' or 'failed'"):
        ended_here("done")


def ended_here(status: str) -> RunEnd:
    """The end of a run of this process, now."""
    process = this_process()
    return RunEnd(status, datetime.now(UTC), process.host, process.pid)


def test_sqlite_writers_wait_for_each_other_instead_of_failing(tmp_path: Path) -> None:
    """A transaction that reads, then writes, while another connection writes in between:
    the second writer waits for the lock; neither fails with "database is locked"."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first, second = Store.open(url), Store.open(url)
    errors: list[BaseException] = []

    def write_in_between() -> None:
        try:
            second.start_run("b", "m", {})
        except BaseException as exc:
            errors.append(exc)

    with first.engine.begin() as connection:
        connection.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
        writer = threading.Thread(target=write_in_between)
        writer.start()
        writer.join(0.3)  # gives it the chance to write first, were it not held off
        connection.execute(
            sa.text("INSERT INTO runs (id, model, config, started, heartbeat, status) "
                    "VALUES ('a', 'm', '{}', '2026-11-29 00:00:00', '2026-11-29 00:00:00', "
                    "'running')")
        )  # fmt: skip
    writer.join(30)
    first.close()
    second.close()
    assert not errors, errors
    assert sorted(r.id for r in list_runs(connect(url))) == ["a", "b"]


def test_reading_an_unmigrated_database_asks_for_an_upgrade(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ObserveError, match="run `observe db upgrade`"):
        list_runs(engine)
    engine.dispose()


def test_opening_without_upgrade_asks_for_one(tmp_path: Path) -> None:
    with pytest.raises(ObserveError, match="run `observe db upgrade`"):
        Store.open(f"sqlite:///{tmp_path / 'empty.db'}", upgrade=False)
    Store.open(f"sqlite:///{tmp_path / 'empty.db'}").close()
    Store.open(f"sqlite:///{tmp_path / 'empty.db'}", upgrade=False).close()


def test_postgres_samples_go_through_copy(pg_url: str, copy_statements: list[str]) -> None:
    store = Store.open(pg_url)
    batch = token_batch("copy", 0, 50)
    store.write(Batch("copy", batch.samples, expert_loads=(ExpertLoads(1, [0], [0], [5]),)))
    tables = [s.split(" (")[0] for s in copy_statements]
    assert tables == ["COPY samples", "COPY staged_expert_load"]
    assert count(store, "samples", RUN_SERIES.format(run="copy")) == 50
    store.close()


def test_a_lost_server_is_store_unavailable(throwaway_pg: PgCluster) -> None:
    store = Store.open(throwaway_pg.url())
    store.write(token_batch("outage", 0, 10))
    throwaway_pg.stop()
    try:
        with pytest.raises(StoreUnavailable) as error:
            store.write(token_batch("outage", 10, 10))
        assert PgCluster.PASSWORD not in str(error.value) and "***" in str(error.value)
    finally:
        throwaway_pg.start()
    store.write(token_batch("outage", 10, 10))
    assert [r.value for r in query(store.engine, TOKENS, run="outage")] == list(range(20))
    store.close()
