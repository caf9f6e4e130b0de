"""Schema migrations: Alembic, configured here, so no alembic.ini is needed.

The revisions ship inside the package, in `observe/store/migrations/`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError, coerce_resource_to_filename
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from observe.errors import ObserveError
from observe.store.engine import connect, connection_error, mask_url

# Serialises concurrent upgrades on PostgreSQL (ranks of one job starting together): the
# second waits, then finds the schema at head and does nothing.
_ADVISORY_LOCK_KEY = 0x0B5E_0001


# A package resource rather than a path: Alembic finds it wherever observe is installed
# (a wheel, an editable install), and pyproject.toml ships the files that are not Python.
SCRIPT_LOCATION = "observe.store:migrations"


def migrations_dir() -> Path:
    """The folder Alembic reads, resolved from SCRIPT_LOCATION as Alembic resolves it."""
    path = coerce_resource_to_filename(SCRIPT_LOCATION)
    if not (path / "env.py").is_file():
        # Alembic would fail later with an ImportError naming only the file.
        raise ObserveError(
            f"observe's database migrations are missing: expected {path / 'env.py'} inside "
            "the installed package. Reinstall observe (pip install --force-reinstall "
            "moe-observe, or pip install -e . in a checkout)"
        )
    return path


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration; with `connection`, commands run on it (env.py needs one)."""
    migrations_dir()  # a broken install is explained here, before Alembic trips over it
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this version of observe knows."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:
        raise ObserveError(f"no migrations found in {migrations_dir()}: reinstall observe")
    return revision


def upgrade(url: str | None, revision: str = "head") -> None:
    engine = connect(url)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def downgrade(url: str | None, revision: str) -> None:
    engine = connect(url)
    try:
        _migrate(engine, revision, down=True)
    finally:
        engine.dispose()


def current(url: str | None) -> str | None:
    """The database's revision; None for a database observe never migrated."""
    engine = connect(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    _migrate(engine, revision, down=False)


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise connection_error(engine.url, exc) from None


def require_head(engine: Engine) -> None:
    """Raises, saying what to run, unless the schema is at this observe's newest revision."""
    found, wanted = current_revision(engine), head()
    if found != wanted:
        raise ObserveError(
            f"the database at {mask_url(engine.url)} is at schema revision "
            f"{found or 'none (empty)'}, this observe needs {wanted}: run `observe db upgrade`"
        )


def _migrate(engine: Engine, revision: str, *, down: bool) -> None:
    try:
        # One transaction: on PostgreSQL and SQLite alike a failed step leaves no trace.
        with (
            engine.connect() as connection,
            _sqlite_foreign_keys_off(connection),
            connection.begin(),
        ):
            if connection.dialect.name == "postgresql":
                # Lifts the engine's statement timeout for this transaction alone: a step
                # may rewrite a whole table (making `samples` a hypertable moves every
                # row), in time that grows with the store, and a migration cut short rolls
                # back to start over at the next run. Other ranks wait on the lock below
                # for as long as it takes.
                connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
                )
            config = alembic_config(connection)
            if down:
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)
            if connection.dialect.name == "sqlite":
                _check_foreign_keys(connection)
    except (CommandError, RevisionError) as exc:
        raise ObserveError(
            f"cannot migrate the database at {mask_url(engine.url)} to {revision!r}: {exc}. "
            "Revisions are 'head', 'base' or an id that `observe db current` and the files in "
            f"{migrations_dir() / 'versions'} show; a database migrated by a newer observe "
            "needs that version"
        ) from None
    except OperationalError as exc:
        raise connection_error(engine.url, exc) from None


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite alters a table by rebuilding it (batch mode), and dropping the old copy of a
    table others refer to (`runs`) fails while foreign keys are enforced. SQLite's own
    recipe: stop enforcing them outside the transaction, where the pragma takes effect,
    and check them before committing."""
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
    if broken is not None:
        raise ObserveError(
            f"a migration left rows of table {broken[0]} pointing at nothing in {broken[2]}: "
            "it was rolled back. Report this with the output of `observe db current`"
        )
