"""Alembic environment for observe's store.

observe runs Alembic from code (observe/store/migrate.py) and hands it an open connection
inside a transaction; there is no alembic.ini and no offline (--sql) mode.
"""

from alembic import context

from observe.errors import ObserveError
from observe.store.schema import METADATA

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise ObserveError(
        "observe's migrations run through observe: use `observe db upgrade` or "
        "observe.store.migrate, which pass Alembic a connection"
    )

context.configure(
    connection=connection,
    target_metadata=METADATA,
    # SQLite cannot ALTER most things: later revisions rebuild tables in batch mode.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
