"""Baselines, runs' hidden-state samples and drift results in the store.

Arrays travel as `.npz` bytes (numpy's format, read back without pickle); what they mean
is `observe.drift`'s business, not the store's.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, insert, select, update

from observe.errors import ObserveError
from observe.store.queries import schema_checked
from observe.store.records import WindowSample
from observe.store.schema import (
    BASELINE_LAYERS,
    BASELINES,
    DRIFT_RESULTS,
    HIDDEN_SAMPLES,
    WINDOW_SAMPLES,
)
from observe.store.storable import check


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """Arrays as the bytes of an .npz file."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of an .npz file's bytes, read without pickle."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


@dataclass(frozen=True)
class BaselineInfo:
    id: int
    model: str
    checkpoint: str | None
    domain: str | None
    created: datetime
    trained_until: datetime | None
    run_id: str | None
    active: bool
    window_rows: int


@dataclass(frozen=True)
class BaselineLayerData:
    kind: str
    layer: int
    name: str
    data: bytes
    # Per drift method, per window rows: JSON keys are text, so rows are stored as text.
    thresholds: Mapping[str, Mapping[int, float]]


@dataclass(frozen=True)
class StoredDrift:
    time: datetime
    run_id: str
    layer: int | None
    method: str
    score: float
    threshold: float | None
    drifted: bool
    first_step: int | None
    last_step: int | None
    baseline_id: int | None
    details: Mapping[str, Any]


def save_baseline(
    engine: Engine,
    *,
    model: str,
    checkpoint: str | None,
    domain: str | None,
    trained_until: datetime | None,
    run_id: str | None,
    window_rows: int,
    layers: Sequence[BaselineLayerData],
    activate: bool = True,
) -> int:
    """Stores a baseline and its layers in one transaction; returns its id. `activate`
    makes it the model's active baseline (and no other)."""
    check("model name", model, identifier=True)
    for what, text in (("checkpoint", checkpoint), ("domain", domain)):
        if text is not None:
            check(what, text)
    for layer in layers:
        check("layer name", layer.name)
    with schema_checked(engine), engine.begin() as connection:
        if activate:
            connection.execute(
                update(BASELINES).where(BASELINES.c.model == model).values(active=False)
            )
        baseline_id = connection.execute(
            insert(BASELINES)
            .values(
                model=model,
                checkpoint=checkpoint,
                domain=domain,
                created=datetime.now(UTC),
                trained_until=trained_until,
                run_id=run_id,
                active=activate,
                window_rows=window_rows,
            )
            .returning(BASELINES.c.id)
        ).scalar_one()
        if layers:
            connection.execute(
                insert(BASELINE_LAYERS),
                [
                    {
                        "baseline_id": baseline_id,
                        "kind": layer.kind,
                        "layer": layer.layer,
                        "name": layer.name,
                        "data": layer.data,
                        "thresholds": {
                            method: {str(rows): t for rows, t in by_rows.items()}
                            for method, by_rows in layer.thresholds.items()
                        },
                    }
                    for layer in layers
                ],
            )
    return int(baseline_id)


def list_baselines(engine: Engine, model: str | None = None) -> list[BaselineInfo]:
    """Baselines, newest first; only `model`'s when given."""
    statement = select(*_INFO_COLUMNS).order_by(BASELINES.c.created.desc(), BASELINES.c.id.desc())
    if model is not None:
        statement = statement.where(BASELINES.c.model == model)
    with schema_checked(engine), engine.connect() as connection:
        return [BaselineInfo(*row) for row in connection.execute(statement)]


def find_baseline(
    engine: Engine, *, baseline_id: int | None = None, model: str | None = None
) -> BaselineInfo:
    """Baseline `baseline_id`, or `model`'s active one; an error saying how to make one."""
    statement = select(*_INFO_COLUMNS)
    if baseline_id is not None:
        statement = statement.where(BASELINES.c.id == baseline_id)
    elif model is not None:
        statement = statement.where(BASELINES.c.model == model, BASELINES.c.active)
    else:
        raise ObserveError("find_baseline needs a baseline id or a model name")
    with schema_checked(engine), engine.connect() as connection:
        row = connection.execute(statement).first()
    if row is not None:
        return BaselineInfo(*row)
    if baseline_id is not None:
        raise ObserveError(
            f"no baseline {baseline_id} in the store: `observe drift baselines` lists them"
        )
    raise ObserveError(
        f"model {model!r} has no active baseline: make one with `observe drift baseline --run "
        "RUN` (`observe train` records one), or activate one with `observe drift baselines "
        "--activate ID`"
    )


