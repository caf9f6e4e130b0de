"""Series are keyed by a digest of their labels: label values of any length fit the index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

`series.labels_key` held the labels as canonical JSON text, which the unique index on
(name, labels_key) stores whole: PostgreSQL refuses an index entry over 2,704 bytes, so a
long label value failed every write of its batch. It now holds the SHA-256 (hex) of that
text. A downgrade writes the text back; a series whose labels are too long for the old
index then stops it, as it would have stopped their writes.
"""

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SERIES = sa.table(
    "series",
    sa.column("id", sa.Integer()),
    sa.column("labels", JSON),
    sa.column("labels_key", sa.Text()),
)
# Rows rewritten per statement.
CHUNK = 1000


def upgrade() -> None:
    # The stored text is the canonical one: distinct texts, distinct digests.
    _rekey(lambda text, labels: hashlib.sha256(text.encode()).hexdigest())


def downgrade() -> None:
    _rekey(
        lambda digest, labels: json.dumps(
            dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    )


def _rekey(new_key: Callable[[str, Mapping[str, Any]], str]) -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(SERIES.c.id, SERIES.c.labels_key, SERIES.c.labels)).all()
    update = (
        sa.update(SERIES)
        .where(SERIES.c.id == sa.bindparam("row_id"))
        .values(labels_key=sa.bindparam("key"))
    )
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        connection.execute(
            update, [{"row_id": id_, "key": new_key(key, labels)} for id_, key, labels in chunk]
        )
