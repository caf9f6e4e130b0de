"""Samples found by time: each run's sample span on `runs`, and no B-tree by series.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Why: at 262,144 rows a window (64 layers × 256 experts × 16 slots), keeping the
(series_id, time) B-tree took a third of COPY's rate. Readers now find a run's samples by
the time BRIN, within the run's span, joining its series.

The span of each run stored before this revision is computed from its samples. Going
back, the B-tree is rebuilt and the spans are dropped.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from observe.store.schema: a revision must keep creating
# what it created the day it was written, whatever the models become later.
TIME = sa.DateTime(timezone=True)
SERIES_INDEX = "ix_samples_series_id_time"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("first_sample", TIME, nullable=True))
        batch.add_column(sa.Column("last_sample", TIME, nullable=True))
    op.execute(
        "UPDATE runs SET first_sample = (SELECT MIN(samples.time) FROM samples "
        "JOIN series ON series.id = samples.series_id WHERE series.run_id = runs.id), "
        "last_sample = (SELECT MAX(samples.time) FROM samples "
        "JOIN series ON series.id = samples.series_id WHERE series.run_id = runs.id)"
    )
    op.drop_index(SERIES_INDEX, table_name="samples")


def downgrade() -> None:
    op.create_index(SERIES_INDEX, "samples", ["series_id", "time"])
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("last_sample")
        batch.drop_column("first_sample")