def activate_baseline(engine: Engine, baseline_id: int) -> BaselineInfo:
    """Makes `baseline_id` its model's active baseline."""
    info = find_baseline(engine, baseline_id=baseline_id)
    with schema_checked(engine), engine.begin() as connection:
        connection.execute(
            update(BASELINES).where(BASELINES.c.model == info.model).values(active=False)
        )
        connection.execute(
            update(BASELINES).where(BASELINES.c.id == baseline_id).values(active=True)
        )
    return find_baseline(engine, baseline_id=baseline_id)


def baseline_layers(engine: Engine, baseline_id: int) -> list[BaselineLayerData]:
    statement = (
        select(
            BASELINE_LAYERS.c.kind,
            BASELINE_LAYERS.c.layer,
            BASELINE_LAYERS.c.name,
            BASELINE_LAYERS.c.data,
            BASELINE_LAYERS.c.thresholds,
        )
        .where(BASELINE_LAYERS.c.baseline_id == baseline_id)
        .order_by(BASELINE_LAYERS.c.kind, BASELINE_LAYERS.c.layer)
    )
    with schema_checked(engine), engine.connect() as connection:
        return [
            BaselineLayerData(
                kind,
                layer,
                name,
                data,
                {
                    method: {int(rows): t for rows, t in by_rows.items()}
                    for method, by_rows in thresholds.items()
                },
            )
            for kind, layer, name, data, thresholds in connection.execute(statement)
        ]


def hidden_samples(engine: Engine, run_id: str) -> dict[str, bytes]:
    statement = (
        select(HIDDEN_SAMPLES.c.name, HIDDEN_SAMPLES.c.data)
        .where(HIDDEN_SAMPLES.c.run_id == run_id)
        .order_by(HIDDEN_SAMPLES.c.layer)
    )
    with schema_checked(engine), engine.connect() as connection:
        return {name: data for name, data in connection.execute(statement)}


def window_samples(engine: Engine, run_id: str) -> list[WindowSample]:
    columns = WINDOW_SAMPLES.c
    statement = (
        select(columns.layer, columns.name, columns.first_step, columns.last_step, columns.data)
        .where(columns.run_id == run_id)
        .order_by(columns.layer)
    )
    with schema_checked(engine), engine.connect() as connection:
        return [WindowSample(*row) for row in connection.execute(statement)]


def drift_results(engine: Engine, run_id: str, *, latest: bool = False) -> list[StoredDrift]:
    """A run's drift scores, oldest first; with `latest`, only each layer and method's
    newest."""
    columns = DRIFT_RESULTS.c
    statement = (
        select(
            columns.time,
            columns.run_id,
            columns.layer,
            columns.method,
            columns.score,
            columns.threshold,
            columns.drifted,
            columns.first_step,
            columns.last_step,
            columns.baseline_id,
            columns.details,
        )
        .where(columns.run_id == run_id)
        .order_by(columns.time, columns.id)
    )
    if latest:
        newest = (
            select(func.max(columns.id))
            .where(columns.run_id == run_id)
            .group_by(columns.layer, columns.method)
        )
        statement = statement.where(columns.id.in_(newest))
    with schema_checked(engine), engine.connect() as connection:
        return [StoredDrift(**row._asdict()) for row in connection.execute(statement)]


def latest_drift_run(engine: Engine) -> str | None:
    """The run that scored drift most recently."""
    statement = select(DRIFT_RESULTS.c.run_id).order_by(DRIFT_RESULTS.c.id.desc()).limit(1)
    with schema_checked(engine), engine.connect() as connection:
        return connection.execute(statement).scalar()


_INFO_COLUMNS = (
    BASELINES.c.id,
    BASELINES.c.model,
    BASELINES.c.checkpoint,
    BASELINES.c.domain,
    BASELINES.c.created,
    BASELINES.c.trained_until,
    BASELINES.c.run_id,
    BASELINES.c.active,
    BASELINES.c.window_rows,
)
