"""PostgreSQL's binary COPY format, built from arrays: no Python work per row.

A row is a 16-bit field count, then per field a 32-bit length and the value, big-endian.
With every field of fixed width, a batch's rows are one numpy structured array. An array
field is a header (dimensions, a null flag, the element type and the length), then its
elements framed like fields: one structured array too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
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
# The type OIDs of array elements (pg_type): an array field names its elements' type.
_ELEMENT_OIDS = {INT4: 23, FLOAT8: 701}


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


def records(rows: Iterable[Sequence[bytes]]) -> bytes:
    """The COPY data of rows of variable-width fields, each field already encoded (`time`,
    `text`, `array`): for few rows, each large."""
    parts = [_HEADER]
    for fields in rows:
        parts.append(struct.pack(">h", len(fields)))
        for field in fields:
            parts += [struct.pack(">i", len(field)), field]
    parts.append(_TRAILER)
    return b"".join(parts)


def time(value: datetime) -> bytes:
    return struct.pack(">q", timestamp(value))


def text(value: str) -> bytes:
    return value.encode()


def array(kind: str, values: npt.ArrayLike) -> bytes:
    """A one-dimensional array field of `kind` (`INT4` or `FLOAT8`) elements."""
    flat = np.asarray(values).reshape(-1)
    elements = np.empty(flat.size, dtype=[("length", ">i4"), ("value", kind)])
    elements["length"] = np.dtype(kind).itemsize
    elements["value"] = flat
    # One dimension, no nulls, the element type, then the dimension's length and lower bound.
    header = struct.pack(">iiiii", 1, 0, _ELEMENT_OIDS[kind], flat.size, 1)
    return header + elements.tobytes()
