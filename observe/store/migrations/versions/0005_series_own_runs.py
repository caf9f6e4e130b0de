"""Sample rows without foreign keys or a run id: the series carries the run; per-run sample
counts on `runs`; one expert-load row per (run, step, layer, expert).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Why: the server checked both foreign keys on every sample row, and the run id was 30 of a
row's 79 bytes; together they held COPY to a tenth of what a bare table takes.

A series that rows of several runs shared (possible when its labels did not name the run)
is split, one copy per run, and those rows move to their run's copy; a series without rows
is dropped. Duplicate expert-load rows keep their largest figure (a batch stored twice
before batches had delivery ids says the same figure twice).

Going back, the run id returns to every sample row from its series, series that differ only
by run merge into the oldest, and the foreign keys return. Duplicates removed stay removed.
"""

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SAMPLE_TABLES = ("samples", "histogram_samples")
LOAD_KEY = ["run_id", "step", "layer", "expert"]


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("samples", sa.BigInteger(), server_default="0", nullable=False))
    op.execute(
        "UPDATE runs SET samples = counted.n FROM "
        "(SELECT run_id, COUNT(*) AS n FROM samples GROUP BY run_id) AS counted "
        "WHERE counted.run_id = runs.id"
    )

    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("run_id", sa.Text(), nullable=True))
        batch.drop_constraint("uq_series_name_labels_key", type_="unique")
    # Each series takes the run of its rows; the (series_id, time) indexes make this a
    # lookup per series rather than a scan.
    op.execute(
        "UPDATE series SET run_id = COALESCE("
        "(SELECT MIN(run_id) FROM samples WHERE series_id = series.id), "
        "(SELECT MIN(run_id) FROM histogram_samples WHERE series_id = series.id))"
    )
    _split_shared_series(bind)
    op.execute("DELETE FROM series WHERE run_id IS NULL")
    with op.batch_alter_table("series") as batch:
        batch.alter_column("run_id", existing_type=sa.Text(), nullable=False)
        batch.create_foreign_key("fk_series_run_id_runs", "runs", ["run_id"], ["id"])
        batch.create_unique_constraint(
            "uq_series_run_id_name_labels_key", ["run_id", "name", "labels_key"]
        )

    for table in SAMPLE_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_run_id_runs", type_="foreignkey")
            batch.drop_constraint(f"fk_{table}_series_id_series", type_="foreignkey")
            batch.drop_column("run_id")

    # Rebuilt rather than deduplicated in place: the same SQL on both engines, one pass.
    op.create_table(
        "expert_load_0005",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("expert", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
    )
    op.execute(
        "INSERT INTO expert_load_0005 (run_id, step, layer, expert, tokens) "
        "SELECT run_id, step, layer, expert, MAX(tokens) FROM expert_load "
        "GROUP BY run_id, step, layer, expert"
    )
    op.drop_index("ix_expert_load_run_id_step", table_name="expert_load")
    op.drop_table("expert_load")
    op.rename_table("expert_load_0005", "expert_load")
    with op.batch_alter_table("expert_load") as batch:
        batch.create_unique_constraint("uq_expert_load_run_id_step_layer_expert", LOAD_KEY)


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("expert_load") as batch:
        batch.drop_constraint("uq_expert_load_run_id_step_layer_expert", type_="unique")
        batch.create_foreign_key("fk_expert_load_run_id_runs", "runs", ["run_id"], ["id"])
    op.create_index("ix_expert_load_run_id_step", "expert_load", ["run_id", "step"])

    for table in SAMPLE_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("run_id", sa.Text(), nullable=True))
        op.execute(
            f"UPDATE {table} SET run_id = series.run_id FROM series "
            f"WHERE series.id = {table}.series_id"
        )
    _merge_series_across_runs(bind)
    with op.batch_alter_table("series") as batch:
        batch.drop_constraint("uq_series_run_id_name_labels_key", type_="unique")
        batch.drop_constraint("fk_series_run_id_runs", type_="foreignkey")
        batch.drop_column("run_id")
        batch.create_unique_constraint("uq_series_name_labels_key", ["name", "labels_key"])
    for table in SAMPLE_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("run_id", existing_type=sa.Text(), nullable=False)
            batch.create_foreign_key(f"fk_{table}_run_id_runs", "runs", ["run_id"], ["id"])
            batch.create_foreign_key(
                f"fk_{table}_series_id_series", "series", ["series_id"], ["id"]
            )
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("samples")


def _split_shared_series(bind: sa.Connection) -> None:
    """Gives each further run of a shared series a copy of its own, and moves its rows."""
    shared = bind.execute(
        sa.text(
            " UNION ".join(
                f"SELECT DISTINCT t.series_id, t.run_id FROM {table} AS t "
                "JOIN series ON series.id = t.series_id WHERE t.run_id <> series.run_id"
                for table in SAMPLE_TABLES
            )
        )
    ).all()
    for series_id, run_id in shared:
        copy = bind.execute(
            sa.text(
                "INSERT INTO series (run_id, name, labels, labels_key) "
                "SELECT :run, name, labels, labels_key FROM series WHERE id = :id RETURNING id"
            ),
            {"run": run_id, "id": series_id},
        ).scalar_one()
        for table in SAMPLE_TABLES:
            bind.execute(
                sa.text(
                    f"UPDATE {table} SET series_id = :copy WHERE series_id = :id AND run_id = :run"
                ),
                {"copy": copy, "id": series_id, "run": run_id},
            )


def _merge_series_across_runs(bind: sa.Connection) -> None:
    """Moves the rows of series that differ only by run to the oldest of them."""
    duplicates = bind.execute(
        sa.text(
            "SELECT id, keep FROM (SELECT id, "
            "MIN(id) OVER (PARTITION BY name, labels_key) AS keep FROM series) AS ranked "
            "WHERE id <> keep"
        )
    ).all()
    merged: defaultdict[int, list[int]] = defaultdict(list)
    for series_id, keep in duplicates:
        merged[keep].append(series_id)
    for keep, ids in merged.items():
        for table in SAMPLE_TABLES:
            bind.execute(
                sa.text(f"UPDATE {table} SET series_id = :keep WHERE series_id IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)
                ),
                {"keep": keep, "ids": ids},
            )
        bind.execute(
            sa.text("DELETE FROM series WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
