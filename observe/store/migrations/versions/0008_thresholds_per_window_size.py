"""Drift thresholds per window size: `baseline_layers.thresholds` as {method: {rows: value}}.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

Why: a baseline held each method's threshold at its `window_rows` alone, so a live window
of another size (a served model's windows, of fewer sequences than the baseline's) was
calibrated on the drift thread when first met: 20 scores per layer, method and size, CPU a
served model's requests then lacked. A baseline now calibrates every size a live window can
have (observe/drift/calibration.py, `window_sizes`). The schema is unchanged; each stored
threshold becomes the one for its baseline's `window_rows`, the size it was calibrated
for. Going back, each method keeps that size's threshold alone.
"""

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from observe.store.schema: a revision must keep reading
# and writing what it did the day it was written, whatever the models become later.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BASELINES = sa.table("baselines", sa.column("id", sa.Integer), sa.column("window_rows", sa.Integer))
LAYERS = sa.table(
    "baseline_layers",
    sa.column("baseline_id", sa.Integer),
    sa.column("kind", sa.Text),
    sa.column("layer", sa.Integer),
    sa.column("thresholds", JSON),
)


def upgrade() -> None:
    _rewrite(lambda threshold, rows: {rows: threshold})


def downgrade() -> None:
    _rewrite(lambda by_rows, rows: by_rows[rows])


def _rewrite(change: Callable[[Any, str], Any]) -> None:
    """Each layer's thresholds, method by method, through `change(value, window_rows)`."""
    connection = op.get_bind()
    layers = connection.execute(
        sa.select(
            LAYERS.c.baseline_id,
            LAYERS.c.kind,
            LAYERS.c.layer,
            LAYERS.c.thresholds,
            BASELINES.c.window_rows,
        ).join(BASELINES, BASELINES.c.id == LAYERS.c.baseline_id)
    ).all()
    for baseline_id, kind, layer, thresholds, window_rows in layers:
        if not thresholds:  # an MoE layer's: none
            continue
        connection.execute(
            sa.update(LAYERS)
            .where(
                LAYERS.c.baseline_id == baseline_id,
                LAYERS.c.kind == kind,
                LAYERS.c.layer == layer,
            )
            .values(thresholds={m: change(v, str(window_rows)) for m, v in thresholds.items()})
        )
