"""Sample blocks: a family's values at one time as one row of `sample_blocks`, its series ids
and values as arrays (observe/store/schema.py says why). Written by COPY on PostgreSQL and
read back as arrays on both engines; readers unfold them into points per series."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, select

from observe.store import binary_copy as copy
from observe.store.schema import SAMPLE_BLOCKS


@dataclass(frozen=True)
class Block:
    """One metric's values at `time` for the series `series_ids`, position by position."""

    time: datetime
    name: str
    series_ids: npt.NDArray[np.int32]
    values: npt.NDArray[np.float64]

    def row(self, run_id: str) -> dict[str, Any]:
        return {
            "time": self.time,
            "run_id": run_id,
            "name": self.name,
            "series_ids": self.series_ids,
            "series_values": self.values,
        }

    def points(self) -> Iterator[tuple[int, float]]:
        """(series id, value) for each position."""
        return zip(self.series_ids.tolist(), self.values.tolist(), strict=True)


def block_copy_data(run_id: str, blocks: Sequence[Block]) -> bytes:
    """The COPY data of `blocks`, a row each: what costs is the arrays, built by numpy."""
    return copy.records(
        (
            copy.time(b.time),
            copy.text(run_id),
            copy.text(b.name),
            copy.array(copy.INT4, b.series_ids),
            copy.array(copy.FLOAT8, b.values),
        )
        for b in blocks
    )


def read_blocks(
    connection: Connection,
    names: Sequence[str],
    *,
    run_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Block]:
    """The blocks of metrics `names` (of run `run_id`, or of every run), with times in
    [since, until], oldest first."""
    columns = SAMPLE_BLOCKS.c
    statement = (
        select(columns.time, columns.name, columns.series_ids, columns.series_values)
        .where(columns.name.in_(names))
        .order_by(columns.time)
    )
    if run_id is not None:
        statement = statement.where(columns.run_id == run_id)
    if since is not None:
        statement = statement.where(columns.time >= since)
    if until is not None:
        statement = statement.where(columns.time <= until)
    return [Block(*row) for row in connection.execute(statement)]
