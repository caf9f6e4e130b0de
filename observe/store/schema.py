"""The store's tables, one declaration for PostgreSQL and SQLite.

`observe/store/migrations/` creates exactly these tables; a test fails when the two
differ. Metric rows are append-only and have no primary key: a key would cost an index
insert per row and is never looked up. SQLAlchemy Core tables, not ORM classes: a command
that reads the store (`observe runs`) starts a tenth of a second sooner without the ORM.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import TypeEngine

# Constraint and index names are fixed here so migrations can name what they drop.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL: binary, indexable, compared by value.
JSONType = JSON().with_variant(JSONB(), "postgresql")

# How a run ends, as its process says.
END_STATUSES = ("finished", "failed")
# `lost`: still `running` in the store, but its process is gone (no heartbeat for
# `lost_after_s`, or its pid no longer runs on its host); observe/store/liveness.py decides.
RUN_STATUSES = ("running", *END_STATUSES, "lost")
BASELINE_KINDS = ("hidden_states", "experts")
ALERT_STATES = ("firing", "resolved")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out on both engines.

    SQLite has no time zones: SQLAlchemy would silently drop the offset on the way in and
    return naive values. Here every time is converted to UTC before storing and comes back
    marked as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class PackedArray(TypeDecorator[npt.NDArray[Any]]):
    """A one-dimensional numpy array of `dtype`: an array column on PostgreSQL (int4[],
    float8[]: SQL reads it with `unnest`), its little-endian bytes on SQLite, which has no
    arrays. Either way it comes back as a numpy array."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, dtype: str) -> None:
        super().__init__()
        self.dtype = np.dtype(dtype).newbyteorder("<")

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(Integer if self.dtype.kind == "i" else Double))
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: npt.ArrayLike | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        array = np.ascontiguousarray(value, self.dtype)
        return array.tolist() if dialect.name == "postgresql" else array.tobytes()

    def process_result_value(self, value: Any, dialect: Dialect) -> npt.NDArray[Any] | None:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return np.asarray(value, self.dtype)
        return np.frombuffer(value, self.dtype)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _required(name: str, kind: object, *args: object, **kwargs: object) -> Column[object]:
    return Column(name, kind, *args, nullable=False, **kwargs)  # type: ignore[arg-type]


METADATA = MetaData(naming_convention=NAMING_CONVENTION)

RUNS = Table(
    "runs",
    METADATA,
    Column("id", Text, primary_key=True),
    _required("model", Text),
    _required("config", JSONType),
    _required("started", UTCDateTime),
    Column("ended", UTCDateTime),
    _required("status", Text),
    # Where the run's process ran (None for a run nobody started: its rows came first) and
    # the latest time it showed life; a heartbeat is kept even when delivered late.
    Column("host", Text),
    Column("pid", Integer),
    _required("heartbeat", UTCDateTime),
    # Samples stored for the run (rows of `samples` and values of `sample_blocks`), kept up
    # to date by each batch's transaction: `observe runs` reads it instead of counting a
    # table of billions of rows.
    _required("samples", BigInteger, server_default="0"),
    # The oldest and newest of those samples' times (None before the first): the bounds of
    # every per-run read of `samples`, which has no index by series.
    Column("first_sample", UTCDateTime),
    Column("last_sample", UTCDateTime),
    CheckConstraint(_one_of("status", RUN_STATUSES), name="status"),
)

# A metric name and one set of label values, of one run. The run is said here once rather
# than on every sample row: checked once, by the foreign key, when the series is created.
SERIES = Table(
    "series",
    METADATA,
    Column("id", Integer, primary_key=True),
    _required("run_id", Text, ForeignKey("runs.id")),
    _required("name", Text),
    _required("labels", JSONType),
    # SHA-256 (hex) of the labels as canonical JSON text (sorted keys): a JSON column cannot
    # be unique-indexed on SQLite, and JSONB equality would differ from SQLite's text
    # equality; a digest, not the text, so that label values of any length fit the index.
    _required("labels_key", Text),
    # Also the index a run's series named X are found by.
    UniqueConstraint("run_id", "name", "labels_key"),
)

# The sample tables have no foreign keys: the server would check each of millions of rows
# per batch (a quarter of COPY's rate). Their series ids come from the series the same
# transaction found or created, and the series carries the run.
SAMPLES = Table(
    "samples",
    METADATA,
    _required("time", UTCDateTime),
    _required("series_id", Integer),
    _required("value", Double),
    # The one index. BRIN: rows arrive in time order, so a block range index stays tiny and
    # costs next to nothing per row. On SQLite, which knows no BRIN, an ordinary index.
    # A B-tree on (series_id, time) cost a third of COPY's rate at 262,144 rows a window;
    # readers find a run's rows by time instead, within its span on `runs`, and join its
    # series. The price: a run's read also passes over the blocks of runs that ran
    # alongside it.
    Index("ix_samples_time", "time", postgresql_using="brin"),
)

