"""A family's values at one time as one row: `sample_blocks`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

Why: a window of 64 layers × 256 experts × 16 slots is 262,144 samples. As rows of
`samples`, the server's cost per tuple (and per BRIN entry) held a raw COPY to about a
million samples/s; as one row holding the series ids and values as arrays, a raw COPY
writes 4-6 million (benchmarks/store_ingest.py). Nothing moves on the way up: earlier
families stay rows of `samples`, which readers still read. Going back, each block becomes
rows of `samples` again.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from observe.store.schema: a revision must keep creating
# what it created the day it was written, whatever the models become later.
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Arrays on PostgreSQL; on SQLite, which has none, their little-endian bytes.
    ids: sa.types.TypeEngine[Any] = postgresql.ARRAY(sa.Integer()) if postgres else sa.LargeBinary()
    values: sa.types.TypeEngine[Any] = (
        postgresql.ARRAY(sa.Double()) if postgres else sa.LargeBinary()
    )
    op.create_table(
        "sample_blocks",
        sa.Column("time", TIME, nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("series_ids", ids, nullable=False),
        sa.Column("series_values", values, nullable=False),
    )
    op.create_index(
        "ix_sample_blocks_run_id_name_time", "sample_blocks", ["run_id", "name", "time"]
    )
    if postgres:
        # Out of line but never compressed: figures and series ids barely compress, and
        # pglz's attempt halved COPY's rate (2.7 against 4–6 M samples/s).
        op.execute(
            "ALTER TABLE sample_blocks ALTER COLUMN series_ids SET STORAGE EXTERNAL, "
            "ALTER COLUMN series_values SET STORAGE EXTERNAL"
        )


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        op.execute(
            "INSERT INTO samples (time, series_id, value) "
            "SELECT b.time, u.series_id, u.value FROM sample_blocks AS b, "
            "unnest(b.series_ids, b.series_values) AS u(series_id, value)"
        )
    else:
        blocks = connection.execute(
            sa.text("SELECT time, series_ids, series_values FROM sample_blocks")
        )
        for time, ids, values in blocks:
            connection.execute(
                sa.text("INSERT INTO samples (time, series_id, value) VALUES (:t, :i, :v)"),
                [
                    {"t": time, "i": i, "v": v}
                    for i, v in zip(
                        np.frombuffer(ids, "<i4").tolist(),
                        np.frombuffer(values, "<f8").tolist(),
                        strict=True,
                    )
                ],
            )
    op.drop_table("sample_blocks")
