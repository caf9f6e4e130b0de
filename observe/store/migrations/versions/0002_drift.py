"""Drift: baselines and their layers, runs' hidden-state samples, the last scored window's
samples, and window bounds and baseline on drift results.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from observe.store.schema: a revision must keep creating
# what it created the day it was written, whatever the models become later.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "baselines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=True),
        sa.Column("domain", sa.Text(), nullable=True),
        sa.Column("created", TIME, nullable=False),
        sa.Column("trained_until", TIME, nullable=True),
        sa.Column("run_id", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("window_rows", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_baselines_run_id_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_baselines"),
    )
    op.create_index("ix_baselines_model", "baselines", ["model"])
    op.create_table(
        "baseline_layers",
        sa.Column("baseline_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("thresholds", JSON, nullable=False),
        sa.CheckConstraint("kind IN ('hidden_states', 'experts')", name="ck_baseline_layers_kind"),
        sa.ForeignKeyConstraint(
            ["baseline_id"],
            ["baselines.id"],
            name="fk_baseline_layers_baseline_id_baselines",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("baseline_id", "kind", "layer", name="pk_baseline_layers"),
    )
    for table in ("hidden_samples", "window_samples"):
        window = table == "window_samples"
        op.create_table(
            table,
            sa.Column("run_id", sa.Text(), nullable=False),
            sa.Column("layer", sa.Integer(), nullable=False),
            sa.Column("name", sa.Text(), nullable=False),
            *(
                [
                    sa.Column("first_step", sa.BigInteger(), nullable=False),
                    sa.Column("last_step", sa.BigInteger(), nullable=False),
                ]
                if window
                else []
            ),
            sa.Column("data", sa.LargeBinary(), nullable=False),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=f"fk_{table}_run_id_runs"),
            sa.PrimaryKeyConstraint("run_id", "layer", name=f"pk_{table}"),
        )
    # Batch mode: SQLite adds a foreign key only by rebuilding the table.
    with op.batch_alter_table("drift_results") as batch:
        batch.add_column(sa.Column("first_step", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("last_step", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("baseline_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_drift_results_baseline_id_baselines", "baselines", ["baseline_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("drift_results") as batch:
        batch.drop_constraint("fk_drift_results_baseline_id_baselines", type_="foreignkey")
        batch.drop_column("baseline_id")
        batch.drop_column("last_step")
        batch.drop_column("first_step")
    op.drop_table("window_samples")
    op.drop_table("hidden_samples")
    op.drop_table("baseline_layers")
    op.drop_index("ix_baselines_model", table_name="baselines")
    op.drop_table("baselines")