# A family's values at one time (observe/store/records.py: e.g. every layer × expert × slot
# of a window) as one row: its series ids and their values, position by position. A row
# per sample would cost the server a tuple and an index entry each; 262,144 of them a
# window held COPY to about a million samples/s. Sparse samples stay in `samples`.
# `run_id` and `name` are said once per row: every series of a family is of one run and one
# metric, so readers find a run's blocks of a metric by the index, not by time. On
# PostgreSQL the arrays are stored uncompressed (revision 0007 says why).
SAMPLE_BLOCKS = Table(
    "sample_blocks",
    METADATA,
    _required("time", UTCDateTime),
    _required("run_id", Text),
    _required("name", Text),
    _required("series_ids", PackedArray("i4")),
    _required("series_values", PackedArray("f8")),
    Index("ix_sample_blocks_run_id_name_time", "run_id", "name", "time"),
)

HISTOGRAMS = Table(
    "histogram_samples",
    METADATA,
    _required("time", UTCDateTime),
    _required("series_id", Integer),
    _required("count", BigInteger),
    _required("sum", Double),
    _required("bounds", JSONType),
    _required("bucket_counts", JSONType),
    Index("ix_histogram_samples_time", "time", postgresql_using="brin"),
    Index("ix_histogram_samples_series_id_time", "series_id", "time"),
)

# One row per expert, layer and step of a run: a second figure for it (two windows ending
# at one step, or ranks counting their own tokens) adds to the row (observe/store/rows.py).
# The unique index also serves the per-run totals (its leading column is the run).
EXPERT_LOAD = Table(
    "expert_load",
    METADATA,
    _required("run_id", Text),
    _required("step", BigInteger),
    _required("layer", Integer),
    _required("expert", Integer),
    _required("tokens", BigInteger),
    UniqueConstraint("run_id", "step", "layer", "expert"),
)

DRIFT_RESULTS = Table(
    "drift_results",
    METADATA,
    Column("id", Integer, primary_key=True),
    # When the window ended.
    _required("time", UTCDateTime),
    _required("run_id", Text, ForeignKey("runs.id")),
    # None: a score over the whole model rather than one layer.
    Column("layer", Integer),
    _required("method", Text),
    _required("score", Double),
    Column("threshold", Double),
    _required("drifted", Boolean),
    _required("details", JSONType),
    # The window's steps, and the baseline it was compared with.
    Column("first_step", BigInteger),
    Column("last_step", BigInteger),
    Column("baseline_id", Integer, ForeignKey("baselines.id")),
    Index("ix_drift_results_run_id_time", "run_id", "time"),
)

# A reference for drift: what a model's traffic looked like when it was trained. Several
# per model; drift compares with the model's one active baseline.
BASELINES = Table(
    "baselines",
    METADATA,
    Column("id", Integer, primary_key=True),
    _required("model", Text),
    Column("checkpoint", Text),
    # The training data's domain (or data file), when known.
    Column("domain", Text),
    _required("created", UTCDateTime),
    # When the training data ended: knowledge freshness counts from here.
    Column("trained_until", UTCDateTime),
    # The run whose samples it was made from.
    Column("run_id", Text, ForeignKey("runs.id")),
    _required("active", Boolean),
    # Rows per window its drift thresholds were calibrated for.
    _required("window_rows", Integer),
    Index("ix_baselines_model", "model"),
)

# One layer of a baseline: for attention layers the projection, the projected sample and
# each method's calibrated threshold; for MoE layers the expert distribution.
BASELINE_LAYERS = Table(
    "baseline_layers",
    METADATA,
    Column(
        "baseline_id", Integer, ForeignKey("baselines.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("kind", Text, primary_key=True),
    Column("layer", Integer, primary_key=True),
    _required("name", Text),
    # Arrays as an .npz file (numpy's format, read without pickle).
    _required("data", LargeBinary),
    _required("thresholds", JSONType),
    CheckConstraint(_one_of("kind", BASELINE_KINDS), name="kind"),
)

# A run's sample of pooled hidden states per attention layer (an .npz of rows × width),
# kept at its end so that a baseline can be made from the run later.
HIDDEN_SAMPLES = Table(
    "hidden_samples",
    METADATA,
    Column("run_id", Text, ForeignKey("runs.id"), primary_key=True),
    Column("layer", Integer, primary_key=True),
    _required("name", Text),
    _required("data", LargeBinary),
)

# The last drift-scored window's sample per attention layer, kept when its run ends: what
# `observe drift report` shows against a baseline.
WINDOW_SAMPLES = Table(
    "window_samples",
    METADATA,
    Column("run_id", Text, ForeignKey("runs.id"), primary_key=True),
    Column("layer", Integer, primary_key=True),
    _required("name", Text),
    _required("first_step", BigInteger),
    _required("last_step", BigInteger),
    _required("data", LargeBinary),
)

ALERT_EVENTS = Table(
    "alert_events",
    METADATA,
    Column("id", Integer, primary_key=True),
    _required("time", UTCDateTime),
    # None: an alert about the pipeline or the host rather than one run.
    Column("run_id", Text, ForeignKey("runs.id")),
    _required("alert", Text),
    _required("severity", Text),
    _required("state", Text),
    _required("labels", JSONType),
    _required("annotations", JSONType),
    CheckConstraint(_one_of("state", ALERT_STATES), name="state"),
    Index("ix_alert_events_time", "time"),
)

# Ids of spooled batches already written, in the same transaction as their rows. A batch
# whose commit reply was lost (the server died after committing) is sent again; its id
# here makes the second write a no-op, so every batch lands exactly once.
DELIVERED = Table(
    "delivered_batches",
    METADATA,
    Column("id", Text, primary_key=True),
    _required("delivered", UTCDateTime),
)
