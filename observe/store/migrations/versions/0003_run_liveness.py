"""Run liveness: each run's host, pid and latest heartbeat, and the status `lost`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

A run stored before this revision gets its end (or, still running, its start) as its
heartbeat and no host or pid: whether it is lost is then told by the heartbeat alone.
Going back, a lost run becomes `failed`, ended at its last heartbeat: the older schema has
no word for a run whose process vanished, and `running` would be a lie.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from observe.store.schema: a revision must keep creating
# what it created the day it was written, whatever the models become later.
TIME = sa.DateTime(timezone=True)
STATUSES = "status IN ('running', 'finished', 'failed', 'lost')"
STATUSES_BEFORE = "status IN ('running', 'finished', 'failed')"
# 0001 named the constraint twice over (the naming convention prefixed the full name it
# was given); the new one takes the name observe/store/schema.py gives it.
CHECK_BEFORE = "ck_runs_ck_runs_status"
CHECK = "ck_runs_status"


def upgrade() -> None:
    # Batch mode: on SQLite a new CHECK constraint, and NOT NULL, mean rebuilding the table.
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("host", sa.Text(), nullable=True))
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("heartbeat", TIME, nullable=True))
    op.execute("UPDATE runs SET heartbeat = COALESCE(ended, started)")
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("heartbeat", existing_type=TIME, nullable=False)
        batch.drop_constraint(op.f(CHECK_BEFORE), type_="check")
        batch.create_check_constraint(op.f(CHECK), sa.text(STATUSES))


def downgrade() -> None:
    op.execute("UPDATE runs SET status = 'failed', ended = heartbeat WHERE status = 'lost'")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f(CHECK), type_="check")
        batch.create_check_constraint(op.f(CHECK_BEFORE), sa.text(STATUSES_BEFORE))
        batch.drop_column("heartbeat")
        batch.drop_column("pid")
        batch.drop_column("host")
