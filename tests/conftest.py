"""Shared fixtures: PostgreSQL databases for the store's tests, a real Prometheus; markers.

`pg_url` is a fresh database on the shared server (OBSERVE_TEST_PG_URL, by default the
local trust-auth PostgreSQL), one per test module; `stallable_pg` puts it behind a proxy
that a test can stall (a partition). Tests that stop a server or need a password use
`throwaway_pg`, a cluster of their own in a temporary directory.

Tests are marked by what they use (pyproject.toml lists the markers): the PostgreSQL
fixtures give `postgres`, the `prometheus` fixture gives `prometheus`, and a module named
`*_hf.py` (Hugging Face models) gives `hf`. `slow` is written on the test itself.
"""

from __future__ import annotations

import functools
import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import torch
from certificates import TlsFiles, make_tls_files
from pg_cluster import ClusterUnavailable, PgCluster, throwaway_cluster
from prometheus_server import StartPrometheus, run_prometheus
from sqlalchemy.engine import make_url
from stall_proxy import StallProxy

from observe.store.records import Family
from observe.store.writer import Store

PG_SERVER_URL = os.environ.get(
    "OBSERVE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

# Fixtures whose use marks a test; pytest's closure of a test's fixtures includes those
# it uses through others (pg_url through pg_server).
MARKING_FIXTURES = {"pg_server": "postgres", "throwaway_pg": "postgres", "prometheus": "prometheus"}
# Both store engines, for a fixture that takes pg_url through request.getfixturevalue,
# which pytest cannot see when it collects: the PostgreSQL parameter carries the mark.
ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

# Every point the PostgreSQL store holds for run :run (series_id, time, value): rows of
# `samples` and the values of `sample_blocks` alike, for tests that count what arrived.
RUN_POINTS = (
    "SELECT x.series_id, x.time, x.value FROM samples AS x "
    "JOIN series AS s ON s.id = x.series_id WHERE s.run_id = :run "
    "UNION ALL SELECT u.series_id, b.time, u.value FROM sample_blocks AS b, "
    "unnest(b.series_ids, b.series_values) AS u(series_id, value) WHERE b.run_id = :run"
)


def label_sets(family: Family) -> list[dict[str, str]]:
    """Every series' labels of `family`, in the order of its values: the store's definition,
    spelled out the plain way."""
    names = [name for axis_names, _ in family.axes for name in axis_names]
    return [
        {**family.labels, **dict(zip(names, (v for key in position for v in key), strict=True))}
        for position in itertools.product(*(keys for _, keys in family.axes))
    ]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in MARKING_FIXTURES:
                item.add_marker(MARKING_FIXTURES[fixture])
        if item.path.stem.endswith("_hf"):
            item.add_marker("hf")


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as psycopg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The shared server's URL. Its absence fails the tests rather than skipping them: the
    store's PostgreSQL path is the production one, and CI always has the server."""
    try:
        psycopg.connect(libpq_url(PG_SERVER_URL), connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"no PostgreSQL at {PG_SERVER_URL} (set OBSERVE_TEST_PG_URL): {exc}")
    return PG_SERVER_URL


@pytest.fixture(scope="module")
def pg_url(pg_server: str) -> Iterator[str]:
    """A new, empty database on the shared server, dropped after the module."""
    name = f"observe_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(pg_server), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(libpq_url(pg_server), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class ProxiedPg:
    """A database with a StallProxy in front: `url` goes through it, `direct_url` not."""

    proxy: StallProxy
    url: str
    direct_url: str


@pytest.fixture
def stallable_pg(pg_url: str) -> Iterator[ProxiedPg]:
    """The module's `pg_url` database behind a proxy of the test's own, forwarding."""
    direct = make_url(pg_url)
    with StallProxy((direct.host or "127.0.0.1", direct.port or 5432)) as proxy:
        url = direct.set(host="127.0.0.1", port=proxy.port)
        yield ProxiedPg(proxy, url.render_as_string(hide_password=False), pg_url)


@pytest.fixture(scope="session")
def throwaway_pg() -> Iterator[PgCluster]:
    """A running cluster of one's own on a free port; a test that stops it starts it again."""
    try:
        with throwaway_cluster() as cluster:
            yield cluster
    except ClusterUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """For modules of tiny models: a second intra-op thread only adds synchronisation,
    which on a busy 2-core machine made them several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def prometheus(tmp_path: Path) -> StartPrometheus:
    """Starts a real Prometheus scraping the given targets, its files under tmp_path."""
    return functools.partial(run_prometheus, workdir=tmp_path)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA, the server and client certificates it signed, and their keys."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=ENGINES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store on each engine: a SQLite file, and a database of the shared PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def isolated_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Each module's runs go to its own SQLite store and spool, and a free metrics port."""
    where = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OBSERVE_DB_URL", f"sqlite:///{where / 'observe.db'}")
        mp.setenv("OBSERVE_SPOOL_DIR", str(where / "spool"))
        mp.setenv("OBSERVE_PROMETHEUS_PORT", "0")
        yield where


@pytest.fixture
def copy_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The COPY statements psycopg runs during the test, in order; each still runs."""
    statements: list[str] = []
    original = psycopg.Cursor.copy

    def spy(self: psycopg.Cursor[Any], statement: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(statement))
        return original(self, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", spy)
    return statements
