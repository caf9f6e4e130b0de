"""The store's tables, one declaration for PostgreSQL and SQLite.

`migrations/` creates exactly these tables; a test fails when the two differ. Metric rows
are append-only and have no primary key in the database: a key would cost an index
insert per row and is never looked up. The ORM maps them on a key of its own choosing
(`__mapper_args__`, which SQLAlchemy reads and nothing mutates).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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

RUN_STATUSES = ("running", "finished", "failed")
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


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(_one_of("status", RUN_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    model: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    started: Mapped[datetime] = mapped_column(UTCDateTime)
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(Text)


class SeriesRow(Base):
    """A metric name and one set of label values."""

    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("name", "labels_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    labels: Mapped[dict[str, str]] = mapped_column(JSONType)
    # The labels as canonical JSON text (sorted keys): a JSON column cannot be unique-indexed
    # on SQLite, and JSONB equality would differ from SQLite's text equality.
    labels_key: Mapped[str] = mapped_column(Text)


class SampleRow(Base):
    __tablename__ = "samples"
    __table_args__ = (
        # BRIN: rows arrive in time order, so a block range index stays tiny and cheap to
        # maintain. On SQLite, which knows no BRIN, this is an ordinary index.
        Index("ix_samples_time", "time", postgresql_using="brin"),
        Index("ix_samples_series_id_time", "series_id", "time"),
    )

    time: Mapped[datetime] = mapped_column(UTCDateTime)
    series_id: Mapped[int] = mapped_column(Integer, ForeignKey("series.id"))
    run_id: Mapped[str] = mapped_column(Text, ForeignKey("runs.id"))
    value: Mapped[float] = mapped_column(Double)

    __mapper_args__ = {"primary_key": [time, series_id]}  # noqa: RUF012


class HistogramSampleRow(Base):
    __tablename__ = "histogram_samples"
    __table_args__ = (
        Index("ix_histogram_samples_time", "time", postgresql_using="brin"),
        Index("ix_histogram_samples_series_id_time", "series_id", "time"),
    )

    time: Mapped[datetime] = mapped_column(UTCDateTime)
    series_id: Mapped[int] = mapped_column(Integer, ForeignKey("series.id"))
    run_id: Mapped[str] = mapped_column(Text, ForeignKey("runs.id"))
    count: Mapped[int] = mapped_column(BigInteger)
    sum: Mapped[float] = mapped_column(Double)
    bounds: Mapped[list[float]] = mapped_column(JSONType)
    bucket_counts: Mapped[list[int]] = mapped_column(JSONType)

    __mapper_args__ = {"primary_key": [time, series_id]}  # noqa: RUF012


class ExpertLoadRow(Base):
    __tablename__ = "expert_load"
    __table_args__ = (Index("ix_expert_load_run_id_step", "run_id", "step"),)

    run_id: Mapped[str] = mapped_column(Text, ForeignKey("runs.id"))
    step: Mapped[int] = mapped_column(BigInteger)
    layer: Mapped[int] = mapped_column(Integer)
    expert: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(BigInteger)

    __mapper_args__ = {"primary_key": [run_id, step, layer, expert]}  # noqa: RUF012


class DriftResultRow(Base):
    __tablename__ = "drift_results"
    __table_args__ = (Index("ix_drift_results_run_id_time", "run_id", "time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    run_id: Mapped[str] = mapped_column(Text, ForeignKey("runs.id"))
    # None: a score over the whole model rather than one layer.
    layer: Mapped[int | None] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Double)
    threshold: Mapped[float | None] = mapped_column(Double)
    drifted: Mapped[bool] = mapped_column(Boolean)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType)


class AlertEventRow(Base):
    __tablename__ = "alert_events"
    __table_args__ = (
        CheckConstraint(_one_of("state", ALERT_STATES), name="state"),
        Index("ix_alert_events_time", "time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    # None: an alert about the pipeline or the host rather than one run.
    run_id: Mapped[str | None] = mapped_column(Text, ForeignKey("runs.id"))
    alert: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text)
    labels: Mapped[dict[str, str]] = mapped_column(JSONType)
    annotations: Mapped[dict[str, str]] = mapped_column(JSONType)


class DeliveredBatchRow(Base):
    """Ids of spooled batches already written, in the same transaction as their rows.

    A batch whose commit reply was lost (the server died after committing) is sent again;
    its id here makes the second write a no-op, so every batch lands exactly once.
    """

    __tablename__ = "delivered_batches"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    delivered: Mapped[datetime] = mapped_column(UTCDateTime)


# The tables themselves, for Core statements (bulk writes, queries).
RUNS: Table = RunRow.__table__  # type: ignore[assignment]
SERIES: Table = SeriesRow.__table__  # type: ignore[assignment]
SAMPLES: Table = SampleRow.__table__  # type: ignore[assignment]
HISTOGRAMS: Table = HistogramSampleRow.__table__  # type: ignore[assignment]
EXPERT_LOAD: Table = ExpertLoadRow.__table__  # type: ignore[assignment]
DELIVERED: Table = DeliveredBatchRow.__table__  # type: ignore[assignment]
