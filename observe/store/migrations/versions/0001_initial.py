"""The initial store: runs, series, samples, histograms, expert load, drift and alerts.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Where the TimescaleDB extension is available (and preloaded), `samples` becomes a
hypertable; elsewhere it stays a plain table with a BRIN index on time.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("observe")

# Spelled out rather than imported from observe.store.schema: a revision must keep creating
# what it created the day it was written, whatever the models become later.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("started", TIME, nullable=False),
        sa.Column("ended", TIME, nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.CheckConstraint("status IN ('running', 'finished', 'failed')", name="ck_runs_status"),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("labels_key", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_series"),
        sa.UniqueConstraint("name", "labels_key", name="uq_series_name_labels_key"),
    )
    op.create_table(
        "samples",
        sa.Column("time", TIME, nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_samples_run_id_runs"),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name="fk_samples_series_id_series"),
    )
    op.create_index("ix_samples_time", "samples", ["time"], postgresql_using="brin")
    op.create_index("ix_samples_series_id_time", "samples", ["series_id", "time"])
    op.create_table(
        "histogram_samples",
        sa.Column("time", TIME, nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sum", sa.Double(), nullable=False),
        sa.Column("bounds", JSON, nullable=False),
        sa.Column("bucket_counts", JSON, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_histogram_samples_run_id_runs"),
        sa.ForeignKeyConstraint(
            ["series_id"], ["series.id"], name="fk_histogram_samples_series_id_series"
        ),
    )
    op.create_index(
        "ix_histogram_samples_time", "histogram_samples", ["time"], postgresql_using="brin"
    )
    op.create_index(
        "ix_histogram_samples_series_id_time", "histogram_samples", ["series_id", "time"]
    )
    op.create_table(
        "expert_load",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("expert", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_expert_load_run_id_runs"),
    )
    op.create_index("ix_expert_load_run_id_step", "expert_load", ["run_id", "step"])
    op.create_table(
        "drift_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", TIME, nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=True),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("drifted", sa.Boolean(), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_drift_results_run_id_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_drift_results"),
    )
    op.create_index("ix_drift_results_run_id_time", "drift_results", ["run_id", "time"])
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", TIME, nullable=False),
        sa.Column("run_id", sa.Text(), nullable=True),
        sa.Column("alert", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("annotations", JSON, nullable=False),
        sa.CheckConstraint("state IN ('firing', 'resolved')", name="ck_alert_events_state"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_alert_events_run_id_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_alert_events"),
    )
    op.create_index("ix_alert_events_time", "alert_events", ["time"])
    op.create_table(
        "delivered_batches",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("delivered", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_delivered_batches"),
    )
    if timescale_ready(op.get_bind()):
        op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        # No default index: the BRIN and (series_id, time) indexes above serve the queries.
        op.execute("SELECT create_hypertable('samples', 'time', create_default_indexes => FALSE)")


def downgrade() -> None:
    # The timescaledb extension stays: other databases' objects may use it.
    op.drop_table("delivered_batches")
    op.drop_index("ix_alert_events_time", table_name="alert_events")
    op.drop_table("alert_events")
    op.drop_index("ix_drift_results_run_id_time", table_name="drift_results")
    op.drop_table("drift_results")
    op.drop_index("ix_expert_load_run_id_step", table_name="expert_load")
    op.drop_table("expert_load")
    op.drop_index("ix_histogram_samples_series_id_time", table_name="histogram_samples")
    op.drop_index("ix_histogram_samples_time", table_name="histogram_samples")
    op.drop_table("histogram_samples")
    op.drop_index("ix_samples_series_id_time", table_name="samples")
    op.drop_index("ix_samples_time", table_name="samples")
    op.drop_table("samples")
    op.drop_table("series")
    op.drop_table("runs")


def timescale_ready(bind: sa.Connection) -> bool:
    """Whether TimescaleDB can be used: installed on the server and preloaded."""
    if bind.dialect.name != "postgresql":
        return False
    available = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).first()
    if available is None:
        return False
    preload = bind.execute(sa.text("SHOW shared_preload_libraries")).scalar_one()
    if "timescaledb" not in preload:
        # CREATE EXTENSION would fail and abort the whole upgrade.
        log.warning(
            "TimescaleDB is installed but not in shared_preload_libraries: samples stays a "
            "plain table. Preload it and restart PostgreSQL, then convert the table with "
            "SELECT create_hypertable('samples', 'time', migrate_data => TRUE)"
        )
        return False
    return True
