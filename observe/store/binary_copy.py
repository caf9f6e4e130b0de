"""PostgreSQL's binary COPY format, built from arrays: no Python work per row.

A row is a 16-bit field count, then per field a 32-bit length and the value, big-endian.
With every field of fixed width, a batch's rows are one numpy structured array.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

# Signature, flags (no OIDs), header extension length (none).
_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_TRAILER = b"\xff\xff"
# timestamptz counts microseconds from 2000-01-01 UTC.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Big-endian numpy types of PostgreSQL's fixed-width types.
INT4, INT8, FLOAT8, TIMESTAMPTZ = ">i4", ">i8", ">f8", ">i8"


def timestamp(time: datetime) -> int:
    """`time` as a timestamptz field holds it."""
    return (time - _EPOCH) // _MICROSECOND


def rows(columns: Sequence[tuple[str, npt.ArrayLike]]) -> bytes:
    """The COPY data of rows made of `columns`: pairs of a field type (`INT4`, …, or
    `S<n>` for text of n bytes) and the values, an array or one value for every row."""
    arrays = [np.asarray(values) for _, values in columns]
    count = max((a.size for a in arrays if a.ndim), default=1)
    fields: list[tuple[str, Any]] = [("fields", ">i2")]
    for i, (kind, _) in enumerate(columns):
        fields += [(f"length{i}", ">i4"), (f"value{i}", kind)]
    table = np.empty(count, dtype=fields)
    table["fields"] = len(columns)
    for i, ((kind, _), values) in enumerate(zip(columns, arrays, strict=True)):
        table[f"length{i}"] = np.dtype(kind).itemsize
        table[f"value{i}"] = values
    return _HEADER + table.tobytes() + _TRAILER
